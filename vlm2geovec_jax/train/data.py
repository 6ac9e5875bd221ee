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
from pathlib import Path
from typing import Any, Protocol

import ml_collections
import numpy as np

from vlm2geovec_jax.inputs.processing import Processing, from_pipeline_config
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
        while True:  # count a batch as read when it is handed out, so a checkpoint saves the next step
            step = self.step
            self.step += 1
            yield self.batch(step)

    def get_state(self) -> dict:
        return {"step": self.step}

    def set_state(self, state: dict) -> None:
        self.step = int(state["step"])


class PipelineSource:
    """The grain mixture (inputs/pipeline.py) behind the TrainSource interface."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self._it = iter(pipeline)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._it

    def get_state(self) -> dict:
        return self._it.get_state()

    def set_state(self, state: dict) -> None:
        self._it.set_state(state)


def pipeline_source(cfg: ModelConfig, config: ml_collections.ConfigDict, *, process_index: int,
                    process_count: int) -> PipelineSource:
    """``data.kind = "pipeline"``: TFDS datasets mixed by ``data.pipeline.tasks``.

    ``data.pipeline`` holds: data_dir, tokenizer (a directory with tokenizer.json; default: the assets of
    init.checkpoint), tasks (a list of {dataset, task, split, weight}), sub_batch_size, num_negatives,
    length_buckets, fixed_size ([H, W] or None), min_pixels, max_pixels, worker_count, on_bad_record, and
    interleave (default True; False trains the dual-encoder baseline, inputs/dual.py).
    """
    from vlm2geovec_jax.inputs import pipeline as pipe
    from vlm2geovec_jax.inputs.tokenizer import Tokenizer

    p = config.data.pipeline
    sub = p.get("sub_batch_size", 8)
    if config.batch_size % (sub * process_count):
        raise ValueError(f"batch_size {config.batch_size} must be a multiple of data.pipeline.sub_batch_size "
                         f"{sub} x {process_count} processes")
    tokenizer_dir, processing = artifact_parts(config)
    if tokenizer_dir is None:
        raise ValueError("data.pipeline.tokenizer: empty and no init.checkpoint to take the tokenizer from; "
                         "expected a directory with tokenizer.json")
    tasks = [pipe.tfds_task(t["dataset"], t["task"], split=t.get("split", "train"), data_dir=p.get("data_dir"),
                            weight=t.get("weight", 1.0)) for t in p.tasks]
    settings = pipe.PipelineConfig(
        sub_batch_size=sub, sub_batches=config.batch_size // (sub * process_count),
        num_negatives=p.get("num_negatives", 0), length_buckets=processing.length_buckets,
        box_format=processing.box_format,
        seed=config.init.seed, on_bad_record=p.get("on_bad_record", "skip"), process_index=process_index,
        process_count=process_count, worker_count=p.get("worker_count", 0), interleave=p.get("interleave", True))
    pipeline = pipe.Pipeline(tasks, tokenizer=Tokenizer.from_dir(tokenizer_dir), image_config=processing.image,
                             model_cfg=cfg, config=settings)
    return PipelineSource(pipeline)


def artifact_parts(config: ml_collections.ConfigDict) -> tuple[Path | None, Processing]:
    """(tokenizer directory or None, processing) of a run: what its model artifact carries.

    The pipeline's tokenizer and image/prompt settings when it reads real data; otherwise (synthetic pairs)
    those of ``init.checkpoint``, if any.
    """
    from vlm2geovec_jax.weights.checkpoint import assets_dir  # noqa: PLC0415 (imports orbax)

    init = config.init.checkpoint
    if config.data.kind == "pipeline":
        p = config.data.pipeline
        tokenizer = p.get("tokenizer", "") or (assets_dir(init) if init else None)
        return (Path(tokenizer) if tokenizer else None), from_pipeline_config(p, box_format=p.get("box_format", "qwen"))
    if init:
        return assets_dir(init), Processing.read(init)
    return None, Processing()


def make_source(cfg: ModelConfig, config: ml_collections.ConfigDict, *, process_index: int,
                process_count: int) -> TrainSource:
    """The configured source (``config.data.kind``) for this process."""
    if config.data.kind == "synthetic":
        return SyntheticPairs(cfg, config.data, global_batch=config.batch_size, seed=config.init.seed,
                              process_index=process_index, process_count=process_count)
    return pipeline_source(cfg, config, process_index=process_index, process_count=process_count)
