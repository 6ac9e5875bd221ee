"""The model checkpoint: one self-contained artifact that embeds, trains on, evaluates and exports.

Layout::

    CKPT/model_config.json   {"format": ..., "model": ModelConfig.to_dict(), "source": ...}
    CKPT/params/             orbax StandardCheckpointer (sharded, restorable onto any mesh)
    CKPT/processing.json     image processing, prompt format, length buckets (inputs/processing.py)
    CKPT/assets/             tokenizer files, preprocessor_config.json and the original config.json,
                             carried to exports

``source`` names the transformers directory the weights came from (import-hf), so an adapter trained on
them can name its base. Every part is required: ``check_complete`` names the first one missing.

A checkpoint is written to a temporary sibling directory and renamed into place when complete, so an
interrupted write never leaves a half-written checkpoint under the final name.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils

from vlm2geovec_jax.inputs.processing import FILE as PROCESSING_FILE, Processing
from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.models.encoder import Encoder
from vlm2geovec_jax.weights.hf import CheckpointError

FORMAT = "vlm2geovec-model/1"
ASSET_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
               "added_tokens.json", "preprocessor_config.json", "chat_template.json", "chat_template.jinja",
               "generation_config.json")
HF_CONFIG_ASSET = "hf_config.json"


PARTS = {  # part -> (path in the checkpoint, what it is)
    "model config": ("model_config.json", "the encoder's shapes"),
    "weights": ("params", "the orbax parameter tree"),
    "processing": (PROCESSING_FILE, "image processing, prompt format and length buckets"),
    "tokenizer": ("assets/tokenizer.json", "the tokenizer"),
}


def is_model_checkpoint(path: str | os.PathLike) -> bool:
    return (Path(path) / "model_config.json").is_file() and (Path(path) / "params").is_dir()


def check_complete(path: str | os.PathLike) -> None:
    """Raises CheckpointError naming the first part the checkpoint lacks."""
    if not Path(path).is_dir():
        raise CheckpointError(f"{path}: not found; expected a model checkpoint directory")
    if not (Path(path) / "model_config.json").is_file():
        raise CheckpointError(f"{path}: not a vlm2geovec model checkpoint (no model_config.json); import a "
                              "transformers directory with import-hf first")
    for part, (name, what) in PARTS.items():
        if not (Path(path) / name).exists():
            raise CheckpointError(f"{path}: incomplete model checkpoint: the {part} ({name}, {what}) is missing; "
                                  "write it again with import-hf or train")


def save_model(path: str | os.PathLike, model: Encoder, *, assets_from: str | os.PathLike | None = None,
               processing: Processing | None = None, hf_config: dict | None = None,
               source: str | None = None, overwrite: bool = False) -> Path:
    """Saves parameters, config, processing and assets; atomic at the directory level.

    ``assets_from``: a directory with the tokenizer files (a transformers directory, a tokenizer built for
    the run). ``processing`` defaults to that directory's preprocessor_config.json, else the defaults.
    """
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass overwrite=True / --overwrite to replace it)")
    # Every process writes its shards into the SAME staging directory (named by process 0's pid); only
    # process 0 writes the metadata and renames it into place.
    token = os.getpid()
    if jax.process_count() > 1:
        token = int(multihost_utils.broadcast_one_to_all(np.int32(token)))
    tmp = path.with_name(f".{path.name}.tmp-{token}")
    leader = jax.process_index() == 0
    if leader:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier("save_model: staging directory ready")
    # Uncompressed: tensorstore then writes straight from the arrays, where zstd would hold the compressed
    # output of the whole model in memory until the save commits (1.75 GB extra for a 1.99 GB model, to save
    # ~8% of the disk). The format stays the one StandardCheckpointer restores.
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_compression=False))
    checkpointer.save(tmp / "params", args=ocp.args.PyTreeSave(nnx.to_pure_dict(nnx.state(model, nnx.Param))))
    if leader:
        if processing is None:
            processing = Processing.from_hf_dir(assets_from) if assets_from is not None else Processing()
        _finish(path, tmp, model, assets_from, processing, hf_config, source)
    _barrier("save_model: checkpoint in place")
    return path


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _finish(path: Path, tmp: Path, model: Encoder, assets_from, processing: Processing, hf_config,
            source) -> None:
    """Process 0: config, processing and assets into the staging directory, then the atomic rename."""
    # The kernel is the loading machine's choice, not the model's: the artifact records 'auto'.
    cfg = model.cfg.replace(attention="auto")
    meta = {"format": FORMAT, "model": cfg.to_dict(), **({"source": source} if source else {})}
    (tmp / "model_config.json").write_text(json.dumps(meta, indent=2))
    processing.save(tmp)
    assets = tmp / "assets"
    assets.mkdir()
    if assets_from is not None:
        for name in ASSET_FILES:
            if (Path(assets_from) / name).is_file():
                shutil.copy2(Path(assets_from) / name, assets / name)
    (assets / "preprocessor_config.json").write_text(json.dumps(processing.preprocessor_config(), indent=2))
    if hf_config is not None:
        (assets / HF_CONFIG_ASSET).write_text(json.dumps(hf_config, indent=2))
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old)
    else:
        tmp.rename(path)


def read_meta(path: str | os.PathLike) -> dict:
    file = Path(path) / "model_config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing; {path} is not a vlm2geovec model checkpoint")
    meta = json.loads(file.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{file}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def read_model_config(path: str | os.PathLike) -> ModelConfig:
    return ModelConfig.from_dict(read_meta(path)["model"])


def abstract_model(cfg: ModelConfig) -> Encoder:
    """The encoder with shapes but no values (nothing is allocated)."""
    return nnx.eval_shape(lambda: Encoder(cfg, rngs=nnx.Rngs(0)))


def load_model(path: str | os.PathLike, *, shardings: nnx.State | None = None,
               **config_overrides) -> Encoder:
    """Restores an encoder; ``shardings`` (a state of NamedShardings) places each parameter as it is read.

    ``config_overrides`` may change runtime fields (dtype, remat_policy, attention), not shapes; a
    param_dtype override casts after restore.
    """
    stored = read_model_config(path)
    cfg = stored.replace(**config_overrides) if config_overrides else stored
    # The stored shapes and dtypes, built with the runtime fields asked for (attention is checked here).
    graphdef, state = nnx.split(abstract_model(cfg.replace(param_dtype=stored.param_dtype)))
    shapes = nnx.to_pure_dict(state)
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    placement = nnx.to_pure_dict(shardings) if shardings is not None else jax.tree.map(lambda _: default, shapes)
    target = jax.tree.map(lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s), shapes, placement)
    restored = ocp.StandardCheckpointer().restore(Path(path).absolute() / "params", target)
    if cfg.param_dtype != stored.param_dtype:
        restored = jax.tree.map(lambda x: x.astype(cfg.param_dtype), restored)
    graphdef, state = nnx.split(abstract_model(cfg))
    nnx.replace_by_pure_dict(state, restored)
    return nnx.merge(graphdef, state)


def assets_dir(path: str | os.PathLike) -> Path:
    return Path(path) / "assets"


def checkpoint_key(ckpt: str | os.PathLike) -> str:
    """Identity of a checkpoint directory: every file's path, size and mtime, and the text of its JSON files.

    Cheap (no weights are read); copying a checkpoint changes mtimes, which costs one re-embedding, never a
    wrong cache hit.
    """
    root = Path(ckpt)
    if not root.exists():
        raise FileNotFoundError(f"{root}: checkpoint not found")
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for p in files:
        stat = p.stat()
        h.update(f"{p.relative_to(root) if root.is_dir() else p.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        if p.suffix == ".json" and stat.st_size < 1 << 20:
            h.update(p.read_bytes())
    return f"{root.resolve().name}@{h.hexdigest()[:16]}"
