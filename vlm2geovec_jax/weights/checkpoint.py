"""The model checkpoint: an orbax checkpoint of the encoder's parameters plus its config and assets.

Layout::

    CKPT/model_config.json   {"format": ..., "model": ModelConfig.to_dict()}
    CKPT/params/             orbax StandardCheckpointer (sharded, restorable onto any mesh)
    CKPT/assets/             tokenizer/processor files and the original config.json, carried to exports

A checkpoint is written to a temporary sibling directory and renamed into place when complete, so an
interrupted write never leaves a half-written checkpoint under the final name.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils

from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.models.encoder import Encoder

FORMAT = "vlm2geovec-model/1"
ASSET_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
               "added_tokens.json", "preprocessor_config.json", "chat_template.json", "chat_template.jinja",
               "generation_config.json")
HF_CONFIG_ASSET = "hf_config.json"


def is_model_checkpoint(path: str | os.PathLike) -> bool:
    return (Path(path) / "model_config.json").is_file() and (Path(path) / "params").is_dir()


def save_model(path: str | os.PathLike, model: Encoder, *, assets_from: str | os.PathLike | None = None,
               hf_config: dict | None = None, overwrite: bool = False) -> Path:
    """Saves parameters, config and assets; atomic at the directory level."""
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
        _finish(path, tmp, model, assets_from, hf_config)
    _barrier("save_model: checkpoint in place")
    return path


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _finish(path: Path, tmp: Path, model: Encoder, assets_from, hf_config) -> None:
    """Process 0: config and assets into the staging directory, then the atomic rename into place."""
    # The kernel is the loading machine's choice, not the model's: the artifact records 'auto'.
    cfg = model.cfg.replace(attention="auto")
    (tmp / "model_config.json").write_text(json.dumps({"format": FORMAT, "model": cfg.to_dict()}, indent=2))
    assets = tmp / "assets"
    assets.mkdir()
    if assets_from is not None:
        for name in ASSET_FILES:
            if (Path(assets_from) / name).is_file():
                shutil.copy2(Path(assets_from) / name, assets / name)
    if hf_config is not None:
        (assets / HF_CONFIG_ASSET).write_text(json.dumps(hf_config, indent=2))
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old)
    else:
        tmp.rename(path)


def read_model_config(path: str | os.PathLike) -> ModelConfig:
    file = Path(path) / "model_config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing; {path} is not a vlm2geovec model checkpoint")
    meta = json.loads(file.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{file}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return ModelConfig.from_dict(meta["model"])


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
