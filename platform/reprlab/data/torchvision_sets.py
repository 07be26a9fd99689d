"""Sets read through torchvision: few-shot sets (Omniglot, CIFAR-FS, any ImageFolder) written
as shards whose train/val/test splits share no class, recorded in the manifest's
``class_split``, and CIFAR-10 with its official train/test rows.

Downloads land in ``$REPRLAB_HOME/downloads/<name>/``; without a network the ingest fails with
one line saying where to put the files instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from reprlab.data.catalog import datasets_root, is_current
from reprlab.data.class_split import SplitRows, split_by_class
from reprlab.data.shards import write_dataset
from reprlab.home import reprlab_home

SPLITS = ("train", "val", "test")
OMNIGLOT_SIZE = 28
OMNIGLOT_VAL_ALPHABETS = 5  # the last background alphabets (sorted by name) become 'val'
IMAGEFOLDER_FRACTIONS = (0.64, 0.16, 0.20)  # train/val/test share of classes, as CIFAR-FS
# CIFAR-FS (Bertinetto et al., ICLR 2019): 16 val and 20 test CIFAR-100 classes, the other 64 train.
CIFAR_FS_VAL = tuple(
    "beaver beetle butterfly camel cattle crab crocodile flatfish lamp maple_tree motorcycle "
    "otter sea shark television tractor".split()
)
CIFAR_FS_TEST = tuple(
    "baby bed bicycle chimpanzee fox leopard man pickup_truck plain poppy rocket rose snail "
    "sweet_pepper table telephone wardrobe whale woman worm".split()
)
_FALLBACK = "or use `reprlab ingest imagefolder --path DIR`"
_DOWNLOAD_ERRORS = (OSError, RuntimeError, ValueError)


def downloads_root() -> Path:
    """Where torchvision downloads go: ``$REPRLAB_HOME/downloads``."""
    return reprlab_home() / "downloads"


def ingest_download(
    name: str, out: Path | None = None, *, seed: int = 0, force: bool = False
) -> Path:
    """Download (if needed) and write ``omniglot``, ``cifar_fs`` or ``cifar10`` under ``(out or
    datasets_root())/name``; ``seed`` shuffles rows within each split. Idempotent like
    ``catalog.ingest``."""
    if name not in _DOWNLOADABLE:
        raise ValueError(f"unknown download '{name}'; allowed: {', '.join(_DOWNLOADABLE)}")
    source, load = _DOWNLOADABLE[name]
    target = Path(out or datasets_root()) / name
    if not force and is_current(target, {"name": name, "source": source, "seed": seed}):
        return target
    return _write(target, load(downloads_root() / name, seed), source, seed)


def ingest_imagefolder(
    path: Path,
    name: str,
    out: Path | None = None,
    *,
    image_size: int = 84,
    seed: int = 0,
) -> Path:
    """Write the ImageFolder at ``path`` (one subfolder per class) as dataset ``name``, images
    resized and centre-cropped to ``image_size``. Classes are split 64/16/20 % by a seeded
    shuffle, unless ``path`` holds ``train/`` (and ``val/``, ``test/``) ImageFolders: those
    splits are kept. Always rewritten, since the folder may have changed."""
    path = Path(path).expanduser().resolve()
    if image_size < 1:
        raise ValueError(f"imagefolder: image_size must be >= 1, got {image_size}")
    if not path.is_dir():
        raise ValueError(f"imagefolder: {path} is not a directory")
    split_dirs = _predefined_splits(path)
    if split_dirs:
        samples, class_split = _samples_of_splits(split_dirs)
    else:
        samples = _folder_samples(path)
        class_split = _shuffled_class_split(sorted({c for _, c in samples}), seed, path)
    class_names = [c for split in class_split.values() for c in split]
    index = {c: i for i, c in enumerate(class_names)}
    images = _stack_images([_fitted(p, image_size) for p, _ in samples])
    labels = np.array([index[c] for _, c in samples], dtype=np.int64)
    rows = split_by_class(images, labels, class_names, class_split, seed=seed)
    return _write(Path(out or datasets_root()) / name, rows, f"imagefolder:{path}", seed)


def _write(target: Path, rows: SplitRows, source: str, seed: int) -> Path:
    return write_dataset(
        target.parent,
        target.name,
        rows.images,
        rows.labels,
        rows.class_names,
        rows.splits,
        source=source,
        seed=seed,
        test_fraction=0.0,
        extra=rows.extra,
    )


# ---------------------------------------------------------------------------- omniglot


def _load_omniglot(root: Path, seed: int) -> SplitRows:
    """Background alphabets -> train (the last OMNIGLOT_VAL_ALPHABETS -> val), evaluation
    alphabets -> test; 105x105 black-on-white drawings become 28x28 white-on-black."""
    background, evaluation = _omniglot_folders(root)
    alphabets = _subdirs(background)
    if len(alphabets) <= OMNIGLOT_VAL_ALPHABETS:
        raise ValueError(
            f"omniglot: {background} has {len(alphabets)} alphabets; need more than "
            f"{OMNIGLOT_VAL_ALPHABETS} to carve out 'val'"
        )
    split_alphabets = {
        "train": alphabets[:-OMNIGLOT_VAL_ALPHABETS],
        "val": alphabets[-OMNIGLOT_VAL_ALPHABETS:],
        "test": _subdirs(evaluation),
    }
    images, labels, class_names, scripts = [], [], [], {}
    class_split: dict[str, list[str]] = {}
    for split, split_dirs in split_alphabets.items():
        class_split[split] = []
        for alphabet in split_dirs:
            for character in _subdirs(alphabet):
                class_name = f"{alphabet.name}/{character.name}"
                for png in sorted(character.glob("*.png")):
                    images.append(_omniglot_image(png))
                    labels.append(len(class_names))
                class_names.append(class_name)
                class_split[split].append(class_name)
                scripts[class_name] = alphabet.name
    return split_by_class(
        _stack_images(images),
        np.array(labels),
        class_names,
        class_split,
        seed=seed,
        extra={"scripts": scripts},
    )


def _omniglot_folders(root: Path) -> tuple[Path, Path]:
    """The extracted images_background/ and images_evaluation/ folders, downloaded if absent."""
    base = root / "omniglot-py"
    folders = (base / "images_background", base / "images_evaluation")
    if all(f.is_dir() for f in folders):
        return folders
    from torchvision.datasets import Omniglot

    try:
        for background in (True, False):
            Omniglot(str(root), background=background, download=True)
    except _DOWNLOAD_ERRORS as error:
        raise ValueError(
            f"omniglot: download failed ({_one_line(error)}); place the torchvision Omniglot "
            f"folder under {base} (images_background/, images_evaluation/) {_FALLBACK}"
        ) from None
    return folders


def _omniglot_image(png: Path) -> np.ndarray:
    with Image.open(png) as image:
        small = image.convert("L").resize((OMNIGLOT_SIZE, OMNIGLOT_SIZE), Image.Resampling.BOX)
    return 255 - np.asarray(small, dtype=np.uint8)


# ---------------------------------------------------------------------------- cifar_fs


def _load_cifar_fs(root: Path, seed: int) -> SplitRows:
    """All 60,000 CIFAR-100 images (its train and test parts), split by class as CIFAR-FS."""
    from torchvision.datasets import CIFAR100

    try:
        parts = [CIFAR100(str(root), train=train, download=True) for train in (True, False)]
    except _DOWNLOAD_ERRORS as error:
        raise ValueError(
            f"cifar_fs: download failed ({_one_line(error)}); place the torchvision CIFAR-100 "
            f"folder under {root / 'cifar-100-python'} {_FALLBACK}"
        ) from None
    images = np.concatenate([np.asarray(p.data, dtype=np.uint8) for p in parts])
    labels = np.concatenate([np.asarray(p.targets, dtype=np.int64) for p in parts])
    return cifar_fs_split(images, labels, list(parts[0].classes), seed)


def cifar_fs_split(
    images: np.ndarray, labels: np.ndarray, cifar_classes: list[str], seed: int
) -> SplitRows:
    """CIFAR-100 rows split into CIFAR-FS's 64 train / 16 val / 20 test classes."""
    held_out = set(CIFAR_FS_VAL) | set(CIFAR_FS_TEST)
    missing = sorted(held_out - set(cifar_classes))
    if missing or len(cifar_classes) != 100:
        raise ValueError(
            f"cifar_fs: expected the 100 CIFAR-100 classes, got {len(cifar_classes)} "
            f"(missing {missing[:5]})"
        )
    class_split = {
        "train": [c for c in cifar_classes if c not in held_out],
        "val": list(CIFAR_FS_VAL),
        "test": list(CIFAR_FS_TEST),
    }
    return split_by_class(images, labels, cifar_classes, class_split, seed=seed)


# ---------------------------------------------------------------------------- cifar10


def _load_cifar10(root: Path, seed: int) -> SplitRows:
    """CIFAR-10's official 50,000 train and 10,000 test images, classes named."""
    from torchvision.datasets import CIFAR10

    try:
        parts = [CIFAR10(str(root), train=train, download=True) for train in (True, False)]
    except _DOWNLOAD_ERRORS as error:
        raise ValueError(
            f"cifar10: download failed ({_one_line(error)}); place the torchvision CIFAR-10 "
            f"folder under {root / 'cifar-10-batches-py'} (data_batch_1..5, test_batch, "
            "batches.meta)"
        ) from None
    return _shuffled_parts(
        {
            split: (np.asarray(p.data, dtype=np.uint8), np.asarray(p.targets, dtype=np.int64))
            for split, p in zip(("train", "test"), parts, strict=True)
        },
        list(parts[0].classes),
        seed,
    )


def _shuffled_parts(
    parts: dict[str, tuple[np.ndarray, np.ndarray]], class_names: list[str], seed: int
) -> SplitRows:
    """Rows of fixed splits (``{split: (images, labels)}``, e.g. a set's official train and
    test parts), each split's rows in a ``seed``-shuffled order."""
    rng = np.random.default_rng(seed)
    images, labels, splits = [], [], []
    for split, (split_images, split_labels) in parts.items():
        order = rng.permutation(len(split_labels))
        images.append(split_images[order])
        labels.append(split_labels[order])
        splits.append(np.full(order.size, split))
    return SplitRows(
        np.concatenate(images), np.concatenate(labels), class_names, np.concatenate(splits)
    )


_DOWNLOADABLE: dict[str, tuple[str, Callable[[Path, int], SplitRows]]] = {
    "omniglot": ("torchvision.datasets.Omniglot", _load_omniglot),
    "cifar_fs": ("torchvision.datasets.CIFAR100 (CIFAR-FS split)", _load_cifar_fs),
    "cifar10": ("torchvision.datasets.CIFAR10", _load_cifar10),
}
DOWNLOADABLE = tuple(_DOWNLOADABLE)


# ---------------------------------------------------------------------------- imagefolder


def _predefined_splits(path: Path) -> dict[str, Path]:
    """``{split: folder}`` when ``path`` holds only train/val/test folders (train required)."""
    subdirs = {d.name: d for d in _subdirs(path)}
    if "train" not in subdirs or not set(subdirs) <= set(SPLITS):
        return {}
    return {s: subdirs[s] for s in SPLITS if s in subdirs}


def _samples_of_splits(
    split_dirs: dict[str, Path],
) -> tuple[list[tuple[Path, str]], dict[str, list[str]]]:
    """Samples of every split folder, and each split's classes (refused if shared)."""
    samples: list[tuple[Path, str]] = []
    class_split: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for split, folder in split_dirs.items():
        split_samples = _folder_samples(folder)
        class_split[split] = sorted({c for _, c in split_samples})
        for name in class_split[split]:
            if seen.setdefault(name, split) != split:
                raise ValueError(
                    f"imagefolder: class '{name}' is in both {seen[name]}/ and {split}/; "
                    "few-shot splits need disjoint classes"
                )
        samples += split_samples
    return samples, class_split


def _folder_samples(folder: Path) -> list[tuple[Path, str]]:
    """(image path, class name) for every image torchvision's ImageFolder finds."""
    from torchvision.datasets import ImageFolder

    try:
        dataset = ImageFolder(str(folder))
    except OSError as error:
        raise ValueError(f"imagefolder: {folder}: {_one_line(error)}") from None
    return [(Path(p), dataset.classes[i]) for p, i in dataset.samples]


def _shuffled_class_split(classes: list[str], seed: int, path: Path) -> dict[str, list[str]]:
    """IMAGEFOLDER_FRACTIONS of a seeded shuffle of ``classes``; every split gets one at least."""
    if len(classes) < len(SPLITS):
        raise ValueError(
            f"imagefolder: {path} has {len(classes)} class folders; a train/val/test class "
            f"split needs at least {len(SPLITS)}"
        )
    order = [classes[i] for i in np.random.default_rng(seed).permutation(len(classes))]
    n_val = max(1, round(IMAGEFOLDER_FRACTIONS[1] * len(classes)))
    n_test = max(1, round(IMAGEFOLDER_FRACTIONS[2] * len(classes)))
    n_train = len(classes) - n_val - n_test
    bounds = (n_train, n_train + n_val)
    return {
        "train": sorted(order[: bounds[0]]),
        "val": sorted(order[bounds[0] : bounds[1]]),
        "test": sorted(order[bounds[1] :]),
    }


def _fitted(path: Path, size: int) -> np.ndarray:
    """An image as RGB uint8 [size, size, 3]: resized to cover, then centre-cropped."""
    try:
        with Image.open(path) as image:
            fitted = ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.BICUBIC)
    except (OSError, ValueError) as error:
        raise ValueError(f"imagefolder: {path}: unreadable image ({_one_line(error)})") from None
    return np.asarray(fitted, dtype=np.uint8)


def _stack_images(images: list[np.ndarray]) -> np.ndarray:
    """Stack to [N, H, W, C]; RGB images whose channels are all equal become one channel."""
    stacked = np.stack(images)
    if stacked.ndim == 4 and (stacked == stacked[..., :1]).all():
        return stacked[..., :1]
    return stacked


def _subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _one_line(text: object) -> str:
    return " ".join(str(text).split())
