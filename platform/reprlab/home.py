"""Where reprlab keeps its state: the one place every layer asks (datasets, runs, MLflow)."""

from __future__ import annotations

import os
from pathlib import Path

HOME_VARIABLE = "REPRLAB_HOME"


def reprlab_home() -> Path:
    """``$REPRLAB_HOME`` if set, else ``~/.reprlab``: root of all reprlab state."""
    home = os.environ.get(HOME_VARIABLE)
    return Path(home).expanduser() if home else Path.home() / ".reprlab"
