"""What an object looks like: the pixel mask and shading of buildings, ships, planes, tanks and boxes."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from vlm2geovec_jax.geoscenes.vocabulary import Kind


def shape_mask(kind: Kind, length: int, width: int, orient: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask, shade) of one object, its mask touching all four sides of the returned array."""
    if kind.shape == "plane":
        mask, shade = _plane(length)
    elif kind.shape == "ship":
        mask, shade = _ship(length, width)
    elif kind.shape == "tank":
        mask, shade = _tank(length)
    else:
        mask = np.ones((width, length), bool)
        shade = np.ones(mask.shape, np.float32)
        if kind.shape == "building":
            shade[width // 2, 1:-1] = 0.8  # roof ridge
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]  # crop to the drawn pixels
    crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return np.rot90(mask[crop], orient).copy(), np.rot90(shade[crop], orient).copy()


def _draw(size: tuple[int, int], draw) -> np.ndarray:
    """Boolean mask of what `draw(ImageDraw)` paints on a blank (w, h) canvas."""
    img = Image.new("L", size, 0)
    draw(ImageDraw.Draw(img))
    return np.asarray(img) > 0


def _plane(span: int) -> tuple[np.ndarray, np.ndarray]:
    body = max(2, span // 6)
    c0 = (span - body) // 2

    def draw(d: ImageDraw.ImageDraw) -> None:
        d.rectangle([0, c0, span - 1, c0 + body - 1], fill=1)  # fuselage, nose at the right
        wing_x = int(span * 0.45)
        d.polygon([(wing_x, 0), (wing_x + body, 0), (wing_x + 2 * body, span - 1), (wing_x, span - 1)], fill=1)
        d.rectangle([0, c0 - body, body, c0 + 2 * body - 1], fill=1)  # tail
    mask = _draw((span, span), draw)
    return mask, np.ones(mask.shape, np.float32)


def _ship(length: int, beam: int) -> tuple[np.ndarray, np.ndarray]:
    bow = max(2, beam)

    def draw(d: ImageDraw.ImageDraw) -> None:
        d.polygon([(0, 0), (length - 1 - bow, 0), (length - 1, (beam - 1) / 2), (length - 1 - bow, beam - 1),
                   (0, beam - 1)], fill=1)
    mask = _draw((length, beam), draw)
    shade = np.ones(mask.shape, np.float32)
    shade[:, 1:max(2, length // 4)] = 0.85  # bridge
    return mask, shade


def _tank(diameter: int) -> tuple[np.ndarray, np.ndarray]:
    mask = _draw((diameter, diameter), lambda d: d.ellipse([0, 0, diameter - 1, diameter - 1], fill=1))
    inner = max(1, diameter // 5)
    rim = _draw((diameter, diameter), lambda d: d.ellipse([inner, inner, diameter - 1 - inner,
                                                             diameter - 1 - inner], outline=1, width=1))
    return mask, np.where(rim, 0.8, 1.0).astype(np.float32)  # the floating roof's rim
