"""Omniglot, CIFAR-FS, CIFAR-10 and ImageFolder ingest: class-disjoint (or official) splits,
pixels, offline errors."""

from __future__ import annotations

import itertools
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from reprlab.cli import app
from reprlab.data import torchvision_sets
from reprlab.data.manifest import load_manifest, verify_dataset
from reprlab.data.shards import read_split
from reprlab.data.torchvision_sets import (
    CIFAR_FS_TEST,
    CIFAR_FS_VAL,
    downloads_root,
    ingest_download,
    ingest_imagefolder,
)

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


def _write_png(path: Path, colour, size=(20, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _rows_by_split(dataset_dir: Path) -> dict[str, tuple[np.ndarray, list[str]]]:
    manifest = load_manifest(dataset_dir)
    rows = {}
    for split in manifest["splits"]:
        images, labels, bad = read_split(dataset_dir, split)
        assert bad == 0
        rows[split] = (images, [manifest["classes"][i] for i in labels])
    return rows


def _assert_class_disjoint(dataset_dir: Path) -> dict[str, list[str]]:
    manifest = verify_dataset(dataset_dir)
    class_split = manifest["class_split"]
    for a, b in itertools.combinations(class_split.values(), 2):
        assert not set(a) & set(b)
    assert sorted(itertools.chain(*class_split.values())) == sorted(manifest["classes"])
    for split, (_, names) in _rows_by_split(dataset_dir).items():
        assert set(names) == set(class_split[split]), split
    return class_split


# ---------------------------------------------------------------------------- imagefolder


@pytest.fixture
def colour_folder(tmp_path: Path) -> Path:
    """Six classes, one solid colour each, three PNGs per class."""
    root = tmp_path / "colours"
    for c, colour in enumerate(COLOURS):
        for i in range(3):
            _write_png(root / f"class{c}" / f"{i}.png", colour)
    return root


def test_imagefolder_splits_classes_by_seeded_shuffle(colour_folder, tmp_path):
    dataset_dir = ingest_imagefolder(colour_folder, "colours", tmp_path / "out", image_size=16)

    class_split = _assert_class_disjoint(dataset_dir)
    assert [len(class_split[s]) for s in ("train", "val", "test")] == [4, 1, 1]
    manifest = load_manifest(dataset_dir)
    assert manifest["image_shape"] == [16, 16, 3]
    for images, names in _rows_by_split(dataset_dir).values():
        for image, name in zip(images, names, strict=True):
            colour = COLOURS[int(name.removeprefix("class"))]
            assert (image == np.array(colour, dtype=np.uint8)).all()  # resized, not mixed up
    splits_by_seed = [
        load_manifest(
            ingest_imagefolder(colour_folder, f"s{seed}", tmp_path, image_size=8, seed=seed)
        )["class_split"]
        for seed in range(4)
    ]
    assert any(s != splits_by_seed[0] for s in splits_by_seed[1:])
    again = ingest_imagefolder(colour_folder, "again", tmp_path, image_size=8, seed=0)
    assert load_manifest(again)["class_split"] == splits_by_seed[0]


def test_imagefolder_keeps_train_val_test_folders(tmp_path):
    root = tmp_path / "fewshot"
    for split, classes in {"train": ["a", "b"], "val": ["c"], "test": ["d", "e"]}.items():
        for c in classes:
            _write_png(root / split / c / "0.png", (10, 10, 10), size=(30, 30))
            _write_png(root / split / c / "1.jpg", (200, 200, 200), size=(30, 40))

    dataset_dir = ingest_imagefolder(root, "fewshot", tmp_path / "out", image_size=12)

    assert _assert_class_disjoint(dataset_dir) == {
        "train": ["a", "b"],
        "val": ["c"],
        "test": ["d", "e"],
    }
    assert load_manifest(dataset_dir)["image_shape"] == [12, 12, 1]  # grey images: one channel


def test_imagefolder_refuses_a_class_in_two_splits(tmp_path):
    root = tmp_path / "leaky"
    _write_png(root / "train" / "cat" / "0.png", (1, 2, 3))
    _write_png(root / "test" / "cat" / "0.png", (1, 2, 3))

    with pytest.raises(ValueError, match=r"class 'cat' is in both train/ and test/"):
        ingest_imagefolder(root, "leaky", tmp_path / "out")


def test_imagefolder_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        ingest_imagefolder(tmp_path / "missing", "x", tmp_path)
    two = tmp_path / "two"
    for c in ("a", "b"):
        _write_png(two / c / "0.png", (0, 0, 0))
    with pytest.raises(ValueError, match="has 2 class folders; .* needs at least 3"):
        ingest_imagefolder(two, "two", tmp_path)
    _write_png(two / "c" / "0.png", (0, 0, 0))
    (two / "c" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"broken.png: unreadable image"):
        ingest_imagefolder(two, "two", tmp_path)


def test_cli_ingests_an_imagefolder(colour_folder, tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    args = ["ingest", "imagefolder", "--path", str(colour_folder), "--out", str(out)]
    result = runner.invoke(app, [*args, "--image-size", "8"])

    assert result.exit_code == 0, result.output
    assert "rows: train 12, val 3, test 3; classes: train 4, val 1, test 1" in result.output
    assert load_manifest(out / "colours")["image_shape"] == [8, 8, 3]
    no_path = runner.invoke(app, ["ingest", "imagefolder"])
    assert no_path.exit_code == 2 and "imagefolder needs it" in no_path.output
    fraction = runner.invoke(app, ["ingest", "omniglot", "--test-fraction", "0.3"])
    assert fraction.exit_code == 2 and "'omniglot' keeps its own splits" in fraction.output


# ---------------------------------------------------------------------------- omniglot


def _fake_omniglot(root: Path, background: int, evaluation: int) -> None:
    """torchvision's extracted layout: 105x105 black strokes (a bar) on white."""
    for folder, prefix, n_alphabets in (
        ("images_background", "Bg", background),
        ("images_evaluation", "Ev", evaluation),
    ):
        for a, c, drawer in itertools.product(range(n_alphabets), (1, 2), (1, 2)):
            image = Image.new("L", (105, 105), 255)
            image.paste(0, (30 + 10 * c, 30, 60 + 10 * c, 75))
            path = root / "omniglot-py" / folder / f"{prefix}{a}" / f"character0{c}"
            path.mkdir(parents=True, exist_ok=True)
            image.save(path / f"{a}{c}_{drawer:02d}.png")


def test_omniglot_alphabets_become_disjoint_splits(tmp_path):
    _fake_omniglot(downloads_root() / "omniglot", background=7, evaluation=2)

    dataset_dir = ingest_download("omniglot", tmp_path)

    class_split = _assert_class_disjoint(dataset_dir)
    alphabets = {s: {name.split("/")[0] for name in names} for s, names in class_split.items()}
    assert alphabets == {
        "train": {"Bg0", "Bg1"},
        "val": {"Bg2", "Bg3", "Bg4", "Bg5", "Bg6"},
        "test": {"Ev0", "Ev1"},
    }
    assert "Bg3/character02" in class_split["val"]
    assert load_manifest(dataset_dir)["scripts"]["Bg3/character02"] == "Bg3"
    rows = _rows_by_split(dataset_dir)
    assert [len(rows[s][0]) for s in ("train", "val", "test")] == [8, 20, 8]  # 2 drawers each
    images = rows["test"][0]
    assert images.shape[1:] == (28, 28, 1)
    assert (images[:, 0, 0, 0] == 0).all() and (images[:, 14, :, 0].max(axis=1) == 255).all()


def test_omniglot_without_network_says_what_to_do(tmp_path, monkeypatch):
    import torchvision.datasets.omniglot as omniglot_module

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(omniglot_module, "download_and_extract_archive", offline)
    with pytest.raises(ValueError) as caught:
        ingest_download("omniglot", tmp_path)
    message = str(caught.value)
    assert message.startswith("omniglot: download failed (<urlopen error")
    assert "omniglot-py" in message and "reprlab ingest imagefolder --path" in message
    assert "\n" not in message


# ---------------------------------------------------------------------------- cifar10

CIFAR10_CLASSES = "airplane automobile bird cat deer dog frog horse ship truck".split()
CIFAR10_FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]


def _fake_cifar10(folder: Path, rows: int = 3) -> None:
    """torchvision's cifar-10-batches-py pickles, ``rows`` rows a file: row r of file f has
    label (f + r) % 10 and channel c of every pixel at 40 f + 10 r + c (stored CHW-flat)."""
    folder.mkdir(parents=True)
    for f, name in enumerate(CIFAR10_FILES):
        values = [40 * f + 10 * r for r in range(rows)]
        data = np.stack([np.repeat(np.arange(v, v + 3, dtype=np.uint8), 32 * 32) for v in values])
        batch = {"data": data, "labels": [(f + r) % 10 for r in range(rows)]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR10_CLASSES}))


def test_cifar10_keeps_the_official_train_and_test_rows(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar_module

    def no_download(*args, **kwargs):
        raise AssertionError("the fake folder is complete: nothing to download")

    monkeypatch.setattr(cifar_module, "download_and_extract_archive", no_download)
    monkeypatch.setattr(  # the fake files cannot have the real md5s: check presence only
        cifar_module, "check_integrity", lambda path, md5=None: Path(path).is_file()
    )
    _fake_cifar10(downloads_root() / "cifar10" / "cifar-10-batches-py")

    dataset_dir = ingest_download("cifar10", tmp_path, seed=1)

    manifest = verify_dataset(dataset_dir)
    assert manifest["classes"] == CIFAR10_CLASSES and "class_split" not in manifest
    rows = _rows_by_split(dataset_dir)
    assert sorted(rows) == ["test", "train"] and [len(rows[s][0]) for s in rows] == [15, 3]
    for split, (images, names) in rows.items():
        for image, name in zip(images, names, strict=True):
            value = int(image[0, 0, 0])
            f, r = value // 40, value % 40 // 10
            assert (f == 5) == (split == "test")  # test_batch, and only it, became 'test'
            assert name == CIFAR10_CLASSES[(f + r) % 10]
            assert image.shape == (32, 32, 3) and (image == [value, value + 1, value + 2]).all()
    other_seed = _rows_by_split(ingest_download("cifar10", tmp_path / "s2", seed=2))["train"][0]
    assert not np.array_equal(other_seed, rows["train"][0])  # rows shuffled by the seed
    assert sorted(other_seed[:, 0, 0, 0]) == sorted(rows["train"][0][:, 0, 0, 0])


def test_cifar10_without_network_says_what_to_do(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar_module

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(cifar_module, "download_and_extract_archive", offline)
    with pytest.raises(ValueError) as caught:
        ingest_download("cifar10", tmp_path)
    message = str(caught.value)
    assert message.startswith("cifar10: download failed (<urlopen error")
    assert str(downloads_root() / "cifar10" / "cifar-10-batches-py") in message
    assert "imagefolder" not in message  # its splits are by class: no way to ingest CIFAR-10
    assert "\n" not in message


# ---------------------------------------------------------------------------- cifar_fs


class _FakeCifar100:
    """Stands in for torchvision's CIFAR100: 100 classes in scrambled order, 3 images each."""

    classes = sorted(
        [*CIFAR_FS_VAL, *CIFAR_FS_TEST, *(f"other{i}" for i in range(64))], key=lambda c: c[::-1]
    )

    def __init__(self, root, train, download):
        labels = np.repeat(np.arange(100), 2 if train else 1)
        self.targets = labels.tolist()
        self.data = np.broadcast_to(labels[:, None, None, None], (labels.size, 32, 32, 3)).astype(
            np.uint8
        )


def test_cifar_fs_uses_the_paper_class_lists(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", _FakeCifar100)

    dataset_dir = ingest_download("cifar_fs", tmp_path, seed=3)

    class_split = _assert_class_disjoint(dataset_dir)
    assert [len(class_split[s]) for s in ("train", "val", "test")] == [64, 16, 20]
    assert set(class_split["test"]) == set(CIFAR_FS_TEST)
    assert set(class_split["val"]) == set(CIFAR_FS_VAL)
    for images, names in _rows_by_split(dataset_dir).values():
        assert len(images) == 3 * len(set(names))  # both CIFAR-100 parts, 2 + 1 per class
        for image, name in zip(images, names, strict=True):
            assert (image == _FakeCifar100.classes.index(name)).all()
    assert load_manifest(dataset_dir)["seed"] == 3
    assert ingest_download("cifar_fs", tmp_path, seed=3) == dataset_dir  # current: no rewrite


def test_cifar_fs_without_network_says_what_to_do(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar_module

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(cifar_module, "download_and_extract_archive", offline)
    with pytest.raises(ValueError, match=r"^cifar_fs: download failed \(.*cifar-100-python"):
        ingest_download("cifar_fs", tmp_path)


def test_unknown_download(tmp_path):
    with pytest.raises(
        ValueError, match="unknown download 'imagenet'; allowed: omniglot, cifar_fs, cifar10$"
    ):
        torchvision_sets.ingest_download("imagenet", tmp_path)
