"""On-disk embedding cache keyed by (model key, item content hash), written in atomic chunks.

Evaluation embeds every unique item once, across the queries and candidates of all tasks. A suite takes
hours on a real model, so what is embedded is saved as it is produced: each chunk is one ``.npz`` written
to a temporary name and renamed into place (atomic on POSIX), so a killed run leaves only whole chunks
and the next run embeds only what is missing; a rerun embeds nothing. The cache directory belongs to one
model key (the checkpoint's identity plus anything else that changes an embedding, e.g. the box format);
``meta.json`` records it, and a directory of another key is refused rather than silently mixed.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vlm2geovec_jax.inputs.jsonl import box_to_dict, geo_to_dict
from vlm2geovec_jax.inputs.records import Item

EmbedFn = Callable[[list[Item]], np.ndarray]
DEFAULT_CHUNK = 256
_CHUNK_GLOB = "chunk-*.npz"


# ------------------------------------------------------------------------------------------ content keys
def image_digest(image: str | bytes) -> str:
    """sha256 hex of an image's encoded bytes (a path is read); an unreadable path is keyed by the path."""
    if isinstance(image, bytes):
        return hashlib.sha256(image).hexdigest()
    try:
        h = hashlib.sha256()
        with open(image, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:  # unreadable: key by path, so the embedder reports the file when it tries
        return "path:" + image


class ImageDigests:
    """image_digest memoised per image object: the items of one example share one bytes object (an RSVQA-HR
    image carries ~100 questions), so each picture is hashed once, not once per item."""

    def __init__(self):
        self._memo: dict[int, tuple[str | bytes, str]] = {}

    def __call__(self, image: str | bytes) -> str:
        hit = self._memo.get(id(image))
        if hit is None or hit[0] is not image:  # the held reference keeps the id from being reused
            hit = (image, image_digest(image))
            self._memo[id(image)] = hit
        return hit[1]


def item_key(item: Item, digest: Callable[[str | bytes], str] = image_digest) -> str:
    """sha256 hex of everything that reaches the prompt: text, instruction, image BYTES, size, boxes, geo.

    Two items with equal keys embed identically under one model key; an image is keyed by its content, so
    the same picture under two paths is embedded once and a changed file is embedded again.
    """
    canon = {"text": item.text, "instruction": item.instruction,
             "image": None if item.image is None else digest(item.image),
             "image_size": None if item.image_size is None else list(item.image_size),
             "boxes": [box_to_dict(b) for b in item.boxes],
             "geo": None if item.geo is None else geo_to_dict(item.geo)}
    return hashlib.sha256(json.dumps(canon, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def model_slug(model_key: str) -> str:
    """A directory name for a model key: readable prefix + hash, so two keys never share a folder."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", model_key)[-40:].strip("_") or "model"
    return f"{readable}-{hashlib.sha256(model_key.encode('utf-8')).hexdigest()[:12]}"


# -------------------------------------------------------------------------------------------------- cache
class EmbeddingCache:
    """Embeddings of one model key in ``directory``; ``get`` by item key, ``ensure`` embeds what is missing."""

    def __init__(self, directory: str | os.PathLike, model_key: str):
        if not model_key:
            raise ValueError("model_key: expected the checkpoint identity, got an empty string")
        self.directory, self.model_key = Path(directory), model_key
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dim: int | None = None
        self._check_meta()
        self._index: dict[str, np.ndarray] = {}
        for path in sorted(self.directory.glob(_CHUNK_GLOB)):
            self._load_chunk(path)

    def _check_meta(self) -> None:
        meta = self.directory / "meta.json"
        if meta.is_file():
            data = json.loads(meta.read_text(encoding="utf-8"))
            if data.get("model_key") != self.model_key:
                raise ValueError(f"{self.directory}: embedding cache of model key {data.get('model_key')!r}, "
                                 f"not {self.model_key!r}; expected a directory of this model key")
            self.dim = data.get("dim")
        else:
            atomic_write_text(meta, json.dumps({"model_key": self.model_key, "dim": None}))

    def _load_chunk(self, path: Path) -> None:
        with np.load(path, allow_pickle=False) as z:
            keys, emb = z["keys"], z["embeddings"]
        if emb.ndim != 2 or len(keys) != len(emb):
            raise ValueError(f"{path}: expected keys [n] and embeddings [n, D], got {keys.shape} and {emb.shape}")
        self._set_dim(emb.shape[1], path)
        for k, row in zip(keys.tolist(), emb):
            self._index[k] = row

    def _set_dim(self, dim: int, where: Path | str) -> None:
        if self.dim is None:
            self.dim = int(dim)
            atomic_write_text(self.directory / "meta.json", json.dumps({"model_key": self.model_key, "dim": self.dim}))
        elif dim != self.dim:
            raise ValueError(f"{where}: embeddings of dim {dim}, but this cache holds dim {self.dim}")

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """[len(keys), D] float32 rows in order; a key never embedded is a KeyError naming it."""
        missing = [k for k in keys if k not in self._index]
        if missing:
            raise KeyError(f"{len(missing)} item(s) not embedded yet, e.g. {missing[0]}")
        if not keys:
            return np.zeros((0, self.dim or 0), np.float32)
        return np.stack([self._index[k] for k in keys]).astype(np.float32, copy=False)

    def ensure(self, items: dict[str, Item], embed_fn: EmbedFn, *, chunk_size: int = DEFAULT_CHUNK,
               progress: bool = True, desc: str = "embed") -> int:
        """Embeds the items (key -> item) not cached yet, chunk by chunk, each saved before the next; returns
        how many were embedded. ``embed_fn(items) -> [n, D]`` must return one finite row per item."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive number of items, got {chunk_size}")
        todo = [(k, it) for k, it in items.items() if k not in self._index]
        with tqdm(total=len(todo), unit="item", desc=desc, disable=not progress or not todo) as bar:
            for start in range(0, len(todo), chunk_size):
                part = todo[start:start + chunk_size]
                emb = self._checked(embed_fn([it for _, it in part]), len(part))
                self._write_chunk([k for k, _ in part], emb)
                bar.update(len(part))
        return len(todo)

    def _checked(self, emb, n: int) -> np.ndarray:
        emb = np.asarray(emb, np.float32)
        if emb.ndim != 2 or emb.shape[0] != n:
            raise ValueError(f"embed_fn: expected [{n}, D] embeddings for {n} items, got shape {emb.shape}")
        bad = np.nonzero(~np.isfinite(emb).all(axis=1))[0]
        if bad.size:
            raise ValueError(f"embed_fn: row {int(bad[0])} of a chunk of {n} items is not finite (NaN/inf); "
                             "expected finite embeddings (was an item skipped?)")
        self._set_dim(emb.shape[1], "embed_fn")
        return emb

    def _write_chunk(self, keys: list[str], emb: np.ndarray) -> None:
        digest = hashlib.sha256("\n".join(keys).encode("ascii")).hexdigest()[:16]
        final = self.directory / f"chunk-{digest}.npz"
        tmp = self.directory / f"tmp-{uuid.uuid4().hex}.npz"
        with open(tmp, "wb") as f:
            np.savez(f, keys=np.asarray(keys), embeddings=emb)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        for k, row in zip(keys, emb):
            self._index[k] = row


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text to a temporary name beside ``path`` and rename it into place: readers see old or new."""
    path = Path(path)
    tmp = path.with_name(f"tmp-{uuid.uuid4().hex}-{path.name}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
