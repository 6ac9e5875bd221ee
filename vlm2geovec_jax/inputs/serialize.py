"""Boxes and coordinates written as prompt text; GeoChat's box strings read back.

Records keep pixel boxes of the original image and WGS84 degrees; this module is the ONE place where they
are normalised into text, so training and evaluation can never drift apart. The one grammar read back is
GeoChat's, because GeoChat-Bench ships its boxes in it: data/geochat_bench reads them with
``parse_geochat_boxes``, so a box is read exactly as the ``geochat`` format writes it.

Box formats (``BOX_FORMATS``, chosen by name):
- ``qwen`` (default), Qwen2-VL's grounding syntax on a 0-1000 grid:
  ``<|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>``
  (the object_ref part only when the box has a label; the angle is not written).
- ``geochat``, GeoChat's ``{<x1><y1><x2><y2>|<θ>}`` on a 0-100 grid with the angle in whole degrees
  (``|<θ>`` only when the box has an angle), preceded by ``<p>label</p> `` when labelled.
- ``pixel``, a JSON object in original-image pixels: ``{"bbox_2d": [x1, y1, x2, y2], "label": "car"}``
  (the shape Qwen2.5-VL answers in; ``label`` and ``angle`` keys only when set).

Quantisation: a coordinate v on an axis of S pixels becomes ``int(round(v / S * grid))`` clamped to
[0, grid], where ``round`` is Python's round-half-to-even on the float64 quotient (so 0.5 -> 0, 1.5 -> 2)
and grid is 1000, 100, or S itself for pixels. Parsing a GeoChat box maps n back to ``n * S / 100``, so a
round trip is exact to within half a grid step.

Coordinates: ``latitude 48.1370, longitude 11.5750``: named, latitude first, 4 decimals (1e-4 degree is
about 11 m of latitude, finer than the footprint of any image it describes; every further digit costs a
token, since Qwen2's tokenizer splits numbers into single digits). ``-0.0000`` is written ``0.0000``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.inputs.records import Box, Geo

ImageSize = tuple[int, int]
QWEN_GRID = 1000
GEOCHAT_GRID = 100
GEO_DECIMALS = 4


def quantise(v: float, size: float, grid: int) -> int:
    """Pixel coordinate -> integer on a 0..grid scale (round half to even, clamped)."""
    return min(grid, max(0, int(round(v / size * grid))))


def dequantise(n: int, size: float, grid: int) -> float:
    """Integer on a 0..grid scale -> pixel coordinate."""
    return n * size / grid  # product first: exact for integer sizes, so pixel boxes come back exact


def _grid_xyxy(box: Box, image_size: ImageSize, grid: int | None) -> tuple[int, int, int, int]:
    w, h = image_size
    x1, y1, x2, y2 = box.xyxy
    gx, gy = (w, h) if grid is None else (grid, grid)
    return quantise(x1, w, gx), quantise(y1, h, gy), quantise(x2, w, gx), quantise(y2, h, gy)


def _parsed_box(source: str, numbers: Sequence[int], image_size: ImageSize, label: str | None,
                angle: float | None) -> Box:
    """A Box from GeoChat grid integers, with faults naming the offending box string."""
    for n in numbers:
        if not 0 <= n <= GEOCHAT_GRID:
            raise RecordError(f"value {n} outside [0, {GEOCHAT_GRID}] in geochat box {source!r}")
    w, h = image_size
    x1, y1, x2, y2 = numbers
    xyxy = tuple(dequantise(n, size, GEOCHAT_GRID) for n, size in ((x1, w), (y1, h), (x2, w), (y2, h)))
    try:
        return Box(xyxy, label=label, angle=angle)
    except RecordError as err:
        raise RecordError(f"{err.reason} in geochat box {source!r}", field=err.field) from None


# ------------------------------------------------------------------------------------------------ qwen
def format_qwen_box(box: Box, image_size: ImageSize) -> str:
    x1, y1, x2, y2 = _grid_xyxy(box, image_size, QWEN_GRID)
    ref = f"<|object_ref_start|>{box.label}<|object_ref_end|>" if box.label else ""
    return f"{ref}<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"


# --------------------------------------------------------------------------------------------- geochat
_GEOCHAT_BOX = (r"\{\s*<(-?\d+)>\s*<(-?\d+)>\s*<(-?\d+)>\s*<(-?\d+)>\s*"
                r"(?:\|\s*(?:<(-?\d+)>|(-?\d+))\s*)?\}")
_GEOCHAT = re.compile(r"(?:<p>\s*(?P<label>.*?)\s*</p>\s*)?" + _GEOCHAT_BOX, re.DOTALL)


def format_geochat_box(box: Box, image_size: ImageSize) -> str:
    x1, y1, x2, y2 = _grid_xyxy(box, image_size, GEOCHAT_GRID)
    angle = "" if box.angle is None else f"|<{int(round(box.angle)) % 360}>"
    ref = f"<p>{box.label}</p> " if box.label else ""
    return f"{ref}{{<{x1}><{y1}><{x2}><{y2}>{angle}}}"


def _geochat_angle(source: str, bracketed: str | None, bare: str | None) -> float | None:
    raw = bracketed if bracketed is not None else bare
    if raw is None:
        return None
    angle = int(raw)
    if not 0 <= angle <= 360:
        raise RecordError(f"angle {angle} outside [0, 360] degrees in GeoChat box {source!r}")
    return float(angle % 360)


def _geochat_match(m: re.Match, groups: Sequence[str | None], image_size: ImageSize,
                   label: str | None) -> Box:
    source = m.group()
    values = [int(g) for g in groups[:4]]
    over = [v for v in values if v > GEOCHAT_GRID]
    if over:
        raise RecordError(f"value {over[0]} over 100 in GeoChat box {source!r}; GeoChat coordinates are "
                          "percentages of the image width and height (0-100)")
    angle = _geochat_angle(source, groups[4], groups[5])
    return _parsed_box(source, values, image_size, label, angle)


def parse_geochat_boxes(text: str, image_size: ImageSize) -> list[Box]:
    """Every GeoChat box in a text (``{..}{..}``, ``{..}, {..}``, ``|θ`` with or without brackets), in pixels,
    with ``<p>label</p>`` labels when present.

    Values over 100 and angles over 360 occur in the real GeoChat data; they raise RecordError, as does a
    box that is empty after quantisation. An angle of exactly 360 is read as 0.
    """
    return [_geochat_match(m, m.groups()[1:], image_size, m.group("label") or None)
            for m in _GEOCHAT.finditer(text)]


# ----------------------------------------------------------------------------------------------- pixel
def format_pixel_box(box: Box, image_size: ImageSize) -> str:
    out: dict[str, Any] = {"bbox_2d": list(_grid_xyxy(box, image_size, None))}
    if box.label:
        out["label"] = box.label
    if box.angle is not None:
        out["angle"] = int(round(box.angle)) % 360
    return json.dumps(out, ensure_ascii=False)


# -------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class BoxFormat:
    """How one box is written into a prompt."""

    name: str
    grid: int | None  # integers 0..grid per axis; None: original-image pixels
    format: Callable[[Box, ImageSize], str]


BOX_FORMATS: dict[str, BoxFormat] = {
    "qwen": BoxFormat("qwen", QWEN_GRID, format_qwen_box),
    "geochat": BoxFormat("geochat", GEOCHAT_GRID, format_geochat_box),
    "pixel": BoxFormat("pixel", None, format_pixel_box),
}


def box_format(name: str) -> BoxFormat:
    try:
        return BOX_FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown box format {name!r}; expected one of {', '.join(sorted(BOX_FORMATS))}") from None


def format_boxes(boxes: Sequence[Box], image_size: ImageSize, fmt: str = "qwen") -> str:
    """The boxes in one format, in order, separated by single spaces."""
    write = box_format(fmt).format
    return " ".join(write(b, image_size) for b in boxes)


# ----------------------------------------------------------------------------------------- coordinates
def _fixed(v: float) -> str:
    s = f"{v:.{GEO_DECIMALS}f}"
    return s[1:] if s == "-" + "0." + "0" * GEO_DECIMALS else s


def format_geo(geo: Geo) -> str:
    """``latitude 48.1370, longitude 11.5750``; bbox_lonlat is metadata and is not written."""
    return f"latitude {_fixed(geo.lat)}, longitude {_fixed(geo.lon)}"
