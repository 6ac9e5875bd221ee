"""The Python API: ``vlm2geovec_jax.load(path)`` returns the one Embedder every consumer embeds through.

An Embedder owns what a model needs to embed an Item: the encoder, its tokenizer and its processing (image
settings, prompt format, length buckets; inputs/processing.py), all read from one model artifact. ``embed``
takes Items (or their JSONL dicts) and returns one L2-normalised row per item; ``embed_tokens`` takes the
arrays transformers' Qwen2-VL takes. ``vlm2geovec embed``, ``vlm2geovec eval``, the demo and the studies all
go through ``embed``, so an item is turned into arrays one way.

Batches are padded to a fixed row count, the processing's length buckets and power-of-two image patch
budgets, so a stream of batches compiles a bounded number of programs. The model is split into graph and
parameters once and a pure function is jitted: a call costs no NNX graph traversal.
"""
from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

from vlm2geovec_jax.inputs.collate import EncodedItem, check_compatible, collate_encoded, encode_item
from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.inputs.identity import item_key
from vlm2geovec_jax.inputs.processing import Processing
from vlm2geovec_jax.inputs.jsonl import BadRecordLog, JsonlReader, item_from_dict
from vlm2geovec_jax.inputs.records import Item
from vlm2geovec_jax.inputs.tokenizer import Tokenizer
from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.models.encoder import Encoder
from vlm2geovec_jax.models.model_inputs import EncoderInputs, bucket, pad_batch_rows, prepare_inputs

log = logging.getLogger(__name__)
ON_BAD_RECORD = ("raise", "skip")


@functools.partial(jax.jit, static_argnums=0)
def _embed(graphdef: nnx.GraphDef, state: nnx.State, batch: EncoderInputs) -> jax.Array:
    return nnx.merge(graphdef, state)(batch)


class Embedder:
    """A loaded encoder with its tokenizer and processing, and a jitted embedding function."""

    def __init__(self, model: Encoder, *, tokenizer: Tokenizer | None = None,
                 processing: Processing = Processing(), path: str | os.PathLike | None = None):
        self.model, self.tokenizer, self.processing = model, tokenizer, processing
        self.path = Path(path) if path is not None else None
        if tokenizer is not None:
            check_compatible(tokenizer, processing.image, model.cfg)
        self._graphdef, self._state = nnx.split(model)

    @property
    def config(self) -> ModelConfig:
        return self.model.cfg

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    @functools.cached_property
    def key(self) -> str:
        """Identity of what this Embedder computes: the checkpoint's files and the processing settings."""
        from vlm2geovec_jax.weights.checkpoint import checkpoint_key  # noqa: PLC0415

        where = checkpoint_key(self.path) if self.path is not None else f"in-memory-{id(self.model)}"
        p = self.processing
        return f"{where}|box={p.box_format}|templates={p.templates_version}"

    def item_key(self, item: Item) -> str:
        """The item's content identity under this Embedder's prompt format (inputs/identity.py)."""
        return item_key(item, box_format=self.processing.box_format)

    # ---- items -------------------------------------------------------------------------------------------

    def embed(self, items: Iterable[Item | Mapping], *, batch_size: int = 32, on_bad_record: str = "raise",
              bad: BadRecordLog | None = None, progress: bool = False) -> np.ndarray:
        """[len(items), D] float32 L2-normalised embeddings, one row per item in order.

        Items may be ``Item`` objects or their JSONL dicts. A bad item raises a RecordError naming its
        record (1-based position) and field or, with ``on_bad_record="skip"``, is counted in ``bad`` and
        keeps a NaN row, so row i still belongs to the i-th item.
        """
        items = list(items)
        return self.embed_rows(((i, item) for i, item in enumerate(items)), len(items), batch_size=batch_size,
                               on_bad_record=on_bad_record, bad=bad, progress=progress)

    def embed_rows(self, rows: Iterable[tuple[int, Item | Mapping]], num_rows: int, *, batch_size: int = 32,
                   on_bad_record: str = "raise", bad: BadRecordLog | None = None, file: str | None = None,
                   record_of=lambda row: row + 1, progress: bool = False) -> np.ndarray:
        """``embed`` for (row, item) pairs into ``num_rows`` rows; rows never given stay NaN.

        ``file`` and ``record_of(row)`` say where an item came from, for error messages.
        """
        if on_bad_record not in ON_BAD_RECORD:
            raise ValueError(f"on_bad_record must be one of {ON_BAD_RECORD}, got {on_bad_record!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if self.tokenizer is None:
            raise ValueError(f"{self.path or 'this Embedder'}: has no tokenizer; embed items with a model "
                             "checkpoint that carries one (assets/tokenizer.json), or use embed_tokens")
        bad = bad if bad is not None else BadRecordLog()
        out = np.full((num_rows, self.dim), np.nan, np.float32)
        with tqdm(total=num_rows, unit="item", desc="embed", disable=not progress) as bar:
            encoded = self._encoded(rows, on_bad_record, bad, file, record_of, bar)
            for batch_rows, batch in _chunks(encoded, batch_size):
                out[batch_rows] = self.embed_encoded(batch, rows=batch_size)
                bar.update(len(batch_rows))
        return out

    def _encoded(self, rows, on_bad_record, bad, file, record_of, bar) -> Iterator[tuple[int, EncodedItem]]:
        p = self.processing
        for row, item in rows:
            try:
                if isinstance(item, Mapping):
                    item = item_from_dict(item, file=file, record=record_of(row))
                yield row, encode_item(item, tokenizer=self.tokenizer, image_config=p.image,
                                       box_format=p.box_format)
            except RecordError as err:
                err = RecordError(err.reason, file=err.file or file, record=err.record or record_of(row),
                                  field=err.field)
                if on_bad_record == "raise":
                    raise err from None
                log.warning("skipping bad record: %s", err)
                bad.add(err)
                bar.update(1)

    def embed_encoded(self, encoded: list[EncodedItem], *, rows: int) -> np.ndarray:
        """[len(encoded), D] of one batch padded to ``rows`` rows, a length bucket and a patch budget."""
        images = [e for e in encoded if e.grid_thw is not None]
        patches = bucket(max(e.num_patches for e in images), 64) if images else None
        length = self.processing.padded_length(max(len(e.input_ids) for e in encoded))
        batch = collate_encoded(encoded, tokenizer=self.tokenizer, model_cfg=self.config, length_buckets=(length,),
                                patches_per_image=patches, side=self.processing.padding_side)
        return self.embed_inputs(pad_batch_rows(batch, rows, length))[:len(encoded)]

    # ---- arrays ------------------------------------------------------------------------------------------

    def embed_inputs(self, batch: EncoderInputs) -> np.ndarray:
        return np.asarray(_embed(self._graphdef, self._state, batch))

    def embed_tokens(self, input_ids, attention_mask=None, pixel_values=None, image_grid_thw=None) -> np.ndarray:
        """[batch, dim] L2-normalised float32 embeddings for transformers-style Qwen2-VL inputs."""
        input_ids = np.asarray(input_ids)
        patches = None  # images: pad every image to a power-of-two patch count (few compiled shapes)
        if image_grid_thw is not None and len(image_grid_thw):
            patches = bucket(int(np.max(np.prod(np.asarray(image_grid_thw), axis=-1))), 64)
        batch = prepare_inputs(self.config, input_ids, attention_mask, pixel_values, image_grid_thw,
                               patches_per_image=patches)
        rows, length = input_ids.shape
        batch = pad_batch_rows(batch, bucket(rows, 1), bucket(length, steps_per_octave=4))
        return self.embed_inputs(batch)[:rows]


def _chunks(encoded: Iterable[tuple[int, EncodedItem]], size: int
            ) -> Iterator[tuple[list[int], list[EncodedItem]]]:
    rows, batch = [], []
    for row, item in encoded:
        rows.append(row)
        batch.append(item)
        if len(batch) == size:
            yield rows, batch
            rows, batch = [], []
    if batch:
        yield rows, batch


def load(path: str | os.PathLike, **config_overrides) -> Embedder:
    """The Embedder of a vlm2geovec model checkpoint or of a transformers Qwen2-VL directory.

    A model checkpoint must be complete (weights, config, processing, tokenizer); a transformers directory
    without tokenizer.json still embeds token arrays (``embed_tokens``).

    ``config_overrides`` set runtime fields of the model config, e.g. ``attention="splash"`` (the kernel:
    auto | xla | cudnn | splash; one this machine cannot run is a ValueError here) or ``remat_policy``.
    """
    from vlm2geovec_jax.weights import checkpoint, convert  # noqa: PLC0415

    if checkpoint.is_model_checkpoint(path):
        checkpoint.check_complete(path)
        model = checkpoint.load_model(path, **config_overrides)
        return Embedder(model, tokenizer=Tokenizer.from_dir(checkpoint.assets_dir(path)),
                        processing=Processing.read(path), path=path)
    if (Path(path) / "config.json").is_file():
        model, _ = convert.load_hf_model(path, progress=False, **config_overrides)
        tokenizer = Tokenizer.from_dir(path) if (Path(path) / "tokenizer.json").is_file() else None
        return Embedder(model, tokenizer=tokenizer, processing=Processing.from_hf_dir(path), path=path)
    raise FileNotFoundError(f"{path}: neither a vlm2geovec model checkpoint (model_config.json + params/) "
                            "nor a transformers checkpoint directory (config.json)")


def embed_jsonl(embedder: Embedder, items_path: str | os.PathLike, out: str | os.PathLike, *,
                batch_size: int = 32, on_bad_record: str = "raise", progress: bool = True
                ) -> tuple[Path, int, BadRecordLog]:
    """``vlm2geovec embed``: every record of a JSONL file into ``out`` (.npy, [records, D] float32).

    Row i belongs to the i-th record (non-blank line); with ``on_bad_record="skip"`` a bad one keeps a NaN
    row. Returns (output path, number of rows, what was skipped).
    """
    items_path = os.fspath(items_path)
    if not os.path.isfile(items_path):
        raise FileNotFoundError(f"{items_path}: items file not found; expected a JSONL file of Items")
    rows = _record_rows(items_path)
    bad = BadRecordLog()
    reader = JsonlReader(items_path, lambda d, *, file, record: (rows[record], d), on_bad_record=on_bad_record,
                         bad=bad)
    lines = list(rows)
    vectors = embedder.embed_rows(reader, len(rows), batch_size=batch_size, on_bad_record=on_bad_record, bad=bad,
                                  file=items_path, record_of=lambda row: lines[row], progress=progress)
    out = Path(out)
    out = out if out.suffix == ".npy" else out.with_name(out.name + ".npy")  # where np.save puts it
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vectors)
    return out, len(rows), bad


def _record_rows(path: str) -> dict[int, int]:
    """1-based line number of every record (non-blank line) -> its row, as JsonlReader numbers them."""
    rows = {}
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            raw = raw.removeprefix(b"\xef\xbb\xbf") if n == 1 else raw
            if raw.strip():
                rows[n] = len(rows)
    return rows
