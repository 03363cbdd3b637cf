"""The embedded dataset: procedural faces in the exact CelebA file format.

Labels follow CelebA's own statistics (positive rates and co-occurrences, derived from the
genuine ``list_attr_celeba.txt`` by ``scripts/derive_label_stats.py``): a Gaussian copula
draws correlated latent values, thresholds turn them into labels, and a few logical rules
then hold on every row (beards only on men, at most one hair colour, ...). Every attribute
with a visual meaning changes the drawing; ``Attractive`` has none, as on real faces it is
only correlated with the others. Each image is seeded from ``(seed, index)`` and each
identity from ``(seed, identity)``, so the output is byte-identical for one seed whatever
the number of worker processes.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import os
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from celebalib.attributes import ATTRIBUTE_INDEX, ATTRIBUTES, NUM_ATTRIBUTES, SPLITS
from celebalib.errors import ConfigError
from celebalib.io import write_json, write_text

RESOURCES = Path(__file__).resolve().parent / "resources"
MARKER = ".celebalib-synthetic.json"
GENERATOR_VERSION = 5
WIDTH, HEIGHT = 178, 218
MIN_IMAGES = 20
JPEG_QUALITY = 90
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)

# What the generator holds constant across an identity's images. It differs by intent from
# attributes.PERSON_ATTRIBUTES (what belongs to a genuine person, whose labels training may average
# over their photos): a synthetic person also keeps their hair, beard, skin and eye bags in every
# image, which genuine people change between photos, while Attractive, a person's in
# PERSON_ATTRIBUTES, varies from image to image here like the attributes not listed.
STABLE = (
    "Male", "Young", "Pale_Skin", "Big_Nose", "Pointy_Nose", "Big_Lips", "Arched_Eyebrows",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Oval_Face", "Bags_Under_Eyes", "Black_Hair",
    "Blond_Hair", "Brown_Hair", "Gray_Hair", "Straight_Hair", "Wavy_Hair", "Bangs", "Bald",
    "Receding_Hairline", "Goatee", "Mustache", "Sideburns", "No_Beard", "5_o_Clock_Shadow",
)
HAIR_COLOURS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")
BEARDS = ("Goatee", "Mustache", "Sideburns", "5_o_Clock_Shadow")
MALE_ONLY = BEARDS + ("Bald",)
FEMALE_ONLY = ("Wearing_Lipstick", "Heavy_Makeup")
# Share of a varying attribute's latent value that an identity keeps across its images.
IDENTITY_SHARE = 0.5
# Range of a cue's random strength: its minimum still shows clearly at 64 px.
STRENGTH_RANGE = (0.7, 1.0)


@dataclass(frozen=True)
class LabelModel:
    """Positive rates and latent correlation matrix of the 40 labels."""

    rates: np.ndarray
    correlation: np.ndarray


@dataclass(frozen=True)
class Plan:
    """Everything decided before drawing: labels, identities and splits in file order."""

    labels: np.ndarray  # (n, 40) int8 0/1
    identity: np.ndarray  # (n,) int32
    split: np.ndarray  # (n,) int8: 0 train, 1 val, 2 test


@functools.lru_cache(maxsize=1)
def load_label_model() -> LabelModel:
    """Read the derived CelebA label statistics from ``celebalib/resources``."""
    import pandas as pd

    rates = pd.read_csv(RESOURCES / "label_rates.csv").set_index("attribute")["positive_rate"]
    corr = pd.read_csv(RESOURCES / "label_correlation.csv", index_col=0)
    order = list(ATTRIBUTES)
    return LabelModel(rates[order].to_numpy(np.float64), corr.loc[order, order].to_numpy(np.float64))


def _columns(names: tuple[str, ...]) -> list[int]:
    """Return the column indices of attribute names."""
    return [ATTRIBUTE_INDEX[name] for name in names]


def sample_latent(identity: np.ndarray, rng: np.random.Generator, model: LabelModel) -> np.ndarray:
    """Draw copula values (n, 40): stable columns shared per identity, the rest partly.

    Varying columns are drawn from their conditional law given the identity's stable
    values, so every row still follows the full correlation matrix.
    """
    s, v = _columns(STABLE), [i for i in range(NUM_ATTRIBUTES) if ATTRIBUTES[i] not in STABLE]
    r = model.correlation
    n_ids = int(identity.max()) + 1
    z_s = rng.standard_normal((n_ids, len(s))) @ np.linalg.cholesky(r[np.ix_(s, s)]).T
    gain = r[np.ix_(v, s)] @ np.linalg.inv(r[np.ix_(s, s)])
    cond = r[np.ix_(v, v)] - gain @ r[np.ix_(s, v)]
    chol = np.linalg.cholesky(cond + 1e-9 * np.eye(len(v)))
    shared = rng.standard_normal((n_ids, len(v))) * math.sqrt(IDENTITY_SHARE)
    own = rng.standard_normal((len(identity), len(v))) * math.sqrt(1 - IDENTITY_SHARE)
    z = np.empty((len(identity), NUM_ATTRIBUTES))
    z[:, s] = z_s[identity]
    z[:, v] = z_s[identity] @ gain.T + (shared[identity] + own) @ chol.T
    return z


def apply_constraints(labels: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """Enforce CelebA's logical rules on every row; ``margin`` breaks ties between exclusives."""
    out = labels.astype(bool)
    col = ATTRIBUTE_INDEX
    male = out[:, col["Male"]]
    out[np.ix_(~male, _columns(MALE_ONLY))] = False
    out[np.ix_(male, _columns(FEMALE_ONLY))] = False
    bald = out[:, col["Bald"]]
    out[np.ix_(bald, _columns(HAIR_COLOURS + ("Bangs", "Straight_Hair", "Wavy_Hair")))] = False
    for group in (HAIR_COLOURS, ("Straight_Hair", "Wavy_Hair")):
        cols = _columns(group)
        scores = np.where(out[:, cols], margin[:, cols], -np.inf)
        keep = np.zeros_like(out[:, cols])
        keep[np.arange(len(out)), scores.argmax(axis=1)] = True
        out[:, cols] &= keep
    out[:, col["No_Beard"]] &= ~out[:, _columns(BEARDS)].any(axis=1)
    out[~male, col["No_Beard"]] = True
    return out.astype(np.int8)


def _normal_quantile(p: np.ndarray) -> np.ndarray:
    """Return the standard normal quantiles of probabilities ``p``."""
    return np.array([statistics.NormalDist().inv_cdf(float(x)) for x in np.ravel(p)])


@functools.lru_cache(maxsize=1)
def calibrated_thresholds(rows: int = 20000, rounds: int = 4) -> np.ndarray:
    """Return latent thresholds whose labels, after the rules, match the target rates.

    The rules only remove positives (e.g. a second hair colour), so the raw thresholds
    are raised until the constrained rates meet CelebA's on a fixed calibration sample.
    """
    model = load_label_model()
    z = sample_latent(np.arange(rows), np.random.default_rng(12345), model)
    target = _normal_quantile(model.rates)
    threshold = target.copy()
    for _ in range(rounds):
        margin = threshold - z
        rates = apply_constraints(margin > 0, margin).mean(axis=0).clip(0.5 / rows, 1 - 0.5 / rows)
        threshold += target - _normal_quantile(rates)
    return threshold


def sample_labels(identity: np.ndarray, seed: int = 0) -> np.ndarray:
    """Return (n, 40) int8 labels for images of the given identities, constraints applied."""
    rng = np.random.default_rng([seed, 7])
    z = sample_latent(np.asarray(identity), rng, load_label_model())
    margin = calibrated_thresholds() - z
    return apply_constraints(margin > 0, margin)


def identity_sizes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Return images per identity (2 to 6 each) summing to ``n``."""
    sizes = rng.integers(2, 7, size=n // 2 + 1)
    cum = np.cumsum(sizes)
    last = int(np.searchsorted(cum, n))
    sizes = sizes[: last + 1].copy()
    sizes[-1] -= int(cum[last] - n)
    return sizes


def make_plan(n: int, seed: int = 0) -> Plan:
    """Decide identities, contiguous train/val/test blocks (by identity) and labels."""
    if n < MIN_IMAGES:
        raise ConfigError(f"synthetic dataset size n={n}: expected at least {MIN_IMAGES} so each split holds faces")
    rng = np.random.default_rng([seed, 3])
    sizes = identity_sizes(n, rng)
    identity = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    bounds = np.cumsum(SPLIT_FRACTIONS)[:-1] * n
    split = np.searchsorted(bounds, starts, side="right").astype(np.int8)
    # Images of one split are shuffled, as in CelebA, where a person's photos are not adjacent.
    order = np.concatenate([rng.permutation(np.flatnonzero(split == k)) for k in range(len(SPLITS))])
    identity, split = identity[order], split[order]
    return Plan(sample_labels(identity, seed), identity, split)


# ---------------------------------------------------------------------------------------
# Drawing. Coordinates are in the 178x218 aligned frame; every cue stays several pixels
# wide so it survives the resize to 64-96 px that the models use.

HAIR_RGB = {
    "Black_Hair": (28, 24, 22), "Blond_Hair": (226, 192, 112), "Brown_Hair": (112, 70, 40),
    "Gray_Hair": (172, 172, 168),
}
# Hair of none of the four labelled colours (auburn, red, dark blue-black dye, ...).
OTHER_HAIR_RGB = ((160, 62, 30), (196, 104, 60), (60, 48, 80))
DARK_SKIN, LIGHT_SKIN, PALE_SKIN = np.array((92, 58, 40)), np.array((232, 194, 166)), np.array((250, 232, 226))


@dataclass(frozen=True)
class Face:
    """Identity geometry and colours, shared by all images of one person."""

    half_width: float
    half_height: float
    eye_gap: float
    eye_y: float
    mouth_width: float
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_length: float
    eye_colour: tuple[int, int, int]


def _has(labels: np.ndarray, name: str) -> bool:
    """Return whether the attribute is positive in a label row."""
    return bool(labels[ATTRIBUTE_INDEX[name]])


def _shade(rgb: tuple[int, ...], factor: float) -> tuple[int, int, int]:
    """Scale a colour's brightness."""
    return tuple(min(255, max(0, int(c * factor))) for c in rgb)


def _mix(a: tuple[int, ...] | np.ndarray, b: tuple[int, ...] | np.ndarray, t: float) -> tuple[int, int, int]:
    """Blend two colours, ``t`` = 0 gives ``a``."""
    return tuple(int(round((1 - t) * x + t * y)) for x, y in zip(a, b))


def identity_face(labels: np.ndarray, identity: int, seed: int) -> Face:
    """Draw the stable geometry and colours of one identity."""
    rng = np.random.default_rng([seed, 11, identity])
    chubby, oval = _has(labels, "Chubby"), _has(labels, "Oval_Face")
    male = _has(labels, "Male")
    # An oval face is long and narrow (height about 1.8 times the width), others are round.
    half_width = rng.uniform(36, 41) + (9 if chubby else 0) + (2 if male else 0) - (5 if oval else 0)
    half_height = rng.uniform(47, 51) + (14 if oval else 0) - (3 if chubby else 0)
    if _has(labels, "Pale_Skin"):
        skin = PALE_SKIN + rng.integers(-6, 5, 3)
    else:
        skin = np.array(_mix(DARK_SKIN, LIGHT_SKIN, rng.uniform(0.0, 0.9) ** 0.7))
    if not _has(labels, "Young"):
        skin = np.array(_mix(skin, np.full(3, skin.mean() * 0.92), 0.45))  # older skin is greyer
    colours = [HAIR_RGB[c] for c in HAIR_COLOURS if _has(labels, c)]
    hair = colours[0] if colours else OTHER_HAIR_RGB[rng.integers(len(OTHER_HAIR_RGB))]
    return Face(
        half_width=half_width, half_height=half_height, eye_gap=rng.uniform(17, 21),
        eye_y=rng.uniform(-8, -4), mouth_width=rng.uniform(13, 17),
        skin=tuple(int(c) for c in np.clip(skin, 0, 255)),
        hair=_shade(hair, rng.uniform(0.9, 1.1)),
        hair_length=rng.uniform(55, 80) if not _has(labels, "Male") else rng.uniform(0, 8),
        eye_colour=tuple(int(c) for c in rng.choice([(60, 40, 25), (40, 80, 120), (70, 100, 60)])),
    )


@dataclass
class Sketch:
    """One image being drawn: the canvas, the face's anchor points and its random source."""

    image: Image.Image
    draw: ImageDraw.ImageDraw
    labels: np.ndarray
    face: Face
    rng: np.random.Generator  # nuisance only (background, pose, light), never a cue
    cue_seed: tuple[int, int, int]
    cx: float
    cy: float
    dx: float  # sideways shift of the inner features: a little head turn
    hair_texture: Image.Image | None = None

    def has(self, name: str) -> bool:
        """Return whether the image carries the attribute."""
        return _has(self.labels, name)

    def cue(self, name: str) -> np.random.Generator:
        """Return the random source of one cue, so switching a cue leaves the others alone."""
        return np.random.default_rng([*self.cue_seed, ATTRIBUTE_INDEX[name]])

    def strength(self, name: str) -> float:
        """Return the random strength of a cue, within ``STRENGTH_RANGE``."""
        return float(self.cue(name).uniform(*STRENGTH_RANGE))

    @property
    def eye_y(self) -> float:
        """Height of the eye centres."""
        return self.cy + self.face.eye_y

    @property
    def mouth_y(self) -> float:
        """Height of the line between the lips."""
        return self.cy + 31 + (2 if self.has("Big_Lips") else 0)

    def jaw_polygon(self, top: float) -> list[tuple[float, float]]:
        """Return the outline of the face ellipse below height ``top``."""
        a, b = self.face.half_width, self.face.half_height
        start = math.asin(max(-1.0, min(1.0, (top - self.cy) / b)))
        angles = np.linspace(start, math.pi - start, 24)
        return [(self.cx + a * math.cos(t), self.cy + b * math.sin(t)) for t in angles]


def _hairline(sk: Sketch, x: np.ndarray) -> np.ndarray:
    """Return the lower edge of the hair over the forehead at positions ``x``."""
    b, u = sk.face.half_height, (x - sk.cx) / sk.face.half_width
    if sk.has("Bangs"):
        # A fringe covering the whole forehead down to the brows, cut in a jagged line.
        return sk.eye_y - 15 + 2 * np.sign(np.sin(x * 0.9))
    if sk.has("Receding_Hairline"):
        # A high forehead and bare temples: an M-shaped line reaching above the face.
        return sk.cy - 0.97 * b - 30 * sk.strength("Receding_Hairline") * np.abs(u)
    return sk.cy - 0.82 * b + 16 * u**2


def _hair_texture(sk: Sketch) -> Image.Image:
    """Return a full-size image of the hair colour, with straight or wavy strands.

    Strands are 4 px wide and 11 px apart, and waves 26 px long, so both survive the resize
    to 64 px; light hair gets dark strands and dark hair light ones.
    """
    hair = sk.face.hair
    texture = Image.new("RGB", sk.image.size, hair)
    if not (sk.has("Straight_Hair") or sk.has("Wavy_Hair")):
        return texture
    draw = ImageDraw.Draw(texture)
    strand = _mix(hair, (0, 0, 0), 0.5) if sum(hair) > 300 else _mix(hair, (255, 255, 255), 0.4)
    ys = np.arange(-4, HEIGHT + 8, 2.0)
    amplitude = 5.5 * sk.strength("Wavy_Hair") if sk.has("Wavy_Hair") else 0.0
    wave = amplitude * np.sin(ys * (2 * math.pi / 26))
    for x0 in np.arange(3, WIDTH, 11.0):
        if amplitude:
            draw.line(np.column_stack([x0 + wave, ys]).ravel().tolist(), fill=strand, width=4)
        else:
            draw.line([(x0, 0), (x0, HEIGHT)], fill=strand, width=4)
    return texture


def _curl_outline(sk: Sketch, draw: ImageDraw.ImageDraw) -> None:
    """Add round curls along the outside of the hair mask: wavy hair has a bumpy outline."""
    a, b, cx, cy = sk.face.half_width, sk.face.half_height, sk.cx, sk.cy
    r = 5 + 3 * sk.strength("Wavy_Hair")
    points = [(cx + (a + 6) * math.cos(t), cy - 0.2 * b - (0.8 * b + 11) * math.sin(t))
              for t in np.linspace(0.15, math.pi - 0.15, 9)]
    if sk.face.hair_length > 10:
        for y in np.arange(cy - 0.3 * b, cy + sk.face.hair_length - 6, 13.0):
            points += [(cx - a - 8, y), (cx + a + 8, y)]
    for x, y in points:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=255)


def draw_hair(sk: Sketch, front: bool) -> None:
    """Paint the hair behind the face (``front=False``) or over the forehead."""
    if sk.has("Bald"):
        return
    a, b, cx, cy = sk.face.half_width, sk.face.half_height, sk.cx, sk.cy
    mask = Image.new("L", sk.image.size, 0)
    draw = ImageDraw.Draw(mask)
    if front:
        xs = np.linspace(cx - a - 4, cx + a + 4, 40)
        edge = list(zip(xs, _hairline(sk, xs)))
        draw.polygon([(cx - a - 4, 0), *edge, (cx + a + 4, 0)], fill=255)
        face = Image.new("L", sk.image.size, 0)
        ImageDraw.Draw(face).ellipse((cx - a - 2, cy - b - 2, cx + a + 2, cy + b + 2), fill=255)
        mask = ImageChops.darker(mask, face)
    else:
        draw.ellipse((cx - a - 7, cy - b - 12, cx + a + 7, cy + 0.4 * b), fill=255)
        if sk.face.hair_length > 10:
            draw.rounded_rectangle((cx - a - 9, cy - 0.7 * b, cx + a + 9, cy + sk.face.hair_length), 14, fill=255)
        if sk.has("Wavy_Hair"):
            _curl_outline(sk, draw)
    if sk.hair_texture is None:
        sk.hair_texture = _hair_texture(sk)
    sk.image.paste(sk.hair_texture, mask=mask)
    if front and sk.has("Bangs"):
        # The fringe casts a dark shadow on the brow line, so it shows even on a skin-toned hair.
        xs = np.linspace(cx - 0.75 * a, cx + 0.75 * a, 16)
        sk.draw.line(list(zip(xs, _hairline(sk, xs) + 1.5)), fill=_shade(sk.face.skin, 0.55), width=3)


def draw_body(sk: Sketch) -> None:
    """Paint the shoulders in a random shirt colour."""
    b = sk.face.half_height
    shirt = tuple(int(c) for c in sk.rng.integers(20, 236, 3))
    sk.draw.ellipse((sk.cx - 85, sk.cy + b + 22, sk.cx + 85, sk.cy + b + 150), fill=shirt)


def draw_head(sk: Sketch) -> None:
    """Paint neck, ears and the face shape (male jaw, chubby cheeks, double chin)."""
    d, f, cx, cy = sk.draw, sk.face, sk.cx, sk.cy
    a, b = f.half_width, f.half_height
    d.rectangle((cx - 0.5 * a, cy + 0.5 * b, cx + 0.5 * a, cy + b + 34), fill=_shade(f.skin, 0.9))
    for side in (-1, 1):
        d.ellipse((cx + side * a - 6, cy - 14, cx + side * a + 6, cy + 12), fill=_shade(f.skin, 0.95))
    d.ellipse((cx - a, cy - b, cx + a, cy + b), fill=f.skin)
    if sk.has("Male") and not sk.has("Oval_Face"):
        # A square jaw; an oval face keeps its long tapering chin.
        d.rounded_rectangle((cx - 0.86 * a, cy, cx + 0.86 * a, cy + 0.93 * b), 14, fill=f.skin)
    if sk.has("Chubby"):
        for side in (-1, 1):
            d.ellipse((cx + side * (a - 6) - 15, cy - 4, cx + side * (a - 6) + 15, cy + 32), fill=f.skin)
    if sk.has("Double_Chin"):
        # A second chin below the jaw, with a dark crease between the two.
        dark = _shade(f.skin, 0.75 - 0.2 * sk.strength("Double_Chin"))
        d.ellipse((cx - 27, cy + b - 8, cx + 27, cy + b + 15), fill=_shade(f.skin, 0.95))
        d.arc((cx - 27, cy + b - 8, cx + 27, cy + b + 15), 15, 165, fill=dark, width=3)
        d.arc((cx - 24, cy + b - 18, cx + 24, cy + b + 1), 20, 160, fill=dark, width=4)
    if sk.has("Bald"):
        d.ellipse((cx - 14, cy - b + 6, cx + 4, cy - b + 14), fill=_shade(f.skin, 1.15))


def _draw_eye(sk: Sketch, ex: float, y: float, side: int) -> None:
    """Paint one eye: a dark slit when narrow, else a round white eye with a dark iris."""
    d, f = sk.draw, sk.face
    ink = (20, 15, 15)
    makeup = sk.has("Heavy_Makeup")
    if sk.has("Narrow_Eyes"):
        h = 2.6 - 1.6 * sk.strength("Narrow_Eyes")
        d.ellipse((ex - 10, y - h, ex + 10, y + h), fill=ink)
        d.line([(ex - 9, y - 4), (ex + 9, y - 4)], fill=_shade(f.skin, 0.7), width=2)  # the heavy lid
    else:
        d.ellipse((ex - 9, y - 6, ex + 9, y + 6), fill=(250, 250, 246), outline=ink, width=1)
        d.ellipse((ex - 4.5, y - 4.5, ex + 4.5, y + 4.5), fill=f.eye_colour)
        d.ellipse((ex - 2, y - 2, ex + 2, y + 2), fill=(8, 6, 6))
        d.arc((ex - 9, y - 6, ex + 9, y + 6), 180, 360, fill=ink, width=4 if makeup else 2)
    if makeup:
        d.line([(ex + side * 8, y - 2), (ex + side * 15, y - 6)], fill=ink, width=3)  # a winged liner


def draw_eyes(sk: Sketch) -> None:
    """Paint eyebrows (arched, bushy), eyes (narrow), eye make-up and bags under the eyes."""
    d, f, y = sk.draw, sk.face, sk.eye_y
    brow = _shade(f.hair, 0.45) if not sk.has("Bald") else (70, 52, 40)
    for side in (-1, 1):
        ex = sk.cx + sk.dx + side * f.eye_gap
        if sk.has("Heavy_Makeup"):
            r = sk.cue("Heavy_Makeup")
            alpha = int(255 * r.uniform(*STRENGTH_RANGE))
            shadow = tuple(int(c) for c in r.choice([(120, 50, 150), (50, 90, 170), (150, 80, 40)]))
            d.ellipse((ex - 13, y - 13, ex + 13, y + 3), fill=(*shadow, alpha))
        if sk.has("Bags_Under_Eyes"):
            # Puffy dark crescents under the eyes.
            dark = _shade(f.skin, 0.55 - 0.2 * sk.strength("Bags_Under_Eyes"))
            d.ellipse((ex - 12, y + 1, ex + 12, y + 16), fill=_shade(f.skin, 0.72))
            d.arc((ex - 12, y + 1, ex + 12, y + 16), 15, 165, fill=dark, width=4)
        _draw_eye(sk, ex, y, side)
        by = y - 14
        width = int(round(6 + 5 * sk.strength("Bushy_Eyebrows"))) if sk.has("Bushy_Eyebrows") else 4
        inner, outer = ex - side * 11, ex + side * 12
        if sk.has("Arched_Eyebrows"):
            lift = 4 + 5 * sk.strength("Arched_Eyebrows")
            points = [(inner, by + 1), (ex + side * 3, by - lift), (outer, by + 3)]
        else:
            points = [(inner, by), (outer, by)]
        d.line(points, fill=brow, width=width, joint="curve")


def draw_nose(sk: Sketch) -> None:
    """Paint the nose: big (wide and long), pointy (a long dark point) or a round bulb."""
    d, f, x = sk.draw, sk.face, sk.cx + 1.5 * sk.dx
    big = sk.has("Big_Nose")
    half = 11 + 8 * sk.strength("Big_Nose") if big else 5
    tip, top = sk.cy + (19 if big else 11), sk.eye_y + 4
    bridge, dark = _shade(f.skin, 0.84), _shade(f.skin, 0.45)
    d.polygon([(x - 2, top), (x + 2, top), (x + half, tip), (x - half, tip)], fill=bridge)
    if sk.has("Pointy_Nose"):
        point = tip + 11 + 7 * sk.strength("Pointy_Nose")
        d.polygon([(x - half - 3, tip - 3), (x + half + 3, tip - 3), (x, point)], fill=_shade(f.skin, 0.25))
        for side in (-1, 1):
            d.line([(x + side * 2, top), (x + side * half, tip - 1)], fill=_shade(f.skin, 0.65), width=2)
    else:
        # A light round bulb, unlike the dark point of a pointy nose.
        d.ellipse((x - half - 2, tip - 8, x + half + 2, tip + 4), fill=_shade(f.skin, 0.95), outline=dark, width=2)
    for side in (-1, 1):
        nx, r = x + side * 0.55 * half, 4 if big else 2.5
        d.ellipse((nx - r, tip - r + 1, nx + r, tip + r - 1), fill=_shade(f.skin, 0.35))


def _lip_colour(sk: Sketch) -> tuple[int, int, int]:
    """Return red lipstick of random strength, or the natural lip tone."""
    if sk.has("Wearing_Lipstick"):
        return _mix(sk.face.skin, (200, 20, 50), 0.55 + 0.45 * sk.strength("Wearing_Lipstick"))
    return _mix(sk.face.skin, (150, 60, 70), 0.5)


def draw_mouth(sk: Sketch) -> None:
    """Paint lips (big, lipstick), a smile and an open mouth."""
    d, x, y = sk.draw, sk.cx + sk.dx, sk.mouth_y
    big = sk.has("Big_Lips")
    w = sk.face.mouth_width + (3 if sk.has("Smiling") else 0) + (5 if big else 0)
    lips, t = _lip_colour(sk), (round(7 + 4 * sk.strength("Big_Lips")) if big else 3)
    gap = 5 if sk.has("Mouth_Slightly_Open") else 0
    if sk.has("Smiling"):
        box = (x - w, y - 10, x + w, y + 6 + gap + t)
        d.chord(box, 0, 180, fill=lips)
        inner = (x - w + t, y - 10, x + w - t, y + 5 + gap)
        d.chord(inner, 0, 180, fill=(35, 10, 15) if gap else (250, 250, 245))
        if gap:
            d.chord((x - w + t, y - 10, x + w - t, y), 0, 180, fill=(250, 250, 245))
        d.line([(x - w, y - 2), (x + w, y - 2)], fill=lips, width=t)
    else:
        d.rounded_rectangle((x - w, y - t - gap / 2, x + w, y + t + gap / 2), t, fill=lips)
        d.rounded_rectangle((x - w + 3, y - gap / 2 - 1, x + w - 3, y + gap / 2 + 1), 2, fill=(35, 10, 15))


def draw_cheeks_and_age(sk: Sketch) -> None:
    """Paint high cheekbones, rosy cheeks and, on older faces, wrinkles."""
    d, f, cx, cy = sk.draw, sk.face, sk.cx, sk.cy
    a = f.half_width
    for side in (-1, 1):
        if sk.has("High_Cheekbones"):
            # A bright cheekbone over a dark hollow slanting down to the mouth.
            hx = cx + side * (a - 12)
            d.ellipse((hx - 10, cy - 1, hx + 10, cy + 9),
                      fill=(255, 255, 255, int(190 * sk.strength("High_Cheekbones"))))
            d.line([(cx + side * (a - 3), cy + 8), (cx + side * (f.eye_gap - 3), cy + 24)],
                   fill=_shade(f.skin, 0.6), width=4)
        if sk.has("Rosy_Cheeks"):
            rx = cx + sk.dx + side * (f.eye_gap + 3)
            d.ellipse((rx - 12, cy + 6, rx + 12, cy + 23), fill=(235, 60, 80, int(235 * sk.strength("Rosy_Cheeks"))))
    if not sk.has("Young"):
        _draw_wrinkles(sk)


def _draw_wrinkles(sk: Sketch) -> None:
    """Paint an older face's lines: forehead, smile folds, mouth corners and crow's feet."""
    d, f, cx, y = sk.draw, sk.face, sk.cx + sk.dx, sk.eye_y
    line = _shade(f.skin, 0.6 - 0.25 * sk.strength("Young"))
    for k in range(3):
        yy = y - 22 - 6 * k
        d.line([(cx - 20, yy + 2), (cx, yy), (cx + 20, yy + 2)], fill=line, width=4, joint="curve")
    for side in (-1, 1):
        d.line([(cx + side * 9, sk.cy + 12), (cx + side * (f.mouth_width + 6), sk.cy + 34)], fill=line, width=4)
        mx = cx + side * (f.mouth_width + 2)
        d.line([(mx, sk.mouth_y + 5), (mx + side * 2, sk.mouth_y + 16)], fill=line, width=3)
        ex = cx + side * (f.eye_gap + 11)
        for dy in (-4, 3):
            d.line([(ex, y), (ex + side * 7, y + dy)], fill=line, width=3)


def draw_beard(sk: Sketch) -> None:
    """Paint stubble, sideburns, a full beard, a goatee and a moustache."""
    d, f, cx, y = sk.draw, sk.face, sk.cx, sk.mouth_y
    colour = f.hair if not sk.has("Bald") else (60, 45, 35)
    if sk.has("5_o_Clock_Shadow"):
        d.polygon(sk.jaw_polygon(sk.cy + 12), fill=(40, 40, 50, int(110 * sk.strength("5_o_Clock_Shadow"))))
    if sk.has("Sideburns"):
        for side in (-1, 1):
            x0 = cx + side * f.half_width
            d.rectangle((min(x0, x0 - side * 9), sk.eye_y - 6, max(x0, x0 - side * 9), sk.cy + 22), fill=colour)
    specific = any(sk.has(name) for name in BEARDS)
    if not sk.has("No_Beard") and not specific:
        d.polygon(sk.jaw_polygon(y - 8), fill=colour)
    if sk.has("Goatee"):
        d.ellipse((cx + sk.dx - 11, y + 5, cx + sk.dx + 11, sk.cy + f.half_height + 2), fill=colour)
    if sk.has("Mustache"):
        w, dark = f.mouth_width + 3, _shade(colour, 0.6)  # darker than the hair, so it shows on any skin
        d.polygon([(cx + sk.dx - w, y - 3), (cx + sk.dx, y - 11), (cx + sk.dx + w, y - 3),
                   (cx + sk.dx, y - 6)], fill=dark)
        d.line([(cx + sk.dx - w, y - 5), (cx + sk.dx + w, y - 5)], fill=dark, width=5)


def draw_jewellery(sk: Sketch) -> None:
    """Paint earrings, a necklace and a necktie."""
    d, f, cx, cy = sk.draw, sk.face, sk.cx, sk.cy
    bottom = cy + f.half_height
    if sk.has("Wearing_Necktie"):
        d.polygon([(cx - 22, bottom + 20), (cx, bottom + 34), (cx + 22, bottom + 20), (cx, bottom + 28)],
                  fill=(245, 245, 245))
        ties = [(170, 20, 30), (20, 40, 130), (30, 30, 30), (20, 110, 50)]
        tie = tuple(int(c) for c in sk.cue("Wearing_Necktie").choice(ties))
        d.polygon([(cx - 5, bottom + 26), (cx + 5, bottom + 26), (cx + 9, HEIGHT + 30), (cx - 9, HEIGHT + 30)],
                  fill=tie)
        d.rectangle((cx - 6, bottom + 24, cx + 6, bottom + 32), fill=_shade(tie, 0.7))
    if sk.has("Wearing_Necklace"):
        metal = (240, 205, 60) if sk.cue("Wearing_Necklace").random() < 0.5 else (235, 235, 240)
        box = (cx - 0.55 * f.half_width - 6, bottom - 8, cx + 0.55 * f.half_width + 6, bottom + 26)
        d.arc(box, 15, 165, fill=metal, width=3)
        d.ellipse((cx - 4, bottom + 20, cx + 4, bottom + 29), fill=metal)
    if sk.has("Wearing_Earrings"):
        r = sk.cue("Wearing_Earrings")
        metal = (245, 200, 40) if r.random() < 0.5 else (230, 230, 240)
        r = 4 + 4 * r.uniform(*STRENGTH_RANGE)
        for side in (-1, 1):
            ex, ey = cx + side * (f.half_width + 1), cy + 18
            d.line([(ex, cy + 8), (ex, ey)], fill=metal, width=3)
            d.ellipse((ex - r, ey - r, ex + r, ey + r), fill=metal)


def draw_hat_and_glasses(sk: Sketch) -> None:
    """Paint eyeglasses (thick dark frames, sometimes sunglasses) and a hat over the top."""
    d, f, cx, cy, y = sk.draw, sk.face, sk.cx, sk.cy, sk.eye_y
    if sk.has("Eyeglasses"):
        r = sk.cue("Eyeglasses")
        frame = tuple(int(c) for c in r.choice([(15, 15, 15), (60, 35, 20), (20, 30, 80)]))
        width = int(round(3 + 2 * r.uniform(0.6, 1.0)))
        lens = (20, 20, 30, 230) if r.random() < 0.25 else None
        for side in (-1, 1):
            ex = cx + sk.dx + side * f.eye_gap
            d.rounded_rectangle((ex - 11, y - 8, ex + 11, y + 8), 4, fill=lens, outline=frame, width=width)
            d.line([(ex + side * 11, y - 4), (cx + side * f.half_width, y - 2)], fill=frame, width=width)
        d.line([(cx + sk.dx - f.eye_gap + 11, y - 2), (cx + sk.dx + f.eye_gap - 11, y - 2)], fill=frame, width=width)
    if sk.has("Wearing_Hat"):
        r = sk.cue("Wearing_Hat")
        colour = tuple(int(c) for c in r.integers(0, 256, 3))
        brim = cy - 0.5 * f.half_height + r.uniform(-4, 4)
        a = f.half_width
        top = cy - f.half_height - 22 - 12 * r.uniform(0.6, 1.0)
        d.chord((cx - a - 4, top, cx + a + 4, brim + 10), 180, 360, fill=colour)
        d.rectangle((cx - a - 4, (top + brim + 10) / 2 - 1, cx + a + 4, brim), fill=colour)
        d.rounded_rectangle((cx - a - 14, brim - 3, cx + a + 14, brim + 5), 3, fill=_shade(colour, 0.6))


def _background(rng: np.random.Generator) -> Image.Image:
    """Return a plain or cluttered background in a random colour."""
    base = rng.integers(30, 226, 3)
    image = Image.new("RGB", (WIDTH, HEIGHT), tuple(int(c) for c in base))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 4))):
        colour = tuple(int(c) for c in np.clip(base + rng.integers(-60, 61, 3), 0, 255))
        x, y, r = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT), rng.uniform(15, 60)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return image


def _pose(image: Image.Image, rng: np.random.Generator, fill: tuple[int, ...]) -> Image.Image:
    """Apply a small random rotation, scale and shift about the face centre."""
    angle, scale = math.radians(rng.uniform(-8, 8)), rng.uniform(0.92, 1.08)
    shift_x, shift_y = rng.uniform(-7, 7), rng.uniform(-6, 6)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    cx, cy = WIDTH / 2, HEIGHT / 2
    # The affine transform maps output pixels back to input pixels.
    c = cx - cos * (cx + shift_x) - sin * (cy + shift_y)
    f = cy + sin * (cx + shift_x) - cos * (cy + shift_y)
    return image.transform(image.size, Image.AFFINE, (cos, sin, c, -sin, cos, f), Image.BILINEAR, fillcolor=fill)


_YY, _XX = np.mgrid[-1:1:HEIGHT * 1j, -1:1:WIDTH * 1j].astype(np.float32)


def _finish(image: Image.Image, rng: np.random.Generator, blurry: bool) -> Image.Image:
    """Add lighting (brightness and a gradient), blur if labelled Blurry, and sensor noise."""
    if blurry:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(2.0, 3.2)))
    pixels = np.asarray(image, dtype=np.float32)
    direction = rng.uniform(0, 2 * math.pi)
    gradient = np.float32(rng.uniform(0, 0.25))
    light = np.float32(rng.uniform(0.8, 1.15)) + gradient * (
        np.float32(math.cos(direction)) * _XX + np.float32(math.sin(direction)) * _YY)
    # Grey (luminance) noise: one value per pixel, shared by the three channels.
    noise = rng.standard_normal((HEIGHT, WIDTH, 1), dtype=np.float32) * np.float32(rng.uniform(0, 6))
    pixels = pixels * light[..., None] + noise
    return Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8))


def render_face(labels: np.ndarray, identity: int, index: int, seed: int = 0) -> Image.Image:
    """Draw one 178x218 RGB face carrying ``labels`` (40 values, 0/1)."""
    labels = np.asarray(labels)
    face = identity_face(labels, identity, seed)
    rng = np.random.default_rng([seed, 13, index])
    image = _background(rng)
    fill = image.getpixel((0, 0))
    sketch = Sketch(image, ImageDraw.Draw(image, "RGBA"), labels, face, rng, (seed, 17, index),
                    cx=WIDTH / 2, cy=108.0, dx=float(rng.uniform(-3, 3)))
    draw_body(sketch)
    draw_hair(sketch, front=False)
    draw_head(sketch)
    draw_cheeks_and_age(sketch)
    draw_beard(sketch)
    draw_hair(sketch, front=True)
    for step in (draw_eyes, draw_nose, draw_mouth, draw_jewellery, draw_hat_and_glasses):
        step(sketch)
    return _finish(_pose(image, rng, fill), rng, _has(labels, "Blurry"))


# ---------------------------------------------------------------------------------------
# Writing the CelebA root.


def _attr_text(labels: np.ndarray) -> str:
    """Format ``list_attr_celeba.txt``: count, names, rows of -1/1 right-aligned in width 2."""
    lines = [str(len(labels)), " ".join(ATTRIBUTES) + " "]
    lines += [_image_id(i) + "".join(f" {v:2d}" for v in row) for i, row in enumerate(2 * labels - 1)]
    return "\n".join(lines) + "\n"


def _image_id(index: int) -> str:
    """Return the file name of the image at 0-based ``index`` (``000001.jpg`` first)."""
    return f"{index + 1:06d}.jpg"


def _column_text(values: np.ndarray) -> str:
    """Format a two-column file such as ``list_eval_partition.txt``."""
    return "".join(f"{_image_id(i)} {int(v)}\n" for i, v in enumerate(values))


def _render_task(task: tuple[str, bytes, int, int, int]) -> None:
    """Worker: draw one face and save it as a JPEG (the path is inside the temp folder)."""
    path, labels, identity, index, seed = task
    image = render_face(np.frombuffer(labels, dtype=np.int8), identity, index, seed)
    image.save(path, "JPEG", quality=JPEG_QUALITY)


def _default_workers(n: int) -> int:
    """Use every core for big sets; small ones are faster without starting processes."""
    return 1 if n < 400 else max(1, min(os.cpu_count() or 1, 8))


def _render_all(folder: Path, plan: Plan, seed: int, workers: int, progress: bool) -> None:
    """Draw every image into ``folder/img_align_celeba`` with a pool of ``workers``."""
    from tqdm.auto import tqdm

    images = folder / "img_align_celeba"
    images.mkdir(parents=True)
    tasks = [(str(images / _image_id(i)), plan.labels[i].tobytes(), int(plan.identity[i]), i, seed)
             for i in range(len(plan.labels))]
    bar = tqdm(total=len(tasks), desc="Drawing synthetic faces", unit="img", disable=not progress)
    with bar:
        if workers <= 1:
            for task in tasks:
                _render_task(task)
                bar.update()
            return
        # Spawned workers import only this module, never a TensorFlow loaded by the caller.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_render_task, tasks, chunksize=16):
                bar.update()


def _marker(n: int, seed: int) -> dict:
    """Return the marker content that identifies a finished dataset."""
    return {"generator": "celebalib.synthetic", "version": GENERATOR_VERSION, "n": n, "seed": seed}


def _write_root(folder: Path, plan: Plan, seed: int) -> None:
    """Write the three annotation files and the marker into a finished temp folder."""
    write_text(folder / "list_attr_celeba.txt", _attr_text(plan.labels))
    write_text(folder / "list_eval_partition.txt", _column_text(plan.split))
    write_text(folder / "identity_CelebA.txt", _column_text(plan.identity + 1))
    write_json(folder / MARKER, _marker(len(plan.labels), seed))


def _replace(target: Path, fresh: Path) -> None:
    """Move the finished folder onto ``target``, replacing an earlier synthetic set only."""
    if target.exists():
        if not (target / MARKER).is_file():
            raise ConfigError(f"{target}: exists and is not a synthetic dataset; choose an empty or new folder")
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, trash / target.name)
        os.replace(fresh, target)
        shutil.rmtree(trash)
    else:
        os.replace(fresh, target)


def generate(out_dir: str | Path, n: int, seed: int = 0, *, workers: int | None = None,
             progress: bool = True) -> Path:
    """Write a flat CelebA root of ``n`` synthetic faces; byte-identical for one ``seed``.

    Everything is written into a temporary folder beside ``out_dir`` and renamed at the
    end, so a reader never sees a half-written dataset.
    """
    target = Path(out_dir).expanduser().resolve()
    plan = make_plan(int(n), seed)
    workers = _default_workers(n) if workers is None else int(workers)
    if workers < 1:
        raise ConfigError(f"workers={workers}: expected a positive number of processes")
    if target.exists() and not (target / MARKER).is_file():
        raise ConfigError(f"{target}: exists and is not a synthetic dataset; choose an empty or new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    fresh.chmod(0o755)  # mkdtemp makes a private folder; the dataset is meant to be shared.
    try:
        _render_all(fresh, plan, seed, workers, progress)
        _write_root(fresh, plan, seed)
        _replace(target, fresh)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return target


def is_generated(out_dir: str | Path, n: int, seed: int = 0) -> bool:
    """Return whether ``out_dir`` holds a finished synthetic set of this size and seed."""
    root = Path(out_dir)
    try:
        marker = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    complete = (root / "img_align_celeba" / _image_id(n - 1)).is_file()
    return marker == _marker(n, seed) and complete


def ensure_generated(out_dir: str | Path, n: int, seed: int = 0, progress: bool = True) -> Path:
    """Return ``out_dir``, generating the synthetic set first if it is missing or different."""
    if not is_generated(out_dir, n, seed):
        generate(out_dir, n, seed, progress=progress)
    return Path(out_dir).expanduser().resolve()


def _synth_command(args: argparse.Namespace) -> int:
    """Handle ``celebalib synth``."""
    if args.images < 1:
        raise ConfigError(f"--images {args.images}: expected a positive number of faces")
    root = generate(args.out, args.images, args.seed, workers=args.workers, progress=not args.quiet)
    print(f"wrote {args.images} synthetic faces (seed {args.seed}) to {root}")
    return 0


def configure_synth_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``synth`` command's arguments."""
    parser.epilog = "example:\n  python -m celebalib synth --out data/synthetic-1200 --images 1200"
    parser.add_argument("--out", type=Path, required=True, help="folder to write (a flat CelebA root)")
    parser.add_argument("--images", type=int, default=6000, help="number of faces")
    parser.add_argument("--n", dest="images", type=int, help=argparse.SUPPRESS)  # the old name
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_synth_command)
