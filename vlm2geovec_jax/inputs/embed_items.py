"""Embed a JSONL file of Items with a checkpoint: one L2-normalised row per item, in input order.

Behind ``vlm2geovec embed``. Batches are padded to fixed row counts, a length bucket and power-of-two image
budgets, so a long file compiles a handful of programs. With ``on_bad_record="skip"`` a bad item (a bad
line, an unreadable image, ...) is logged and counted, and its row is NaN, so row i still belongs to the
i-th record (non-blank line) of the file.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vlm2geovec_jax.inputs.collate import EncodedItem, check_compatible, collate_encoded, encode_item
from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.inputs.image import ImageConfig
from vlm2geovec_jax.inputs.records import BadRecordLog, Item, JsonlReader, item_from_dict
from vlm2geovec_jax.inputs.tokenizer import DEFAULT_BUCKETS, Tokenizer
from vlm2geovec_jax.models.model_inputs import bucket, pad_batch_rows

log = logging.getLogger(__name__)


def assets_dir(ckpt: str | os.PathLike) -> Path:
    """Where a checkpoint keeps its tokenizer: ``assets/`` of a model checkpoint, else the HF directory itself."""
    from vlm2geovec_jax.weights.checkpoint import is_model_checkpoint  # noqa: PLC0415 (imports orbax)

    return Path(ckpt) / "assets" if is_model_checkpoint(ckpt) else Path(ckpt)


def image_config_from(directory: str | os.PathLike) -> ImageConfig:
    """The checkpoint's preprocessor_config.json when it ships one, else the Qwen2-VL processor defaults."""
    file = Path(directory) / "preprocessor_config.json"
    return ImageConfig.from_preprocessor_config(file) if file.is_file() else ImageConfig()


def embed_encoded(embedder, encoded: list[EncodedItem], *, tokenizer: Tokenizer, rows: int) -> np.ndarray:
    """[len(encoded), D] embeddings of one batch padded to ``rows`` rows and power-of-two image budgets."""
    images = [e for e in encoded if e.grid_thw is not None]
    patches = bucket(max(e.num_patches for e in images), 64) if images else None
    batch = collate_encoded(encoded, tokenizer=tokenizer, model_cfg=embedder.config, length_buckets=DEFAULT_BUCKETS,
                            patches_per_image=patches)
    batch = pad_batch_rows(batch, rows, batch.input_ids.shape[1])
    return embedder.embed_inputs(batch)[:len(encoded)]


def embed_items(embedder, items: Iterable[tuple[int, Item]], *, num_rows: int, tokenizer: Tokenizer,
                image_config: ImageConfig, batch_size: int = 32, box_format: str = "qwen",
                on_bad_record: str = "raise", bad: BadRecordLog | None = None, file: str | None = None,
                records: list | None = None, progress: bool = True) -> np.ndarray:
    """[num_rows, D] float32: row r is the embedding of the item given as ``(r, item)``; rows never given are NaN.

    Items that fail to encode raise (naming ``file``, the record ``records[r]`` (default r + 1) and the
    field) or, with ``on_bad_record="skip"``, are counted in ``bad`` and keep their NaN row.
    """
    if on_bad_record not in ("raise", "skip"):
        raise ValueError(f"on_bad_record must be 'raise' or 'skip', got {on_bad_record!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_compatible(tokenizer, image_config, embedder.config)
    bad = bad if bad is not None else BadRecordLog()
    out = np.full((num_rows, embedder.dim), np.nan, np.float32)
    where = (lambda r: records[r]) if records is not None else (lambda r: r + 1)
    with tqdm(total=num_rows, unit="item", desc="embed", disable=not progress) as bar:
        for rows, encoded in _batches(items, batch_size, tokenizer, image_config, box_format, on_bad_record, bad,
                                      (file, where), bar):
            out[rows] = embed_encoded(embedder, encoded, tokenizer=tokenizer, rows=batch_size)
            bar.update(len(rows))
    return out


def _batches(items, batch_size, tokenizer, image_config, box_format, on_bad_record, bad, location, bar
             ) -> Iterator[tuple[list[int], list[EncodedItem]]]:
    file, record_of = location
    rows, encoded = [], []
    for row, item in items:
        try:
            enc = encode_item(item, tokenizer=tokenizer, image_config=image_config, box_format=box_format)
            if len(enc.input_ids) > DEFAULT_BUCKETS[-1]:
                raise RecordError(f"{len(enc.input_ids)} tokens, more than the largest length bucket "
                                  f"{DEFAULT_BUCKETS[-1]}; expected a shorter text or a smaller image")
        except RecordError as err:
            err = RecordError(err.reason, file=err.file or file, record=err.record or record_of(row), field=err.field)
            if on_bad_record == "raise":
                raise err from None
            log.warning("skipping bad record: %s", err)
            bad.add(err)
            bar.update(1)
            continue
        rows.append(row)
        encoded.append(enc)
        if len(encoded) == batch_size:
            yield rows, encoded
            rows, encoded = [], []
    if encoded:
        yield rows, encoded


def _record_rows(path: str) -> dict[int, int]:
    """1-based line number of every record (non-blank line) -> its row, as JsonlReader numbers them."""
    rows = {}
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            raw = raw.removeprefix(b"\xef\xbb\xbf") if n == 1 else raw
            if raw.strip():
                rows[n] = len(rows)
    return rows


def embed_jsonl(ckpt: str | os.PathLike, items_path: str | os.PathLike, out: str | os.PathLike, *,
                batch_size: int = 32, on_bad_record: str = "raise", progress: bool = True,
                attention: str = "auto") -> tuple[Path, int, BadRecordLog]:
    """Embeds every Item of a JSONL file with a checkpoint and saves ``out`` (.npy, [records, D] float32).

    Returns (output path, number of rows, what was skipped). The tokenizer and image settings come from the
    checkpoint's assets (or the transformers directory itself). ``attention`` picks the kernel
    (models/attention.py).
    """
    from vlm2geovec_jax.embedder import load  # noqa: PLC0415 (imports the model)

    items_path = os.fspath(items_path)
    if not os.path.isfile(items_path):
        raise FileNotFoundError(f"{items_path}: items file not found; expected a JSONL file of Items")
    assets = assets_dir(ckpt)
    tokenizer, image_config = Tokenizer.from_dir(assets), image_config_from(assets)
    embedder = load(ckpt, attention=attention)
    rows = _record_rows(items_path)
    bad = BadRecordLog()

    def parse(d, *, file, record):
        return rows[record], item_from_dict(d, file=file, record=record)

    reader = JsonlReader(items_path, parse, on_bad_record=on_bad_record, bad=bad)
    vectors = embed_items(embedder, reader, num_rows=len(rows), tokenizer=tokenizer, image_config=image_config,
                          batch_size=batch_size, on_bad_record=on_bad_record, bad=bad, file=items_path,
                          records=list(rows), progress=progress)
    out = Path(out)
    out = out if out.suffix == ".npy" else out.with_name(out.name + ".npy")  # where np.save puts it
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vectors)
    return out, len(rows), bad
