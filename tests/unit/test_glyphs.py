"""Glyphs few-shot set: size, class-disjoint script splits, font coverage, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from reprlab.data import glyphs
from reprlab.data.catalog import ingest
from reprlab.data.manifest import load_manifest, verify_dataset
from reprlab.data.shards import read_split

SPLIT_SCRIPTS = {
    "train": {"latin", "greek", "cyrillic", "math", "technical", "geometric"},
    "val": {"hebrew", "arrows"},
    "test": {"armenian", "georgian"},
}


@pytest.fixture(scope="module")
def glyphs_dir(tmp_path_factory):
    """One full ingest shared by the read-only tests (about 8 s)."""
    return ingest("glyphs", out=tmp_path_factory.mktemp("glyphs"))


@pytest.fixture(scope="module")
def splits(glyphs_dir):
    """split -> (images, class names of the rows)."""
    classes = np.array(load_manifest(glyphs_dir)["classes"])
    loaded = {}
    for split in SPLIT_SCRIPTS:
        images, labels, bad_rows = read_split(glyphs_dir, split)
        assert bad_rows == 0
        loaded[split] = (images, classes[labels])
    return loaded


def test_at_least_600_classes_of_20_images_28x28(glyphs_dir, splits):
    manifest = verify_dataset(glyphs_dir)

    assert manifest["image_shape"] == [28, 28, 1]
    assert len(manifest["classes"]) >= 600
    assert (manifest["seed"], manifest["test_fraction"]) == (0, 0.0)
    for images, names in splits.values():
        assert images.dtype == np.uint8 and images.shape[1:] == (28, 28, 1)
        _, counts = np.unique(names, return_counts=True)
        assert set(counts.tolist()) == {glyphs.SAMPLES_PER_CLASS}
    assert sum(images.shape[0] for images, _ in splits.values()) == 20 * len(manifest["classes"])
    assert len(manifest["class_split"]["test"]) >= 120


def test_splits_share_no_class_and_match_the_manifest(glyphs_dir, splits):
    class_split = load_manifest(glyphs_dir)["class_split"]

    assert list(class_split) == ["train", "val", "test"]
    for split, (_, names) in splits.items():
        assert set(names) == set(class_split[split]), split
    for a, b in itertools.combinations(class_split.values(), 2):
        assert not set(a) & set(b)
    all_classes = load_manifest(glyphs_dir)["classes"]
    assert sorted(itertools.chain(*class_split.values())) == sorted(all_classes)


def test_each_split_holds_only_its_scripts(glyphs_dir):
    manifest = load_manifest(glyphs_dir)
    scripts = manifest["scripts"]

    assert set(scripts) == set(manifest["classes"])
    for split, members in manifest["class_split"].items():
        assert {scripts[name] for name in members} == SPLIT_SCRIPTS[split], split
    for name, script in scripts.items():
        assert name.startswith(f"{script}:") and len(name) == len(script) + 2


def test_rows_are_mixed_across_shards(glyphs_dir):
    import pyarrow.parquet as pq

    shard = glyphs_dir / "train-00000.parquet"
    labels = pq.read_table(shard, columns=["label"]).column("label").to_numpy()
    assert np.unique(labels).size > 300  # a class-sorted shard would hold ~52 classes


def test_every_sample_of_a_class_is_different(splits):
    for images, names in splits.values():
        flat = images.reshape(len(images), -1)
        for name in np.unique(names)[::7]:
            samples = flat[names == name]
            assert np.unique(samples, axis=0).shape[0] == len(samples), name


def test_white_glyph_on_black_and_never_blank(splits):
    for images, _ in splits.values():
        border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]])
        assert border.mean() < 20 and images.max() == 255
        bright = (images.reshape(len(images), -1) > 128).sum(axis=1)
        assert bright.min() >= 3  # even a dot operator keeps its dot


def test_coverage_comes_from_the_font_cmaps():
    hebrew_alef, armenian_ayb, latin_a = 0x5D0, 0x531, 0x41
    dejavu_sans = glyphs.FONT_FILES[:4]

    assert glyphs.covering_fonts(hebrew_alef) == dejavu_sans
    assert not any(f.startswith("STIX") for f in glyphs.covering_fonts(armenian_ayb))
    assert glyphs.covering_fonts(latin_a) == glyphs.FONT_FILES
    assert glyphs.covering_fonts(0xE000) == ()  # private use: no font has it


def test_classes_use_only_fonts_that_contain_them():
    classes = glyphs.select_classes()
    for glyph_class in classes:
        covering = glyphs.covering_fonts(glyph_class.code_point)
        assert set(glyph_class.fonts) <= set(covering), glyph_class.name
        assert len(glyph_class.fonts) >= glyphs.MIN_FONTS
    selected = {c.code_point for c in classes}
    poorly_covered = [
        cp
        for script in glyphs.SCRIPTS
        for first, last in script.ranges
        for cp in range(first, last + 1)
        if len(glyphs.covering_fonts(cp)) < glyphs.MIN_FONTS
    ]
    assert poorly_covered and not selected & set(poorly_covered)


def test_samples_draw_only_from_the_class_fonts(monkeypatch):
    alef = next(c for c in glyphs.select_classes() if c.code_point == 0x5D0)
    asked = []
    clean_glyph = glyphs._clean_glyph
    monkeypatch.setattr(
        glyphs, "_clean_glyph", lambda cp, font: asked.append(font) or clean_glyph(cp, font)
    )
    for index in range(40):
        glyphs.render_sample(alef, 0, index)
    assert set(asked) == set(alef.fonts) and len(alef.fonts) == 4


def test_no_two_classes_of_a_split_render_alike():
    seen = {}
    for glyph_class in glyphs.select_classes():
        if "DejaVuSans.ttf" not in glyph_class.fonts:
            continue
        pixels = glyphs._reference_pixels(glyph_class.code_point, "DejaVuSans.ttf")
        key = (glyph_class.split, pixels)
        assert key not in seen, (glyph_class.name, seen.get(key))
        seen[key] = glyph_class.name
    names = {c.name for c in glyphs.select_classes()}
    assert "latin:A" in names and "cyrillic:А" not in names and "greek:Α" not in names


def test_sample_depends_on_seed_class_and_index_only():
    classes = glyphs.select_classes()
    first, other = classes[0], classes[-1]
    again = glyphs.render_sample(first, 3, 5)
    glyphs.render_sample(other, 3, 5)  # rendering something else in between changes nothing

    np.testing.assert_array_equal(glyphs.render_sample(first, 3, 5), again)
    assert not np.array_equal(glyphs.render_sample(first, 4, 5), again)
    assert not np.array_equal(glyphs.render_sample(first, 3, 6), again)


def test_same_seed_same_shard_bytes_other_seed_other_bytes(tmp_path, monkeypatch):
    few = tuple(s for s in glyphs.SCRIPTS if s.name in {"latin", "hebrew", "armenian"})
    monkeypatch.setattr(glyphs, "SCRIPTS", few)

    def shard_hashes(out, seed):
        manifest = load_manifest(ingest("glyphs", out=out, seed=seed))
        return [s["sha256"] for s in manifest["shards"]], manifest["class_split"]

    first, class_split = shard_hashes(tmp_path / "a", 0)
    assert shard_hashes(tmp_path / "b", 0) == (first, class_split)
    other, other_split = shard_hashes(tmp_path / "c", 1)
    assert other_split == class_split and not set(other) & set(first)


def test_test_fraction_does_not_apply(tmp_path):
    with pytest.raises(ValueError, match="test_fraction does not apply to 'glyphs'"):
        ingest("glyphs", out=tmp_path, test_fraction=0.2)
