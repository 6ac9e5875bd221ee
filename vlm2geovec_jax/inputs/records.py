"""The records every task is expressed in: Box, Geo, Item, Pair, EvalRow, and their JSONL readers.

A record holds raw facts only (pixel boxes in the ORIGINAL image, WGS84 degrees, an image path or its bytes),
never anything that depends on a resize or a prompt format, so one record serves every backbone and box
format. Validation is strict and happens on construction: every fault raises RecordError naming the field
(``boxes[1].xyxy``, ``geo.lat``); the ``*_from_dict`` functions and the readers add the file and record.
Images are never opened here (inputs/image.py decodes them and reports unreadable ones).
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import math
import numbers
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Generic, TypeVar

from vlm2geovec_jax.inputs.errors import RecordError

log = logging.getLogger(__name__)

# Any `<|...|>` string: the tokenizer would turn it into a special token (an extra image pad, a stray box),
# so data text must never carry one; only the prompt templates add special tokens.
_SPECIAL_TOKEN = re.compile(r"<\|[^|<>\s]{1,64}\|>")
ANGLE_RANGE = (0.0, 360.0)  # degrees, half-open: 360 is written as 0
T = TypeVar("T")


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
def _under(prefix: str | None = None, *, file: Any = None, record: Any = None) -> Iterator[None]:
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
            with _under("source"):
                d = _keys(source, ("dataset", "split", "id"), ("dataset", "split", "id"))
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


# ------------------------------------------------------------------------------------- dict conversion
def _keys(d: Any, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> Mapping:
    if not isinstance(d, Mapping):
        raise RecordError(f"expected a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise RecordError(f"unknown key {unknown[0]!r}; expected keys among {', '.join(allowed)}", field=unknown[0])
    for k in required:
        if k not in d:
            raise RecordError("missing required key", field=k)
    return d


def box_from_dict(d: Mapping) -> Box:
    """A Box from ``{"xyxy": [x1, y1, x2, y2], "label"?: str, "angle"?: degrees}``."""
    d = _keys(d, ("xyxy", "label", "angle"), ("xyxy",))
    return Box(d["xyxy"], d.get("label"), d.get("angle"))


def box_to_dict(box: Box) -> dict:
    out: dict = {"xyxy": list(box.xyxy)}
    if box.label is not None:
        out["label"] = box.label
    if box.angle is not None:
        out["angle"] = box.angle
    return out


def geo_from_dict(d: Mapping) -> Geo:
    """A Geo from ``{"lat": deg, "lon": deg, "bbox_lonlat"?: [west, south, east, north]}``."""
    d = _keys(d, ("lat", "lon", "bbox_lonlat"), ("lat", "lon"))
    return Geo(lat=d["lat"], lon=d["lon"], bbox_lonlat=d.get("bbox_lonlat"))


def geo_to_dict(geo: Geo) -> dict:
    out: dict = {"lat": geo.lat, "lon": geo.lon}
    if geo.bbox_lonlat is not None:
        out["bbox_lonlat"] = list(geo.bbox_lonlat)
    return out


_ITEM_KEYS = ("text", "image", "image_size", "boxes", "geo", "instruction")


def item_from_dict(d: Mapping, *, file: str | os.PathLike | None = None, record: str | int | None = None,
                   prefix: str | None = None) -> Item:
    """An Item from its JSON form (see item_to_dict); faults name ``file``, ``record`` and the field."""
    with _under(prefix, file=file, record=record):
        d = _keys(d, _ITEM_KEYS)
        boxes = d.get("boxes", [])
        if not isinstance(boxes, list):
            raise RecordError(f"expected a list of boxes, got {boxes!r}", field="boxes")
        parsed = []
        for i, b in enumerate(boxes):
            with _under(f"boxes[{i}]"):
                parsed.append(box_from_dict(b))
        geo = None
        if d.get("geo") is not None:
            with _under("geo"):
                geo = geo_from_dict(d["geo"])
        return Item(text=d.get("text"), image=_image_from_json(d.get("image")), image_size=d.get("image_size"),
                    boxes=tuple(parsed), geo=geo, instruction=d.get("instruction"))


def _image_from_json(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    if set(value) != {"bytes_b64"} or not isinstance(value["bytes_b64"], str):
        raise RecordError(f"expected a path or {{\"bytes_b64\": str}}, got keys {sorted(value)}", field="image")
    try:
        return base64.b64decode(value["bytes_b64"], validate=True)
    except binascii.Error as err:
        raise RecordError(f"bytes_b64 is not valid base64 ({err})", field="image") from None


def item_to_dict(item: Item) -> dict:
    """JSON-able form; image bytes become ``{"bytes_b64": ...}``; unset fields are left out."""
    out: dict = {}
    if item.text is not None:
        out["text"] = item.text
    if isinstance(item.image, bytes):
        out["image"] = {"bytes_b64": base64.b64encode(item.image).decode("ascii")}
    elif item.image is not None:
        out["image"] = item.image
    if item.image_size is not None:
        out["image_size"] = list(item.image_size)
    if item.boxes:
        out["boxes"] = [box_to_dict(b) for b in item.boxes]
    if item.geo is not None:
        out["geo"] = geo_to_dict(item.geo)
    if item.instruction is not None:
        out["instruction"] = item.instruction
    return out


def _items_from_list(value: Any, name: str) -> tuple[Item, ...]:
    if not isinstance(value, list):
        raise RecordError(f"expected a list of items, got {type(value).__name__}", field=name)
    return tuple(item_from_dict(v, prefix=f"{name}[{i}]") for i, v in enumerate(value))


def pair_from_dict(d: Mapping, *, file: str | os.PathLike | None = None, record: str | int | None = None) -> Pair:
    """A Pair from ``{"query", "positive", "negatives"?, "task", "source": {"dataset", "split", "id"}}``."""
    with _under(file=file, record=record):
        d = _keys(d, ("query", "positive", "negatives", "task", "source"), ("query", "positive", "task", "source"))
        return Pair(item_from_dict(d["query"], prefix="query"), item_from_dict(d["positive"], prefix="positive"),
                    _items_from_list(d.get("negatives", []), "negatives"), task=d["task"], source=d["source"])


def pair_to_dict(pair: Pair) -> dict:
    out = {"query": item_to_dict(pair.query), "positive": item_to_dict(pair.positive)}
    if pair.negatives:
        out["negatives"] = [item_to_dict(n) for n in pair.negatives]
    out["task"] = pair.task
    out["source"] = dataclasses.asdict(pair.source)
    return out


def eval_row_from_dict(d: Mapping, *, file: str | os.PathLike | None = None,
                       record: str | int | None = None) -> EvalRow:
    """An EvalRow from ``{"qid", "task", "query", "candidates": [...], "positives"?: [0]}``."""
    with _under(file=file, record=record):
        d = _keys(d, ("qid", "task", "query", "candidates", "positives"), ("qid", "task", "query", "candidates"))
        return EvalRow(d["qid"], d["task"], item_from_dict(d["query"], prefix="query"),
                       _items_from_list(d["candidates"], "candidates"), d.get("positives", (0,)))


def eval_row_to_dict(row: EvalRow) -> dict:
    return {"qid": row.qid, "task": row.task, "query": item_to_dict(row.query),
            "candidates": [item_to_dict(c) for c in row.candidates], "positives": list(row.positives)}


# ---------------------------------------------------------------------------------------------- readers
@dataclass
class BadRecordLog:
    """What a reader skipped: counts by reason (``invalid JSON``, ``field geo.lat``, ...) and the first messages."""

    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    max_examples: int = 20

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, err: RecordError) -> None:
        self.counts[_reason_key(err)] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(str(err))

    def summary(self) -> str:
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items()))
        return f"{self.total} bad records skipped" + (f" ({parts})" if parts else "")


def _reason_key(err: RecordError) -> str:
    if err.field is None:
        return re.split(r" \(|:|,| '", err.reason, maxsplit=1)[0]  # "invalid JSON", "empty item", ...
    return "field " + re.sub(r"\[\d+\]", "[]", err.field)


def _strict_object(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise RecordError(f"duplicate key {k!r} in one object")
        out[k] = v
    return out


def _decode_line(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecordError(f"invalid UTF-8 (byte {raw[err.start]:#04x} at offset {err.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_strict_object)
    except json.JSONDecodeError as err:
        raise RecordError(f"invalid JSON (column {err.colno}: {err.msg})") from None


class JsonlReader(Generic[T]):
    """Iterates the records of a JSONL file in order; record numbers are 1-based line numbers.

    ``on_bad_record="raise"`` stops at the first bad line with a RecordError naming file, line and field;
    ``"skip"`` logs each bad line (logging, WARNING) and counts it in ``self.bad`` (each pass over the file
    adds to it). Blank lines are not records; a UTF-8 byte-order mark and CRLF endings are accepted.
    Undecodable bytes and invalid JSON are bad records like any other, never a crash.
    """

    def __init__(self, path: str | os.PathLike, parse: Callable[..., T], *, on_bad_record: str = "raise",
                 bad: BadRecordLog | None = None):
        if on_bad_record not in ("raise", "skip"):
            raise ValueError(f"on_bad_record must be 'raise' or 'skip', got {on_bad_record!r}")
        self.path, self.parse, self.on_bad_record = os.fspath(path), parse, on_bad_record
        self.bad = bad if bad is not None else BadRecordLog()

    def __iter__(self) -> Iterator[T]:
        with open(self.path, "rb") as f:
            for n, raw in enumerate(f, start=1):
                raw = raw.removeprefix(b"\xef\xbb\xbf") if n == 1 else raw
                if not raw.strip():
                    continue
                try:
                    with _under(file=self.path, record=n):
                        record = self.parse(_decode_line(raw.rstrip(b"\r\n")), file=self.path, record=n)
                except RecordError as err:
                    if self.on_bad_record == "raise":
                        raise
                    log.warning("skipping bad record: %s", err)
                    self.bad.add(err)
                    continue
                yield record


def read_items_jsonl(path: str | os.PathLike, on_bad_record: str = "raise", *,
                     bad: BadRecordLog | None = None) -> JsonlReader:
    """Items from a JSONL file, one item_to_dict object a line, in order (see JsonlReader)."""
    return JsonlReader(path, item_from_dict, on_bad_record=on_bad_record, bad=bad)


def read_pairs_jsonl(path: str | os.PathLike, on_bad_record: str = "raise", *,
                     bad: BadRecordLog | None = None) -> JsonlReader:
    """Pairs from a JSONL file, one pair_to_dict object a line, in order (see JsonlReader)."""
    return JsonlReader(path, pair_from_dict, on_bad_record=on_bad_record, bad=bad)


def read_eval_rows_jsonl(path: str | os.PathLike, on_bad_record: str = "raise", *,
                         bad: BadRecordLog | None = None) -> JsonlReader:
    """EvalRows from a JSONL file, one eval_row_to_dict object a line, in order (see JsonlReader)."""
    return JsonlReader(path, eval_row_from_dict, on_bad_record=on_bad_record, bad=bad)


def write_jsonl(path: str | os.PathLike, records: Iterable[Item | Pair | EvalRow]) -> int:
    """Writes records one JSON object a line (UTF-8, keys in schema order); returns how many."""
    to_dict = {Item: item_to_dict, Pair: pair_to_dict, EvalRow: eval_row_to_dict}
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(to_dict[type(r)](r), ensure_ascii=False, allow_nan=False) + "\n")
            n += 1
    return n


# ------------------------------------------------------------------------------------------------- MMEB
_MMEB_IMAGE_TOKEN = re.compile(r"<\|image_\d+\|>\s*")
_MMEB_KEYS = ("qry_text", "qry_img_path", "tgt_text", "tgt_img_path")


def eval_row_from_mmeb(row: Mapping, *, task: str, qid: str, image_root: str | os.PathLike | None = None,
                       file: str | os.PathLike | None = None, record: str | int | None = None) -> EvalRow:
    """An EvalRow from an MMEB-eval row (candidate 0 gold); image paths are joined to ``image_root``.

    The Phi-3.5-V image token ``<|image_1|>`` is dropped from the texts: our templates add the backbone's
    own image tokens. ``qry_inst`` / ``tgt_inst`` (one string, or one per candidate) become instructions.
    Columns other than the MMEB ones are ignored.
    """
    with _under(file=file, record=record):
        if not isinstance(row, Mapping):
            raise RecordError(f"expected a row object, got {type(row).__name__}")
        for k in _MMEB_KEYS:
            if k not in row:
                raise RecordError("missing required MMEB column", field=k)
        texts, paths = _mmeb_list(row, "tgt_text"), _mmeb_list(row, "tgt_img_path")
        if len(texts) != len(paths):
            raise RecordError(f"{len(paths)} image paths for {len(texts)} tgt_text entries", field="tgt_img_path")
        insts = row.get("tgt_inst")
        if isinstance(insts, str) or insts is None:
            insts = [insts] * len(texts)
        if len(insts) != len(texts):
            raise RecordError(f"{len(insts)} instructions for {len(texts)} candidates", field="tgt_inst")
        query = _mmeb_item(row["qry_text"], row["qry_img_path"], row.get("qry_inst"), image_root, "qry")
        candidates = tuple(_mmeb_item(t, p, i, image_root, f"tgt[{n}]")
                           for n, (t, p, i) in enumerate(zip(texts, paths, insts)))
        return EvalRow(qid, task, query, candidates)


def _mmeb_list(row: Mapping, key: str) -> list:
    value = row[key]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise RecordError(f"expected a list, got {type(value).__name__}", field=key)
    return list(value)


def _mmeb_item(text: Any, path: Any, inst: Any, image_root: Any, name: str) -> Item:
    with _under(name):
        if text is not None and not isinstance(text, str):
            raise RecordError(f"expected a string, got {type(text).__name__}", field="text")
        if path is not None and not isinstance(path, str):
            raise RecordError(f"expected an image path string, got {type(path).__name__}", field="image")
        has_token = bool(text and _MMEB_IMAGE_TOKEN.search(text))
        if has_token and not path:
            raise RecordError("text has an image token but the image path is empty", field="image")
        text = _MMEB_IMAGE_TOKEN.sub("", text or "").strip() or None
        image = os.path.join(image_root, path) if (path and image_root is not None) else (path or None)
        return Item(text=text, image=image, instruction=(inst or None))


def read_mmeb_jsonl(path: str | os.PathLike, *, task: str, image_root: str | os.PathLike | None = None,
                    on_bad_record: str = "raise", bad: BadRecordLog | None = None) -> JsonlReader:
    """EvalRows from MMEB rows stored as JSONL; qid is ``{task}/{line}``."""
    def parse(d: Any, *, file: str, record: int) -> EvalRow:
        return eval_row_from_mmeb(d, task=task, qid=f"{task}/{record}", image_root=image_root, file=file,
                                  record=record)
    return JsonlReader(path, parse, on_bad_record=on_bad_record, bad=bad)


def read_mmeb_parquet(path: str | os.PathLike, *, task: str, image_root: str | os.PathLike | None = None,
                      on_bad_record: str = "raise", bad: BadRecordLog | None = None) -> Iterator[EvalRow]:
    """EvalRows from an MMEB-eval parquet file (as on the hub); record numbers and qids use 0-based rows."""
    import pyarrow.parquet as pq  # noqa: PLC0415  (only this reader needs pyarrow)

    if on_bad_record not in ("raise", "skip"):
        raise ValueError(f"on_bad_record must be 'raise' or 'skip', got {on_bad_record!r}")
    bad = bad if bad is not None else BadRecordLog()
    file = os.fspath(path)
    n = 0
    for batch in pq.ParquetFile(file).iter_batches(batch_size=256):
        for row in batch.to_pylist():
            try:
                yield eval_row_from_mmeb(row, task=task, qid=f"{task}/{n}", image_root=image_root, file=file,
                                         record=n)
            except RecordError as err:
                if on_bad_record == "raise":
                    raise
                log.warning("skipping bad record: %s", err)
                bad.add(err)
            n += 1
