"""MMEB-eval rows (VLM2Vec's evaluation format) read as EvalRows, from the hub's parquet files or JSONL.

A row is one query with its candidate list, candidate 0 the gold (MMEB's convention), so an MMEB task is
scored by the same ranking code as every RSMEB task.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.inputs.jsonl import BadRecordLog, JsonlReader
from vlm2geovec_jax.inputs.records import EvalRow, Item, under

log = logging.getLogger(__name__)


_MMEB_IMAGE_TOKEN = re.compile(r"<\|image_\d+\|>\s*")
_MMEB_KEYS = ("qry_text", "qry_img_path", "tgt_text", "tgt_img_path")


def eval_row_from_mmeb(row: Mapping, *, task: str, qid: str, image_root: str | os.PathLike | None = None,
                       file: str | os.PathLike | None = None, record: str | int | None = None) -> EvalRow:
    """An EvalRow from an MMEB-eval row (candidate 0 gold); image paths are joined to ``image_root``.

    The Phi-3.5-V image token ``<|image_1|>`` is dropped from the texts: our templates add the backbone's
    own image tokens. ``qry_inst`` / ``tgt_inst`` (one string, or one per candidate) become instructions.
    Columns other than the MMEB ones are ignored.
    """
    with under(file=file, record=record):
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
    with under(name):
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
    import pyarrow.parquet as pq  # noqa: PLC0415  (imported when a parquet file is read, not with the module)

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
