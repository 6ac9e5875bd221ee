"""The ground of one tile: its scene class, roads and airfields drawn onto the land cover, and the
textured RGB background."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from vlm2geovec_jax.geoscenes.vocabulary import (AIRFIELD, DESERT, FARMLAND, FOREST, GRASSLAND, ICE,
                                                 LAND_COVERS, PALETTE, ROAD, SURFACES, URBAN, WATER)

_LAND = frozenset({DESERT, FOREST, FARMLAND, GRASSLAND, URBAN})


def choose_scene(fractions: np.ndarray, r: float, kinds: Sequence[str]) -> str:
    """Scene class from the land-cover shares and one uniform draw."""
    if fractions[URBAN] >= 0.35:
        return "industrial_area" if r < 0.4 and "storage tank" in kinds else "city"
    if 0.15 <= fractions[WATER] <= 0.85 and r < 0.6 and "ship" in kinds:
        return "harbor"
    flat = fractions[DESERT] + fractions[GRASSLAND] + fractions[FARMLAND]
    if fractions[WATER] + fractions[ICE] < 0.02 and flat > 0.7 and r < 0.25 and "plane" in kinds:
        return "airport"
    dominant = LAND_COVERS[int(np.argmax(fractions))]
    return {"water": "sea", "ice": "ice_field", "urban": "city"}.get(dominant, dominant)


def draw_roads(surface: np.ndarray, rng: np.random.Generator, scene: str) -> None:
    """Streets on urban ground and, sometimes, one straight road across the land, in place."""
    size, s = surface.shape[0], surface.shape[0] / 112
    if (surface == URBAN).mean() > 0.2:
        width, spacing = max(4, round(4 * s)), round(28 * s)
        off = rng.integers(0, spacing)
        lines = np.zeros(size, bool)
        for start in range(off, size, spacing):
            lines[start:start + width] = True
        urban = surface == URBAN
        surface[urban & (lines[:, None] | lines[None, :])] = ROAD
    land = np.isin(surface, list(_LAND))
    if land.mean() > 0.4 and rng.random() < (0.9 if scene == "airport" else 0.5):
        width = max(5, round(6 * s))
        start = rng.integers(0, size - width)
        band = np.zeros_like(land)
        if rng.random() < 0.5:
            band[start:start + width] = True
        else:
            band[:, start:start + width] = True
        surface[band & land] = ROAD


def draw_airfield(surface: np.ndarray, rng: np.random.Generator) -> None:
    """A runway across the tile and an apron beside it, in place."""
    size, s = surface.shape[0], surface.shape[0] / 112
    runway, apron_h, apron_w = round(10 * s), round(30 * s), round(64 * s)
    y = int(rng.integers(round(8 * s), size - runway - apron_h - round(4 * s)))
    x = int(rng.integers(0, size - apron_w))
    field = np.zeros(surface.shape, bool)
    field[y:y + runway] = True
    field[y + runway:y + runway + apron_h, x:x + apron_w] = True
    if rng.random() < 0.5:  # mirrored: the apron lies above the runway as often as below
        field = field[::-1]
    surface[field] = AIRFIELD


def render_ground(surface: np.ndarray, height: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Aerial RGB of the ground: palette color times a texture per land cover (parcels, blocks, dunes...)."""
    size = surface.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    s = size / 112
    blotch = _blotches(rng, size)
    grain = rng.standard_normal((size, size)).astype(np.float32)
    tex = np.zeros((len(SURFACES), size, size), np.float32)
    tex[WATER] = 0.03 * np.sin((xx + yy) / (2.5 * s)) - 6.0 * np.clip(-height, 0, 0.05)  # deeper is darker
    tex[ICE] = 0.03 * grain + 0.05 * blotch
    angle = rng.uniform(0, np.pi)
    dunes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / (3.0 * s) + 6 * blotch)
    tex[DESERT] = 0.07 * dunes + 0.02 * grain
    tex[FOREST] = 0.14 * grain + 0.25 * blotch
    tex[FARMLAND] = _parcels(rng, xx, yy, s) + 0.03 * grain
    tex[GRASSLAND] = 0.05 * grain + 0.15 * blotch
    blocks = rng.uniform(-0.12, 0.12, 64).astype(np.float32)
    block_id = ((xx // (14 * s)).astype(int) * 7 + (yy // (14 * s)).astype(int)) % 64
    tex[URBAN] = blocks[block_id] + 0.06 * grain
    tex[ROAD] = 0.03 * grain
    tex[AIRFIELD] = 0.02 * grain
    mult = np.take_along_axis(tex, surface[None].astype(np.int64), 0)[0]
    rgb = PALETTE[surface] * (1.0 + mult)[..., None]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _blotches(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth per-tile noise in about [-0.5, 0.5]: 8x8 random values, bicubic up-sampled."""
    small = Image.fromarray(rng.random((8, 8)).astype(np.float32) - 0.5, mode="F")
    return np.asarray(small.resize((size, size), Image.BICUBIC), np.float32)


def _parcels(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, s: float) -> np.ndarray:
    """Field parcels: a jittered grid of rectangles, each with its own tint and furrow direction."""
    pw, ph = rng.uniform(18, 34) * s, rng.uniform(14, 28) * s
    ox, oy = rng.uniform(0, pw), rng.uniform(0, ph)
    pid = ((xx + ox) // pw).astype(int) * 13 + ((yy + oy) // ph).astype(int)
    tint = rng.uniform(-0.22, 0.18, 97).astype(np.float32)[pid % 97]
    furrow = np.where(pid % 2 == 0, np.sin(xx * 2.1 / s), np.sin(yy * 2.1 / s)).astype(np.float32)
    return tint + 0.05 * furrow
