"""Glyphs: a many-class few-shot set rendered offline from the fonts matplotlib ships.

A class is one Unicode character; a sample is that character in a random font that really
contains it (per the font's cmap), under a random affine transform and stroke noise, as a 28x28
uint8 image, white on black. Classes are split by script like Omniglot's alphabets: train, val
and test share no script, so few-shot evaluation always meets unseen characters.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from reprlab.data.class_split import SplitRows, split_by_class

SOURCE = "reprlab.data.glyphs v2 (matplotlib DejaVu + STIX fonts)"
SIZE = 28
SAMPLES_PER_CLASS = 20
MIN_FONTS = 3
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
)
# Letters and symbols only: marks, digits, punctuation and modifiers are not classes.
_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lo", "Sm", "So"})
_SCALE = 3  # glyphs are drawn and transformed at 3x, then box-downsampled to SIZE
_EM = 22 * _SCALE  # font size: capitals about 16 px tall in the 28 px image
_MAX_EXTENT = 24 * _SCALE  # wider or taller glyphs (long arrows, big operators) are shrunk


@dataclass(frozen=True)
class Script:
    """A group of classes that goes to one split as a whole."""

    name: str
    split: str
    ranges: tuple[tuple[int, int], ...]


SCRIPTS = (
    Script("latin", "train", ((0x41, 0x5A), (0x61, 0x7A))),
    Script("greek", "train", ((0x370, 0x3FF),)),
    Script("cyrillic", "train", ((0x400, 0x4FF),)),
    Script("math", "train", ((0x2200, 0x22FF),)),
    Script("technical", "train", ((0x2300, 0x23FF),)),
    Script("geometric", "train", ((0x25A0, 0x25FF),)),
    Script("hebrew", "val", ((0x5D0, 0x5F2),)),
    Script("arrows", "val", ((0x2190, 0x21FF),)),
    Script("armenian", "test", ((0x531, 0x587),)),
    Script("georgian", "test", ((0x10A0, 0x10FF),)),
)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class GlyphClass:
    """One class: its character, script and the fonts that draw it."""

    name: str
    script: str
    split: str
    code_point: int
    fonts: tuple[str, ...]


def font_dir() -> Path:
    """Where matplotlib keeps its TrueType fonts."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@cache
def font_coverage() -> dict[str, frozenset[int]]:
    """Code points each of FONT_FILES maps to a glyph (its best cmap)."""
    from fontTools.ttLib import TTFont

    coverage = {}
    for file_name in FONT_FILES:
        with TTFont(font_dir() / file_name, lazy=True) as font:
            coverage[file_name] = frozenset(font.getBestCmap())
    return coverage


def covering_fonts(code_point: int) -> tuple[str, ...]:
    """The fonts among FONT_FILES whose cmap contains ``code_point``, in FONT_FILES order."""
    coverage = font_coverage()
    return tuple(f for f in FONT_FILES if code_point in coverage[f])


@cache
def _font(file_name: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_dir() / file_name), _EM)


@cache
def _clean_glyph(code_point: int, file_name: str) -> Image.Image | None:
    """The glyph drawn at 3x resolution, cropped to its ink; None if it has no ink."""
    font, char = _font(file_name), chr(code_point)
    left, top, right, bottom = font.getbbox(char)
    if right <= left or bottom <= top:
        return None
    image = Image.new("L", (right - left, bottom - top))
    ImageDraw.Draw(image).text((-left, -top), char, fill=255, font=font)
    ink = image.getbbox()
    return None if ink is None else image.crop(ink)


def select_classes() -> list[GlyphClass]:
    """All classes, ordered train, val, test: characters of SCRIPTS drawn with ink by at least
    MIN_FONTS fonts, minus any whose plain rendering duplicates an earlier class of its split."""
    chosen: list[GlyphClass] = []
    seen: set[tuple[str, str, bytes]] = set()
    for script in sorted(SCRIPTS, key=lambda s: SPLITS.index(s.split)):
        for first, last in script.ranges:
            for code_point in range(first, last + 1):
                if unicodedata.category(chr(code_point)) not in _CATEGORIES:
                    continue
                fonts = tuple(
                    f for f in covering_fonts(code_point) if _clean_glyph(code_point, f) is not None
                )
                if len(fonts) < MIN_FONTS:
                    continue
                key = (script.split, fonts[0], _reference_pixels(code_point, fonts[0]))
                if key in seen:
                    continue
                seen.add(key)
                name = f"{script.name}:{chr(code_point)}"
                chosen.append(GlyphClass(name, script.name, script.split, code_point, fonts))
    return chosen


def _reference_pixels(code_point: int, file_name: str) -> bytes:
    """The untransformed SIZE x SIZE rendering, to spot classes that look exactly alike."""
    glyph = _clean_glyph(code_point, file_name)
    assert glyph is not None
    return _place(glyph, np.eye(3)).tobytes()


def render_sample(glyph_class: GlyphClass, seed: int, index: int) -> np.ndarray:
    """Sample ``index`` of a class: uint8 [SIZE, SIZE], a function of (seed, class, index) only."""
    rng = np.random.default_rng([seed, glyph_class.code_point, index])
    font = glyph_class.fonts[rng.integers(len(glyph_class.fonts))]
    glyph = _clean_glyph(glyph_class.code_point, font)
    assert glyph is not None
    glyph = _vary_strokes(glyph, rng)
    image = _place(glyph, _random_affine(rng))
    return _add_noise(image, rng)


def _vary_strokes(glyph: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Keep (55 %), thin (15 %) or thicken (30 %) the strokes: grey erosion/dilation at 3x.
    Thinning that would wipe out more than a third of the ink (hairline fonts) is skipped."""
    draw = rng.random()
    if draw < 0.55:
        return glyph
    padded = ImageOps.expand(glyph, 2)
    if draw >= 0.7:
        return padded.filter(ImageFilter.MaxFilter(3))
    thinned = padded.filter(ImageFilter.MinFilter(3))
    kept = np.asarray(thinned, dtype=np.float32).sum() / np.asarray(glyph, dtype=np.float32).sum()
    return thinned if kept >= 2 / 3 else padded


def _random_affine(rng: np.random.Generator) -> np.ndarray:
    """Rotation (±10°), scale, aspect, shear and a shift of up to 1.5 pixels, as a 3x3 matrix
    acting about the glyph centre. The shift is what defeats pixel matching (raw-pixel 1-shot
    accuracy 61 % at ±1 px, ±15°, 50 % at ±1.5 px, ±10°) while a convolutional encoder learns
    to ignore it; rotation and shear change the letter itself."""
    angle = np.deg2rad(rng.uniform(-10, 10))
    scale = rng.uniform(0.88, 1.12)
    aspect = np.exp(rng.uniform(-0.05, 0.05))
    shear = rng.uniform(-0.12, 0.12)
    shift = rng.uniform(-1.5, 1.5, size=2) * _SCALE
    cos, sin = np.cos(angle), np.sin(angle)
    rotate = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])
    shear_scale = np.array([[scale * aspect, shear * scale, 0], [0, scale / aspect, 0], [0, 0, 1]])
    matrix = rotate @ shear_scale
    matrix[:2, 2] = shift
    return matrix


def _place(glyph: Image.Image, affine: np.ndarray) -> np.ndarray:
    """Draw the cropped glyph centred in the image under ``affine`` (about the glyph centre),
    shrunk first if it would not fit; box-downsample 3x to uint8 [SIZE, SIZE]."""
    width, height = glyph.size
    fit = min(1.0, _MAX_EXTENT / max(height, width))
    canvas = SIZE * _SCALE
    to_origin = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1]])
    to_centre = np.array([[fit, 0, canvas / 2], [0, fit, canvas / 2], [0, 0, 1]])
    inverse = np.linalg.inv(to_centre @ affine @ to_origin)
    moved = glyph.transform(
        (canvas, canvas), Image.Transform.AFFINE, tuple(inverse[:2].ravel()), Image.BILINEAR
    )
    return np.asarray(moved.reduce(_SCALE), dtype=np.uint8)


def _add_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Up to one small erased patch (skipped if it would take over a quarter of the ink, so
    dots and dashes survive), then Gaussian pixel noise."""
    pixels = image.astype(np.float32)
    for _ in range(rng.integers(0, 2)):
        h, w = rng.integers(2, 5, size=2)
        top, left = rng.integers(0, SIZE - h), rng.integers(0, SIZE - w)
        patch = pixels[top : top + h, left : left + w]
        if patch.sum() <= 0.25 * pixels.sum():
            patch[:] = 0
    pixels += rng.normal(0.0, 8.0, image.shape)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def load_glyphs(seed: int) -> SplitRows:
    """Render every class SAMPLES_PER_CLASS times and split by script (train, val, test)."""
    classes = select_classes()
    images = np.stack(
        [render_sample(c, seed, i) for c in classes for i in range(SAMPLES_PER_CLASS)]
    )
    labels = np.repeat(np.arange(len(classes)), SAMPLES_PER_CLASS)
    class_split = {s: [c.name for c in classes if c.split == s] for s in SPLITS}
    scripts = {c.name: c.script for c in classes}
    return split_by_class(
        images,
        labels,
        [c.name for c in classes],
        class_split,
        seed=seed,
        extra={"scripts": scripts},
    )
