"""Where reprlab keeps its state: the one place every layer asks (datasets, runs, MLflow)."""

from __future__ import annotations

import os
from pathlib import Path


def reprlab_home() -> Path:
    """``$REPRLAB_HOME`` if set, else ``~/.reprlab``: root of all reprlab state."""
    home = os.environ.get("REPRLAB_HOME")
    return Path(home).expanduser() if home else Path.home() / ".reprlab"
