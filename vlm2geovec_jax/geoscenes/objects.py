"""Where objects go: placement on the kind's own surface, clear of other boxes, in a color that
contrasts with the ground, and the scene's population of objects."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vlm2geovec_jax.geoscenes.shapes import shape_mask
from vlm2geovec_jax.geoscenes.tile import SceneObject, Tile
from vlm2geovec_jax.geoscenes.vocabulary import (COLORS, KIND_BY_NAME, KINDS, MIN_CONTRAST, POSITIONS,
                                                 SCENE_OBJECTS, SURFACES, Kind)

_ALLOWED = {k.name: np.isin(np.arange(len(SURFACES)), sorted(k.surfaces)) for k in KINDS}  # surface lookup


def position_name(xyxy: Sequence[float], size: int) -> str:
    """Which third of the tile (rows x columns) holds the box centre."""
    cx, cy = (xyxy[0] + xyxy[2]) / 2, (xyxy[1] + xyxy[3]) / 2
    return POSITIONS[min(2, int(3 * cy / size))][min(2, int(3 * cx / size))]


def contrasting_color(kind: Kind, ground: np.ndarray, rng: np.random.Generator, color: str | None) -> str | None:
    """A color of the kind (or the one asked for) far enough from the mean ground color, else None."""
    mean = ground.reshape(-1, 3).mean(0)
    options = [color] if color else [kind.colors[i] for i in rng.permutation(len(kind.colors))]
    for c in options:
        if np.linalg.norm(np.asarray(COLORS[c], np.float32) - mean) >= MIN_CONTRAST:
            return c
    return None


def place(tile: Tile, kind: Kind, rng: np.random.Generator, taken: list[tuple[int, int, int, int]],
          color: str | None = None, tries: int = 30) -> SceneObject | None:
    """One object of `kind` on its own surface, clear of `taken` boxes by 2 px, or None if none fits."""
    size, s = tile.size, tile.size / 112
    allowed = _ALLOWED[kind.name]
    ys, xs = np.nonzero(allowed[tile.surface])
    if not len(ys):
        return None
    for _ in range(tries):
        length = max(2, round(rng.integers(kind.length[0], kind.length[1] + 1) * s))
        width = max(2, round(rng.integers(kind.width[0], kind.width[1] + 1) * s))
        if kind.shape in ("plane", "tank"):  # square footprints: one size
            width = length
        orient = int(rng.integers(0, 4 if kind.shape == "plane" else 2))
        mask, shade = shape_mask(kind, length, width, orient)
        h, w = mask.shape
        k = rng.integers(len(ys))
        x1, y1 = int(xs[k]) - w // 2, int(ys[k]) - h // 2
        if not (0 <= x1 and 0 <= y1 and x1 + w <= size and y1 + h <= size):
            continue
        box = (x1, y1, x1 + w, y1 + h)
        if any(box[0] < b[2] + 2 and b[0] < box[2] + 2 and box[1] < b[3] + 2 and b[1] < box[3] + 2
               for b in taken):
            continue
        under = tile.surface[y1:y1 + h, x1:x1 + w][mask]
        if not allowed[under].all():
            continue
        picked = contrasting_color(kind, tile.background[y1:y1 + h, x1:x1 + w][mask], rng, color)
        if picked is None:
            continue
        size_word = _size_word(kind, length * width / (s * s))
        surface = int(np.bincount(under, minlength=len(SURFACES)).argmax())
        return SceneObject(kind, picked, box, mask, shade, surface, size_word, position_name(box, size))
    return None


def _size_word(kind: Kind, area: float) -> str:
    """'small' / 'large' for the lower / upper third of the kind's size range, else ''."""
    lo, hi = kind.length[0] * kind.width[0], kind.length[1] * kind.width[1]
    t = (area - lo) / max(hi - lo, 1)
    return "small" if t < 1 / 3 else "large" if t > 2 / 3 else ""


def populate(tile: Tile, kinds: Sequence[str], rng: np.random.Generator) -> list[SceneObject]:
    """The scene's objects, placed in a fixed kind order with counts drawn from SCENE_OBJECTS."""
    objects: list[SceneObject] = []
    for name, lo, hi in SCENE_OBJECTS[tile.scene]:
        want = int(rng.integers(lo, hi + 1))
        if name not in kinds:
            continue
        for _ in range(want):
            obj = place(tile, KIND_BY_NAME[name], rng, [o.xyxy for o in objects])
            if obj is not None:
                objects.append(obj)
    return objects
