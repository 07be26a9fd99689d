"""Checkpoints: the trained module's weights (method and online head), the optimiser and the
position in training, in one file (plus the position alone as JSON, cheap to read), written
into the directory Ray Train persists each epoch."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from reprlab.storage import POSITION_FILE, STATE_FILE


@dataclass
class TrainState:
    """Where training stands: epochs finished and optimiser steps taken."""

    epoch: int = 0
    step: int = 0


def save_checkpoint(
    directory: Path, module: nn.Module, optimizer: torch.optim.Optimizer | None, state: TrainState
) -> Path:
    """Write module, optimiser (none for a closed-form fit) and state into `directory`; returns
    the file."""
    path = Path(directory) / STATE_FILE
    payload = {
        "module": module.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "state": asdict(state),
    }
    torch.save(payload, path)
    (Path(directory) / POSITION_FILE).write_text(json.dumps(asdict(state)))
    return path


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """A digest of a state dict (weights and buffers), to show two modules hold the same state."""
    digest = hashlib.sha256()
    for key, tensor in state.items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def checkpoint_digest(directory: Path) -> str:
    """The weights digest of the checkpoint in `directory`."""
    payload = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
    return weights_digest(payload["module"])


def load_checkpoint(
    directory: Path, module: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> TrainState:
    """Restore weights (and the optimiser when given) from `directory`; returns the state."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no reprlab checkpoint here (expected {STATE_FILE})")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if "module" not in payload:
        raise ValueError(
            f"{path}: written by an older reprlab (no 'module' weights); start a new run"
        )
    module.load_state_dict(payload["module"])
    if optimizer is not None:
        optimizer.load_state_dict(payload["optimizer"])
    return TrainState(**payload["state"])
