"""Held-out evaluation during training: InfoNCE and P@1 on a FIXED evaluation set with FIXED candidates.

Switched on by ``eval.every = K > 0`` in any training config: every K steps and at the last step the trainer
embeds the same evaluation batches (drawn once, from ``eval.split`` with ``eval.seed``, by the training data
source itself, so every run of a study — any size, any budget — sees identical queries and candidates) and
scores every query against ALL the evaluation targets (positives and hard negatives of every batch) with a
fixed temperature. The loss is what scaling laws are fitted on (a contrastive log-likelihood over fixed
negatives, as Fang et al. fit dense retrieval); P@1 over the same candidates is reported beside it.
"""
from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.train import data as data_lib
from vlm2geovec_jax.train.loss import info_nce


def eval_source_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The training config with the evaluation split, seed and batch size in place of the training ones."""
    ev = config.eval
    out = copy.deepcopy(config)
    out.init.seed = ev.seed
    out.batch_size = ev.batch_size or config.batch_size
    if config.data.kind == "pipeline":
        out.data.pipeline.tasks = [{**dict(t), "split": ev.split} for t in config.data.pipeline.tasks]
    return out


class HeldOutEval:
    """Embeds the fixed evaluation batches with the current weights; returns eval_loss and eval_p_at_1."""

    def __init__(self, config: ml_collections.ConfigDict, cfg: ModelConfig, graphdef, mesh, to_global):
        ev = config.eval
        self.every, self.last = ev.every, config.num_steps
        self.temperature = ev.temperature or config.loss.temperature
        source = data_lib.make_source(cfg, eval_source_config(config), process_index=jax.process_index(),
                                      process_count=jax.process_count())
        batches = iter(source)
        self.batches = [to_global(next(batches), mesh) for _ in range(ev.num_batches)]
        self._embed = jax.jit(lambda params, frozen, inputs: nnx.merge(graphdef, params, frozen)(inputs))
        self._score = jax.jit(self._score_fn)

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.last

    def _score_fn(self, queries, targets, query_valid, target_valid, target_ids):
        loss, metrics = info_nce(jnp.concatenate(queries), jnp.concatenate(targets), temperature=self.temperature,
                                 direction="q2t", query_valid=jnp.concatenate(query_valid),
                                 target_valid=jnp.concatenate(target_valid), target_ids=jnp.concatenate(target_ids))
        return {"eval_loss": loss, "eval_p_at_1": metrics["accuracy"], "eval_queries": metrics["num_valid"]}

    def __call__(self, params: dict, frozen: nnx.State) -> dict[str, float]:
        model = params["model"]
        queries = [self._embed(model, frozen, b["query"]) for b in self.batches]
        targets = [self._embed(model, frozen, b["target"]) for b in self.batches]
        scores = self._score(queries, targets, [b["query_valid"] for b in self.batches],
                             [b["target_valid"] for b in self.batches], [b["target_ids"] for b in self.batches])
        return {k: float(v) for k, v in jax.device_get(scores).items()}


def from_config(config: ml_collections.ConfigDict, cfg: ModelConfig, graphdef, mesh, to_global) -> HeldOutEval | None:
    """The hook when ``eval.every`` > 0, else None."""
    return HeldOutEval(config, cfg, graphdef, mesh, to_global) if config.eval.every > 0 else None
