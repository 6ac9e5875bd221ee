"""The train and eval steps over abstract inputs on a topology's devices: nothing allocated, no data read.

The train step is ``trainer.jit_train_step``, the function ``vlm2geovec train`` runs, over the model, trainable
split, optimizer state and batch layout the trainer makes (their shardings from the same rules); the eval step
is the Embedder's jitted forward, which ``vlm2geovec eval`` runs with the whole model and batch on one chip.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P, SingleDeviceSharding

from vlm2geovec_jax import sharding as shard_lib
from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.models.encoder import Encoder
from vlm2geovec_jax.models.model_inputs import EncoderInputs, prepare_inputs
from vlm2geovec_jax.plan.shapes import Shapes
from vlm2geovec_jax.train import trainer
from vlm2geovec_jax.train.loss import content_id_words
from vlm2geovec_jax.train.optimizer import make_optimizer

# What each top-level argument of a step is, for the memory breakdown (keyed by the jitted function's arg names).
TRAIN_ARGS = {"params": "params", "frozen": "params", "opt_state": "optimizer", "batch": "batch", "step": "batch"}
EVAL_ARGS = {"state": "params", "batch": "batch"}


@dataclasses.dataclass
class Step:
    """A jitted function, the abstract arguments to lower it with, and what each argument name is."""

    fn: Callable
    args: tuple
    kinds: dict[str, str]
    mesh: Any = None       # the step is traced under jax.set_mesh(mesh), as the trainer runs it


def _abstract(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _inputs(cfg: ModelConfig, rows: int, length: int, patches: int, sharding) -> EncoderInputs:
    """Abstract EncoderInputs with the dtypes and layout prepare_inputs gives (one real row, broadcast)."""
    one = prepare_inputs(cfg, np.zeros((1, length), np.int32), patches_per_image=patches, images_per_row=1)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct((rows, *x.shape[1:]), x.dtype, sharding=sharding), one)


def train_step(config: ml_collections.ConfigDict, devices: Sequence, shapes: Shapes) -> Step:
    """``trainer.jit_train_step`` over abstract (params, opt_state, frozen, batch, step) on ``devices``."""
    mesh = shard_lib.make_mesh(config.mesh.to_dict(), devices=list(devices))
    cfg = ModelConfig.from_dict(config.model.to_dict())
    with jax.set_mesh(mesh):
        model = nnx.eval_shape(lambda: trainer.init_model(config))
        state_shardings = shard_lib.state_shardings(nnx.state(model), mesh)
        nnx.update(model, _abstract(nnx.state(model), state_shardings))
        graphdef, params, frozen = trainer.split_trainable(model, config)
        replicated = NamedSharding(mesh, P())
        params = jax.tree.map(lambda x: x if isinstance(x, jax.ShapeDtypeStruct) else
                              jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), params)
        tx, schedule = make_optimizer(config.optimizer, config.num_steps)
        opt_shardings = jax.jit(tx.init).lower(params).compile().output_shardings
        opt_state = _abstract(jax.eval_shape(tx.init, params), opt_shardings)
        batch_sharding = NamedSharding(mesh, P(trainer.BATCH_AXES))
        batch = {"query": _inputs(cfg, shapes.query_rows, shapes.length, shapes.patches, batch_sharding),
                 "target": _inputs(cfg, shapes.target_rows, shapes.length, shapes.patches, batch_sharding)}
        for name, rows in (("target_ids", shapes.target_rows), ("query_valid", shapes.query_rows),
                           ("target_valid", shapes.target_rows)):
            host = content_id_words(np.zeros(rows, np.int64)) if name == "target_ids" else np.ones(rows, bool)
            batch[name] = jax.ShapeDtypeStruct((rows, *host.shape[1:]), host.dtype, sharding=batch_sharding)
        step = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
        fn = trainer.jit_train_step(graphdef, config, mesh, tx, schedule)
    return Step(fn, (params, opt_state, frozen, batch, step), TRAIN_ARGS, mesh)


def eval_step(config: ml_collections.ConfigDict, device, shapes: Shapes, rows: int | None = None) -> Step:
    """The Embedder's jitted forward of the merged model (``param_dtype`` weights), all on ``device``."""
    from vlm2geovec_jax.embedder import _embed
    cfg = ModelConfig.from_dict(config.model.to_dict())
    one = SingleDeviceSharding(device)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Encoder(cfg, rngs=nnx.Rngs(0))))
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), state)
    batch = _inputs(cfg, rows or shapes.eval_rows, shapes.eval_length, shapes.eval_patches, one)
    # A one-chip mesh in context, so the traced model knows it is compiled for a TPU (models/attention.py).
    return Step(_embed, (graphdef, state, batch), EVAL_ARGS, shard_lib.make_mesh({}, devices=[device]))
