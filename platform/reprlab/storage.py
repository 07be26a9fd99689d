"""Where a run's checkpoints live: the local runs folder, or storage every node of a cluster
reaches (s3://, gs://, a mounted path declared shared). Read through pyarrow's filesystems, the
ones Ray Train writes checkpoints with, so what Train wrote is what this finds."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs as pafs

STATE_FILE = "state.pt"
"""A checkpoint's weights, optimiser and position (torch.save)."""
POSITION_FILE = "train_state.json"
"""The position of a checkpoint in training (epochs, steps), cheap to read without torch."""


def is_remote(location: str | Path) -> bool:
    """Whether `location` is an object-store URI rather than a local path."""
    return "://" in str(location)


def checkpoint_dirs(location: str | Path) -> list[str]:
    """The checkpoint folders (full URIs or paths) of a run, oldest first; Ray Train names them
    checkpoint_<time>, and only those holding a position file are complete."""
    filesystem, root = pafs.FileSystem.from_uri(_as_uri(location))
    try:
        entries = filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError as error:
        raise ValueError(f"{location}: cannot list checkpoints ({error})") from None
    names = sorted(
        entry.base_name
        for entry in entries
        if entry.type == pafs.FileType.Directory and entry.base_name.startswith("checkpoint_")
    )
    complete = [
        name
        for name in names
        if filesystem.get_file_info(f"{root}/{name}/{POSITION_FILE}").type == pafs.FileType.File
    ]
    return [f"{str(location).rstrip('/')}/{name}" for name in complete]


def checkpoint_epoch(checkpoint: str | Path) -> int:
    """The epochs finished by the checkpoint at `checkpoint` (a folder or URI)."""
    filesystem, root = pafs.FileSystem.from_uri(_as_uri(checkpoint))
    with filesystem.open_input_stream(f"{root}/{POSITION_FILE}") as stream:
        return json.loads(stream.read())["epoch"]


def epoch_to_resume(location: str | Path) -> int:
    """The epochs the newest checkpoint of a run has finished (0 when it has none): where a
    relaunched or restarted run continues."""
    found = checkpoint_dirs(location)
    return checkpoint_epoch(found[-1]) if found else 0


def local_checkpoint(checkpoint: str, cache: Path) -> Path:
    """A local folder holding `checkpoint`: itself when local, else a copy under `cache`
    (downloaded once)."""
    if not is_remote(checkpoint):
        return Path(checkpoint)
    target = cache / checkpoint.rstrip("/").rsplit("/", 1)[-1]
    if not (target / POSITION_FILE).is_file():
        target.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(checkpoint, str(target))
    return target


def _as_uri(location: str | Path) -> str:
    return str(location) if is_remote(location) else Path(location).resolve().as_uri()
