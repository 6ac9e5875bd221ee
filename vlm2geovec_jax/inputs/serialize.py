"""Boxes and coordinates written as prompt text, and parsed back.

Records keep pixel boxes of the original image and WGS84 degrees; this module is the ONE place where they
are normalised into text, so training and evaluation can never drift apart.

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
and grid is 1000, 100, or S itself for pixels. Parsing maps n back to ``n / grid * S``, so a round trip is
exact to within half a grid step (S / 2000 pixels for qwen).

Coordinates: ``latitude 48.1370, longitude 11.5750``: named, latitude first, 4 decimals (1e-4 degree is
about 11 m of latitude, finer than the footprint of any image it describes; every further digit costs a
token, since Qwen2's tokenizer splits numbers into single digits). ``-0.0000`` is written ``0.0000``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from collections.abc import Callable, Sequence
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


def _parsed_box(source: str, fmt: str, numbers: Sequence[int], image_size: ImageSize, grid: int | None,
                label: str | None = None, angle: float | None = None) -> Box:
    """A Box from grid integers, with faults naming the offending box string."""
    w, h = image_size
    top = (w, h, w, h) if grid is None else (grid,) * 4
    for n, limit in zip(numbers, top):
        if not 0 <= n <= limit:
            raise RecordError(f"value {n} outside [0, {limit}] in {fmt} box {source!r}")
    gx, gy = (w, h) if grid is None else (grid, grid)
    x1, y1, x2, y2 = numbers
    xyxy = (dequantise(x1, w, gx), dequantise(y1, h, gy), dequantise(x2, w, gx), dequantise(y2, h, gy))
    try:
        return Box(xyxy, label=label, angle=angle)
    except RecordError as err:
        raise RecordError(f"{err.reason} in {fmt} box {source!r}", field=err.field) from None


# ------------------------------------------------------------------------------------------------ qwen
_QWEN = re.compile(r"(?:<\|object_ref_start\|>(?P<label>.*?)<\|object_ref_end\|>\s*)?<\|box_start\|>\s*"
                   r"\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)\s*,\s*\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)\s*<\|box_end\|>",
                   re.DOTALL)


def format_qwen_box(box: Box, image_size: ImageSize) -> str:
    x1, y1, x2, y2 = _grid_xyxy(box, image_size, QWEN_GRID)
    ref = f"<|object_ref_start|>{box.label}<|object_ref_end|>" if box.label else ""
    return f"{ref}<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"


def parse_qwen_boxes(text: str, image_size: ImageSize) -> list[Box]:
    return [_parsed_box(m.group(), "qwen", [int(g) for g in m.groups()[1:]], image_size, QWEN_GRID,
                        label=m.group("label") or None) for m in _QWEN.finditer(text)]


# --------------------------------------------------------------------------------------------- geochat
_GEOCHAT_BOX = (r"\{\s*<(-?\d+)>\s*<(-?\d+)>\s*<(-?\d+)>\s*<(-?\d+)>\s*"
                r"(?:\|\s*(?:<(-?\d+)>|(-?\d+))\s*)?\}")
_GEOCHAT = re.compile(r"(?:<p>\s*(?P<label>.*?)\s*</p>\s*)?" + _GEOCHAT_BOX, re.DOTALL)
_GEOCHAT_ONE = re.compile(_GEOCHAT_BOX)


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
    return _parsed_box(source, "geochat", values, image_size, GEOCHAT_GRID, label=label, angle=angle)


def parse_geochat_box(s: str, image_size: ImageSize) -> Box:
    """One GeoChat box string ``{<x1><y1><x2><y2>|<θ>}`` (``|θ`` also accepted) -> pixel Box.

    Values over 100 and angles over 360 occur in the real GeoChat data; they raise RecordError, as does a
    box that is empty after quantisation. An angle of exactly 360 is read as 0.
    """
    if not isinstance(s, str):
        raise RecordError(f"expected a GeoChat box string, got {type(s).__name__}")
    m = _GEOCHAT_ONE.fullmatch(s.strip())
    if m is None:
        raise RecordError(f"{s!r} is not a GeoChat box; expected {{<x1><y1><x2><y2>|<angle>}} with integers")
    return _geochat_match(m, m.groups(), image_size, None)


def parse_geochat_boxes(text: str, image_size: ImageSize) -> list[Box]:
    """Every GeoChat box in a text (``{..}{..}``, ``{..}, {..}``), with ``<p>label</p>`` labels when present."""
    return [_geochat_match(m, m.groups()[1:], image_size, m.group("label") or None)
            for m in _GEOCHAT.finditer(text)]


# ----------------------------------------------------------------------------------------------- pixel
_PIXEL_START = re.compile(r'\{\s*"bbox_2d"')


def format_pixel_box(box: Box, image_size: ImageSize) -> str:
    out: dict[str, Any] = {"bbox_2d": list(_grid_xyxy(box, image_size, None))}
    if box.label:
        out["label"] = box.label
    if box.angle is not None:
        out["angle"] = int(round(box.angle)) % 360
    return json.dumps(out, ensure_ascii=False)


def parse_pixel_boxes(text: str, image_size: ImageSize) -> list[Box]:
    decoder, out = json.JSONDecoder(), []
    for m in _PIXEL_START.finditer(text):
        try:
            obj, end = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError as err:
            raise RecordError(f"invalid JSON in pixel box at offset {m.start()} ({err.msg})") from None
        source = text[m.start():end]
        coords = obj.get("bbox_2d")
        if (not isinstance(coords, list) or len(coords) != 4
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in coords)):
            raise RecordError(f"expected \"bbox_2d\": [x1, y1, x2, y2] as integers in pixel box {source!r}")
        out.append(_parsed_box(source, "pixel", coords, image_size, None, obj.get("label"), obj.get("angle")))
    return out


# -------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class BoxFormat:
    """How one box is written into a prompt and how every box of that format is read back from text."""

    name: str
    grid: int | None  # integers 0..grid per axis; None: original-image pixels
    format: Callable[[Box, ImageSize], str]
    parse: Callable[[str, ImageSize], list[Box]]


BOX_FORMATS: dict[str, BoxFormat] = {
    "qwen": BoxFormat("qwen", QWEN_GRID, format_qwen_box, parse_qwen_boxes),
    "geochat": BoxFormat("geochat", GEOCHAT_GRID, format_geochat_box, parse_geochat_boxes),
    "pixel": BoxFormat("pixel", None, format_pixel_box, parse_pixel_boxes),
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


def parse_boxes(text: str, image_size: ImageSize, fmt: str = "qwen") -> list[Box]:
    """Every box of format ``fmt`` in ``text``, in pixel coordinates of an image of ``image_size`` (w, h)."""
    return box_format(fmt).parse(text, image_size)


# ----------------------------------------------------------------------------------------- coordinates
_GEO = re.compile(r"latitude (-?\d{1,2}(?:\.\d+)?), longitude (-?\d{1,3}(?:\.\d+)?)")


def _fixed(v: float) -> str:
    s = f"{v:.{GEO_DECIMALS}f}"
    return s[1:] if s == "-" + "0." + "0" * GEO_DECIMALS else s


def format_geo(geo: Geo) -> str:
    """``latitude 48.1370, longitude 11.5750``; bbox_lonlat is metadata and is not written."""
    return f"latitude {_fixed(geo.lat)}, longitude {_fixed(geo.lon)}"


def parse_geo(text: str) -> Geo:
    """The first ``latitude <deg>, longitude <deg>`` in a text, as a Geo (range-checked)."""
    m = _GEO.search(text)
    if m is None:
        raise RecordError(f"no 'latitude <degrees>, longitude <degrees>' in {text[:80]!r}")
    try:
        return Geo(lat=float(m.group(1)), lon=float(m.group(2)))
    except RecordError as err:
        raise RecordError(f"{err.reason} in {m.group()!r}", field=err.field) from None
