"""The JSON form of the records and their JSONL files: one record a line, read strictly or skipping bad lines.

``*_to_dict`` give the JSON form (unset fields left out, image bytes as ``{"bytes_b64": ...}``) and
``*_from_dict`` read it back with every fault naming the file, record and field. JsonlReader is the one
reader of JSONL files: items, pairs and evaluation rows here, MMEB rows in inputs/mmeb.py.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.inputs.records import Box, EvalRow, Geo, Item, Pair, check_keys, under

log = logging.getLogger(__name__)
T = TypeVar("T")


# ------------------------------------------------------------------------------------- dict conversion
def box_from_dict(d: Mapping) -> Box:
    """A Box from ``{"xyxy": [x1, y1, x2, y2], "label"?: str, "angle"?: degrees}``."""
    d = check_keys(d, ("xyxy", "label", "angle"), ("xyxy",))
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
    d = check_keys(d, ("lat", "lon", "bbox_lonlat"), ("lat", "lon"))
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
    with under(prefix, file=file, record=record):
        d = check_keys(d, _ITEM_KEYS)
        boxes = d.get("boxes", [])
        if not isinstance(boxes, list):
            raise RecordError(f"expected a list of boxes, got {boxes!r}", field="boxes")
        parsed = []
        for i, b in enumerate(boxes):
            with under(f"boxes[{i}]"):
                parsed.append(box_from_dict(b))
        geo = None
        if d.get("geo") is not None:
            with under("geo"):
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
    with under(file=file, record=record):
        d = check_keys(d, ("query", "positive", "negatives", "task", "source"), ("query", "positive", "task", "source"))
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
    with under(file=file, record=record):
        d = check_keys(d, ("qid", "task", "query", "candidates", "positives"), ("qid", "task", "query", "candidates"))
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
                    with under(file=self.path, record=n):
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


