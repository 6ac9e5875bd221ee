"""The records every task is expressed in: Box, Geo, Item, Pair, EvalRow, and their validation.

A record holds raw facts only (pixel boxes in the ORIGINAL image, WGS84 degrees, an image path or its bytes),
never anything that depends on a resize or a prompt format, so one record serves every backbone and box
format. Validation is strict and happens on construction: every fault raises RecordError naming the field
(``boxes[1].xyxy``, ``geo.lat``); the readers (inputs/jsonl.py, inputs/mmeb.py) add the file and record.
Images are never opened here (inputs/image.py decodes them and reports unreadable ones).
"""
from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass
from typing import Any

from vlm2geovec_jax.inputs.errors import RecordError

# Any `<|...|>` string: the tokenizer would turn it into a special token (an extra image pad, a stray box),
# so data text must never carry one; only the prompt templates add special tokens.
_SPECIAL_TOKEN = re.compile(r"<\|[^|<>\s]{1,64}\|>")
ANGLE_RANGE = (0.0, 360.0)  # degrees, half-open: 360 is written as 0


# ----------------------------------------------------------------------------------------------- checks
def _number(value: Any, name: str) -> float:
    if type(value) is not float and type(value) is not int and (  # fast path for what JSON gives
            isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise RecordError(f"expected a number, got {value!r}", field=name)
    out = float(value)
    if not math.isfinite(out):
        raise RecordError(f"expected a finite number, got {value!r}", field=name)
    return out


def _numbers(value: Any, n: int, name: str) -> tuple[float, ...]:
    value = value.tolist() if hasattr(value, "tolist") else value  # numpy arrays from adapters
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != n:
        raise RecordError(f"expected a list of {n} numbers, got {value!r}", field=name)
    return tuple(_number(v, f"{name}[{i}]") for i, v in enumerate(value))


def _text(value: Any, name: str, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise RecordError(f"expected a string, got {type(value).__name__} {value!r}", field=name)
    if required and not value.strip():
        raise RecordError("expected a non-empty string", field=name)
    token = _SPECIAL_TOKEN.search(value)
    if token:
        raise RecordError(f"contains the special-token string {token.group()!r}; special tokens are added by "
                          "the prompt templates, never by data", field=name)
    return value


def _records(value: Any, kind: type, name: str) -> tuple:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise RecordError(f"expected a list of {kind.__name__}, got {value!r}", field=name)
    out = tuple(value)
    for i, v in enumerate(out):
        if not isinstance(v, kind):
            raise RecordError(f"expected a {kind.__name__}, got {type(v).__name__}", field=f"{name}[{i}]")
    return out


def _set(obj: Any, **values: Any) -> None:
    for k, v in values.items():
        object.__setattr__(obj, k, v)


def _join(prefix: str | None, name: str | None) -> str | None:
    if not prefix:
        return name
    if not name:
        return prefix
    return f"{prefix}{name}" if name.startswith("[") else f"{prefix}.{name}"


def located(err: RecordError, *, file: str | os.PathLike | None = None, record: str | int | None = None,
            prefix: str | None = None) -> RecordError:
    """The same fault with its file and record filled in and its field put under ``prefix``.

    For readers and adapters that catch a fault from a nested record or a parser and re-raise it where the
    user can find it. Location already known to the error is kept.
    """
    return RecordError(err.reason, file=err.file if err.file is not None else (os.fspath(file) if file else None),
                       record=err.record if err.record is not None else record, field=_join(prefix, err.field))


@contextmanager
def under(prefix: str | None = None, *, file: Any = None, record: Any = None) -> Iterator[None]:
    """Faults raised inside the block come out ``located`` (the nested field under ``prefix``)."""
    try:
        yield
    except RecordError as err:
        raise located(err, file=file, record=record, prefix=prefix) from None


# ---------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixel coordinates of the ORIGINAL image, optionally labelled and rotated.

    ``angle`` is GeoChat's rotation of the box about its centre, in degrees in [0, 360); ``xyxy`` is the
    box before rotation.
    """

    xyxy: tuple[float, float, float, float]
    label: str | None = None
    angle: float | None = None

    def __post_init__(self) -> None:
        x1, y1, x2, y2 = _numbers(self.xyxy, 4, "xyxy")
        if x2 <= x1:
            raise RecordError(f"x2 ({x2:g}) must be greater than x1 ({x1:g}); expected [x1, y1, x2, y2]",
                              field="xyxy")
        if y2 <= y1:
            raise RecordError(f"y2 ({y2:g}) must be greater than y1 ({y1:g}); expected [x1, y1, x2, y2]",
                              field="xyxy")
        angle = None if self.angle is None else _number(self.angle, "angle")
        if angle is not None and not ANGLE_RANGE[0] <= angle < ANGLE_RANGE[1]:
            raise RecordError(f"angle {angle:g} outside [0, 360) degrees", field="angle")
        _set(self, xyxy=(x1, y1, x2, y2), label=_text(self.label, "label"), angle=angle)


@dataclass(frozen=True)
class Geo:
    """A location in WGS84 decimal degrees. Named fields only: SatCLIP orders (lon, lat), GeoCLIP (lat, lon).

    ``bbox_lonlat`` is the footprint as (west, south, east, north); west > east means it crosses the
    antimeridian. The point must lie inside it, which catches swapped lat/lon early.
    """

    lat: float
    lon: float
    bbox_lonlat: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        lat, lon = _number(self.lat, "lat"), _number(self.lon, "lon")
        if not -90.0 <= lat <= 90.0:
            raise RecordError(f"latitude {lat:g} outside [-90, 90] degrees", field="lat")
        if not -180.0 <= lon <= 180.0:
            raise RecordError(f"longitude {lon:g} outside [-180, 180] degrees", field="lon")
        bbox = None if self.bbox_lonlat is None else _numbers(self.bbox_lonlat, 4, "bbox_lonlat")
        if bbox is not None:
            _check_bbox_lonlat(bbox, lat, lon)
        _set(self, lat=lat, lon=lon, bbox_lonlat=bbox)


def _check_bbox_lonlat(bbox: tuple[float, ...], lat: float, lon: float) -> None:
    west, south, east, north = bbox
    if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= north <= 90):
        raise RecordError(f"{list(bbox)} is not [west, south, east, north] with longitudes in [-180, 180], "
                          "latitudes in [-90, 90] and south <= north", field="bbox_lonlat")
    in_lon = west <= lon <= east if west <= east else (lon >= west or lon <= east)
    if not (south <= lat <= north and in_lon):
        raise RecordError(f"point (lat {lat:g}, lon {lon:g}) lies outside bbox_lonlat {list(bbox)}; "
                          "are lat and lon swapped?", field="bbox_lonlat")


@dataclass(frozen=True)
class Item:
    """One side of a pair: any of text, one image, boxes on that image, a location, and an instruction.

    ``image`` is a path (resolved by the reader) or the encoded bytes; ``image_size`` is the (w, h) of the
    original image, which boxes are normalised by: when boxes come without it, it is read from the image's
    header, and a given size that disagrees with the image is an error. An item must carry text, an image or
    a location.
    """

    text: str | None = None
    image: str | bytes | None = None
    image_size: tuple[int, int] | None = None
    boxes: tuple[Box, ...] = ()
    geo: Geo | None = None
    instruction: str | None = None

    def __post_init__(self) -> None:
        image = _image(self.image)
        size = None if self.image_size is None else _image_size(self.image_size)
        if size is not None and image is None:
            raise RecordError("image_size given without an image", field="image_size")
        boxes = _records(self.boxes, Box, "boxes")
        if boxes:
            size = _size_of_boxed_image(image, size)
            _check_boxes_in_image(boxes, image, size)
        if self.geo is not None and not isinstance(self.geo, Geo):
            raise RecordError(f"expected a Geo, got {type(self.geo).__name__}", field="geo")
        text = _text(self.text, "text")
        if image is None and self.geo is None and not (text and text.strip()):
            raise RecordError("empty item: expected text, an image or a location (geo)")
        _set(self, text=text, image=image, image_size=size, boxes=boxes,
             instruction=_text(self.instruction, "instruction"))


def _image(value: Any) -> str | bytes | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        if not len(value):
            raise RecordError("expected encoded image bytes, got empty bytes", field="image")
        return bytes(value)
    if not isinstance(value, str) or not value.strip():
        raise RecordError(f"expected an image path or encoded bytes, got {value!r}", field="image")
    return value


def _image_size(value: Any) -> tuple[int, int]:
    ok = (not isinstance(value, (str, bytes)) and isinstance(value, Sequence) and len(value) == 2
          and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in value))
    if not ok:
        raise RecordError(f"expected [width, height] as two positive integers, got {value!r}", field="image_size")
    return int(value[0]), int(value[1])


def _size_of_boxed_image(image: Any, size: tuple[int, int] | None) -> tuple[int, int]:
    """The size boxes are normalised by: the image's own, which a given image_size must equal.

    An unreadable image with a given size keeps that size here: preprocessing reports the image itself.
    """
    from vlm2geovec_jax.inputs.image import image_size  # noqa: PLC0415 (PIL only when boxes need it)

    if image is None:
        raise RecordError("boxes need an image to be checked and normalised", field="boxes")
    try:
        actual = image_size(image)
    except RecordError:
        if size is None:
            raise
        return size
    if size is not None and size != actual:
        what = image if isinstance(image, str) else f"({len(image)} bytes)"
        raise RecordError(f"[{size[0]}, {size[1]}] disagrees with the image {what}, which is "
                          f"{actual[0]}x{actual[1]} pixels", field="image_size")
    return actual


def _check_boxes_in_image(boxes: tuple[Box, ...], image: Any, size: tuple[int, int]) -> None:
    w, h = size
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = box.xyxy
        if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
            raise RecordError(f"box [{', '.join(f'{v:g}' for v in box.xyxy)}] lies outside the {w}x{h} image; expected "
                              f"0 <= x1 < x2 <= {w} and 0 <= y1 < y2 <= {h}", field=f"boxes[{i}].xyxy")


@dataclass(frozen=True)
class Source:
    """Where a pair came from, so a bad example can be traced back to its dataset record."""

    dataset: str
    split: str
    id: str

    def __post_init__(self) -> None:
        for name in ("dataset", "split", "id"):
            _text(getattr(self, name), name, required=True)


@dataclass(frozen=True)
class Pair:
    """A training example: a query, its positive, optional hard negatives, the task kind and the source."""

    query: Item
    positive: Item
    negatives: tuple[Item, ...] = ()
    _: KW_ONLY
    task: str
    source: Source

    def __post_init__(self) -> None:
        for name in ("query", "positive"):
            if not isinstance(getattr(self, name), Item):
                raise RecordError(f"expected an Item, got {type(getattr(self, name)).__name__}", field=name)
        source = self.source
        if isinstance(source, Mapping):
            with under("source"):
                d = check_keys(source, ("dataset", "split", "id"), ("dataset", "split", "id"))
                source = Source(d["dataset"], d["split"], d["id"])
        if not isinstance(source, Source):
            raise RecordError(f"expected a Source, got {type(source).__name__}", field="source")
        _text(self.task, "task", required=True)
        _set(self, negatives=_records(self.negatives, Item, "negatives"), source=source)


@dataclass(frozen=True)
class EvalRow:
    """One ranking query in MMEB's layout: the query, its candidates, and which candidates are gold (0 by default)."""

    qid: str
    task: str
    query: Item
    candidates: tuple[Item, ...]
    positives: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        _text(self.qid, "qid", required=True)
        _text(self.task, "task", required=True)
        if not isinstance(self.query, Item):
            raise RecordError(f"expected an Item, got {type(self.query).__name__}", field="query")
        candidates = _records(self.candidates, Item, "candidates")
        if not candidates:
            raise RecordError("expected at least one candidate", field="candidates")
        _set(self, candidates=candidates, positives=_positives(self.positives, len(candidates)))


def _positives(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise RecordError(f"expected a non-empty list of candidate indices, got {value!r}", field="positives")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 0 <= v < n:
            raise RecordError(f"index {v!r} is not a candidate index in [0, {n})", field="positives")
    if len(set(value)) != len(value):
        raise RecordError(f"repeated candidate index in {list(value)}", field="positives")
    return tuple(int(v) for v in value)


def check_keys(d: Any, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> Mapping:
    """``d`` itself when it is an object with only ``allowed`` keys and every ``required`` one (strict schemas
    catch misspelt keys, which would otherwise be silently ignored)."""
    if not isinstance(d, Mapping):
        raise RecordError(f"expected a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise RecordError(f"unknown key {unknown[0]!r}; expected keys among {', '.join(allowed)}", field=unknown[0])
    for k in required:
        if k not in d:
            raise RecordError("missing required key", field=k)
    return d
