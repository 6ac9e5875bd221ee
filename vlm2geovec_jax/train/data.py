"""Training data sources: what the trainer iterates, whatever produces it.

A source yields this process's rows of each global batch as a dict of numpy arrays::

    query         EncoderInputs [Bq local rows]
    target        EncoderInputs [Bq * (1 + H) local rows], grouped per query, positive first
    target_ids    [Bq * (1 + H)] int64 content ids (equal ids = the same target: false negatives masked)
    query_valid   [Bq] bool, target_valid [Bq * (1 + H)] bool (padding rows are False)

and checkpoints its position with ``get_state()`` / ``set_state()`` (saved with the model, so resume is exact).
Sources: ``synthetic`` (learnable token-level pairs, for tests and smoke runs) and ``pipeline`` (the grain
mixture of real datasets, inputs/pipeline.py).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import ml_collections
import numpy as np

from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.models.model_inputs import prepare_inputs


class TrainSource(Protocol):
    def __iter__(self) -> Iterator[dict[str, Any]]: ...
    def get_state(self) -> dict: ...
    def set_state(self, state: dict) -> None: ...


class SyntheticPairs:
    """Learnable pairs with no download: query = a concept's code + noise, target = another code of it.

    The concept of row i of step s is drawn from (seed, s), so every process computes the same global batch
    and keeps its own rows, and a restored step counter replays exactly. Concepts repeat within a batch
    (they are few), which exercises the false-negative mask.
    """

    def __init__(self, cfg: ModelConfig, data: ml_collections.ConfigDict, *, global_batch: int, seed: int,
                 process_index: int = 0, process_count: int = 1):
        if global_batch % process_count:
            raise ValueError(f"batch_size {global_batch} is not divisible by {process_count} processes")
        self.cfg, self.data, self.global_batch, self.seed = cfg, data, global_batch, seed
        self.rows = slice(process_index * global_batch // process_count,
                          (process_index + 1) * global_batch // process_count)
        self.vocab = min(cfg.vision_start_token_id, cfg.text.vocab_size) - 1  # stay clear of special ids
        codes = np.random.default_rng(seed).integers(0, self.vocab, (2, data.num_concepts, 4))
        self.query_codes, self.target_codes = codes
        self.step = 0

    def batch(self, step: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, step])
        concepts = rng.integers(0, self.data.num_concepts, self.global_batch)[self.rows]
        n = len(concepts)
        noise_q = rng.integers(0, self.vocab, (self.global_batch, self.data.query_length - 4))[self.rows]
        noise_t = rng.integers(0, self.vocab, (self.global_batch, self.data.target_length - 4))[self.rows]
        # Codes last: the pooled (last) token must carry the concept, noise before it varies per example.
        query = np.concatenate([noise_q, self.query_codes[concepts]], axis=1)
        target = np.concatenate([noise_t, self.target_codes[concepts]], axis=1)
        return dict(query=prepare_inputs(self.cfg, query), target=prepare_inputs(self.cfg, target),
                    target_ids=concepts.astype(np.int64), query_valid=np.ones(n, bool),
                    target_valid=np.ones(n, bool))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            yield self.batch(self.step)
            self.step += 1

    def get_state(self) -> dict:
        return {"step": self.step}

    def set_state(self, state: dict) -> None:
        self.step = int(state["step"])


def make_source(cfg: ModelConfig, config: ml_collections.ConfigDict, *, process_index: int,
                process_count: int) -> TrainSource:
    """The configured source (``config.data.kind``) for this process."""
    if config.data.kind == "synthetic":
        return SyntheticPairs(cfg, config.data, global_batch=config.batch_size, seed=config.init.seed,
                              process_index=process_index, process_count=process_count)
    from vlm2geovec_jax.inputs import pipeline
    return pipeline.train_source(cfg, config, process_index=process_index, process_count=process_count)
