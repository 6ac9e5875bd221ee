"""The grain training pipeline: a weighted mixture of tasks in homogeneous sub-batches, checkpointable.

Each step holds ``sub_batches`` sub-batches of ``sub_batch_size`` pairs. A sub-batch comes from ONE task, and
with ``loss.same_task_negatives`` the loss keeps a query's negatives on its own task (a caption is then never a
negative of a VQA answer; off by default, as in VLM2Vec); the task of each sub-batch is drawn with probability
proportional to the task weights. A step is a pure function of (seed, step index), which makes the pipeline
deterministic, exactly resumable (the iterator state is grain's: how many steps were read) and parallel:

- the task plan is drawn in blocks of 4096 sub-batch slots from ``numpy.random.default_rng([seed, block])``;
  it is the same on every process, so sub-batch j of a step is one task across the GLOBAL batch;
- the c-th sub-batch of task k reads positions c*s .. c*s+s-1 of that task's stream, which is the
  process's shard of the task's source in a fresh seeded permutation every epoch (``EpochShuffle``);
- one example can give several pairs (five captions, many questions): one is drawn per visit.

Sharding: process p of P reads the contiguous shard ``[p*n//P, (p+1)*n//P)`` of every source (disjoint,
covering). Each process yields its local rows; the trainer assembles the global batch.

Shapes (bounded compilations). Every array is batch-major (models/model_inputs.py). Rows: queries
``B = sub_batches * sub_batch_size``; targets ``B * (1 + H)``, grouped per query, positive first
(train/loss.py's layout), H = ``num_negatives`` (extra hard negatives are dropped at random, missing ones are
invalid filler rows). Lengths: each side is padded to the smallest of ``length_buckets`` that fits. Image
budget: one image slot per row (an item has at most one image) of ``patches_per_image`` patches: in
fixed-resolution mode (ImageConfig.fixed_size=(H, W)) exactly H*W / patch_size**2, otherwise max_pixels /
patch_size**2 rounded down to whole merge windows, the most smart_resize can give; a side with no image at all
gets a slot of merge_size**2 empty patches instead, so the vision tower costs nothing on text-only sub-batches.
Each side thus compiles at most ``2 * len(length_buckets)`` shapes. At 448x448 the budget is 1024 patches
(256 image tokens), 4.7 MiB of float32 pixels per row.

Bad records: ``on_bad_record="raise"`` raises the RecordError (naming the source, record and field);
``"skip"`` turns the pair into invalid rows, logs it and counts it in ``Pipeline.bad`` (a BadRecordLog)
when its step is consumed (not when a thread or worker builds it ahead), and the pipeline keeps running
with the same shapes.

Parallelism: ``worker_count`` grain processes build whole steps (worker w builds steps w, w+W, ...; the
order is kept), and in each process ``read_threads`` threads build up to ``prefetch_steps`` steps ahead.

Each step is a dict: ``query`` / ``target`` (EncoderInputs), ``query_valid`` [B] / ``target_valid``
[B*(1+H)] (bool; a query row is valid only when its positive is too), ``query_ids`` / ``target_ids`` (int64
content ids, 0 for filler, for false-negative masking; train/loss.py's content_id_words splits them into
two uint32 words for JAX's 32-bit mode), ``tasks`` (the task name of each sub-batch), ``sources``
("dataset/split/id" of each query row, "" for a skipped one), and ``bad_records`` (what was skipped in this
step; the iterator moves it into ``Pipeline.bad`` and removes it).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import grain
import numpy as np

from vlm2geovec_jax.inputs.adapters import Adapter, SourceInfo
from vlm2geovec_jax.inputs.collate import EncodedItem, check_compatible, collate_encoded, encode_item, filler_item
from vlm2geovec_jax.inputs.dual import dual_pair
from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.inputs.image import ImageConfig
from vlm2geovec_jax.inputs.jsonl import BadRecordLog
from vlm2geovec_jax.inputs.records import Pair, located
from vlm2geovec_jax.inputs.tokenizer import DEFAULT_BUCKETS, Tokenizer
from vlm2geovec_jax.models.config import ModelConfig

log = logging.getLogger(__name__)
PLAN_BLOCK = 4096
MAX_STEPS = 2 ** 62


@dataclasses.dataclass(frozen=True)
class Task:
    """One mixture component: a random-access source of examples, its adapter, and its sampling weight."""

    name: str
    source: Sequence                 # len() and [i]: tfds.data_source, ArrayRecordDataSource, a list, ...
    adapter: Adapter
    info: SourceInfo
    weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Batch layout, budgets, sharding and worker settings (see the module docstring)."""

    sub_batch_size: int = 8
    sub_batches: int = 4
    num_negatives: int = 0
    length_buckets: tuple[int, ...] = DEFAULT_BUCKETS
    patches_per_image: int | None = None      # None: the most the image config can give
    seed: int = 0
    on_bad_record: str = "raise"
    process_index: int = 0
    process_count: int = 1
    worker_count: int = 0
    read_threads: int = 1                     # threads building steps ahead in each process (0: none)
    prefetch_steps: int = 2                   # steps built ahead per process; each holds its pixel arrays
    box_format: str = "qwen"
    side: str = "right"
    interleave: bool = True                   # False: the dual-encoder mode (inputs/dual.py) on every pair

    def __post_init__(self) -> None:
        if self.sub_batch_size < 1 or self.sub_batches < 1 or self.num_negatives < 0:
            raise ValueError("PipelineConfig: need sub_batch_size >= 1, sub_batches >= 1, num_negatives >= 0")
        if self.on_bad_record not in ("raise", "skip"):
            raise ValueError(f"on_bad_record must be 'raise' or 'skip', got {self.on_bad_record!r}")
        if not 0 <= self.process_index < self.process_count:
            raise ValueError(f"process_index {self.process_index} not in [0, process_count={self.process_count})")
        if not 0 <= self.seed < 2 ** 31:
            raise ValueError(f"seed must be in [0, 2**31), got {self.seed}")

    @property
    def batch_size(self) -> int:
        """Query rows per step on this process."""
        return self.sub_batch_size * self.sub_batches


def patch_budget(image_config: ImageConfig) -> int:
    """Patches per image that every image fits in: exact for fixed_size, max_pixels-bound otherwise."""
    if image_config.fixed_size is not None:
        h, w = image_config.fixed_size
        return (h // image_config.patch_size) * (w // image_config.patch_size)
    window = image_config.merge_size ** 2
    return image_config.max_pixels // image_config.patch_size ** 2 // window * window


# ----------------------------------------------------------------------------------------------- the plan
class TaskPlan:
    """Which task each sub-batch slot draws, and how many sub-batches of that task came before it."""

    def __init__(self, weights: Sequence[float], seed: int):
        w = np.asarray(weights, np.float64)
        if w.ndim != 1 or not len(w) or np.any(~np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"task weights must be finite, >= 0 and not all 0, got {list(weights)}")
        self.p, self.seed = w / w.sum(), seed
        self._cum: list[np.ndarray] = [np.zeros(len(w), np.int64)]  # counts before each block
        self._block: tuple[int, np.ndarray] | None = None
        self._lock = threading.Lock()  # grain's read threads build steps concurrently

    def __getstate__(self) -> dict:  # pickled into grain workers: a lock does not pickle
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def _choices(self, block: int) -> np.ndarray:
        cached = self._block  # one read: another thread may replace it meanwhile
        if cached is None or cached[0] != block:
            rng = np.random.default_rng([self.seed, 0x7A5C, block])
            cached = self._block = (block, rng.choice(len(self.p), size=PLAN_BLOCK, p=self.p))
        return cached[1]

    def slot(self, q: int) -> tuple[int, int]:
        """(task index, how many earlier slots chose that task) for global sub-batch slot q."""
        block, offset = divmod(q, PLAN_BLOCK)
        with self._lock:
            while len(self._cum) <= block:
                b = len(self._cum) - 1
                self._cum.append(self._cum[b] + np.bincount(self._choices(b), minlength=len(self.p)))
        choices = self._choices(block)
        k = int(choices[offset])
        return k, int(self._cum[block][k] + np.count_nonzero(choices[:offset] == k))


def shard_bounds(n: int, process_index: int, process_count: int) -> tuple[int, int]:
    """The contiguous, disjoint shard of n records that one process reads."""
    return n * process_index // process_count, n * (process_index + 1) // process_count


class EpochShuffle:
    """Position -> record index over [lo, hi): a fresh permutation every epoch, a pure function of the seed.

    grain's MapDataset.shuffle does the same with a Feistel index shuffle, but that costs ~8 ms per index
    here; one numpy permutation per epoch (4 bytes a record, only the current epoch kept) costs ~nothing.
    """

    def __init__(self, lo: int, hi: int, seed: tuple[int, ...]):
        self.lo, self.n, self.seed = lo, hi - lo, seed
        self._epoch: tuple[int, np.ndarray] | None = None

    def __getitem__(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        cached = self._epoch  # one read: another thread may replace it meanwhile
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([*self.seed, epoch])
            cached = self._epoch = (epoch, rng.permutation(self.n).astype(np.int32 if self.n < 2 ** 31 else np.int64))
        return self.lo + int(cached[1][offset])


# ------------------------------------------------------------------------------------------- step builder
class _BuildStep(grain.transforms.Map):
    """step index -> the step's batch dict. Picklable, so grain workers build steps in parallel."""

    def __init__(self, tasks: Sequence[Task], tokenizer: Tokenizer, image_config: ImageConfig,
                 model_cfg: ModelConfig, config: PipelineConfig):
        self.tasks, self.tokenizer, self.image_config, self.model_cfg, self.config = (
            tuple(tasks), tokenizer, image_config, model_cfg, config)
        self.plan = TaskPlan([t.weight for t in tasks], config.seed)
        self.streams = [self._stream(i, t) for i, t in enumerate(tasks)]
        self.patches = config.patches_per_image or patch_budget(image_config)

    def _stream(self, k: int, task: Task) -> "EpochShuffle":
        lo, hi = shard_bounds(len(task.source), self.config.process_index, self.config.process_count)
        if hi <= lo:
            raise ValueError(f"task {task.name!r}: source of {len(task.source)} records has no record for process "
                             f"{self.config.process_index} of {self.config.process_count}")
        return EpochShuffle(lo, hi, (self.config.seed, 0x5EED, k))

    def map(self, step: int) -> dict[str, Any]:
        cfg = self.config
        queries, targets, tasks, sources, bad = [], [], [], [], []
        for j in range(cfg.sub_batches):
            k, c = self.plan.slot(step * cfg.sub_batches + j)
            tasks.append(self.tasks[k].name)
            for r in range(cfg.sub_batch_size):
                q, t, src, err = self._row(k, c * cfg.sub_batch_size + r)
                queries.append(q)
                targets.extend(t)
                sources.append(src)
                if err is not None:
                    bad.append((err.reason, err.file, err.record, err.field))
        return self._collate(queries, targets, tasks, sources, bad)

    def _row(self, k: int, position: int) -> tuple[EncodedItem | None, list, str, RecordError | None]:
        """One query and its 1 + H targets (None = invalid), or the error that made the row invalid."""
        task = self.tasks[k]
        index = int(self.streams[k][position])
        try:
            try:
                pairs = task.adapter(task.source[index], task.info)
                if not pairs:
                    raise RecordError(f"the example gives no pair for task {task.name!r}")
                pair = pairs[_draw(self.config.seed, k, position, len(pairs))]
                pair = pair if self.config.interleave else dual_pair(pair)
                return (*self._encode(pair, position, k), f"{pair.source.dataset}/{pair.source.split}/"
                        f"{pair.source.id}", None)
            except RecordError as err:
                raise located(err, file=f"{task.info.dataset}[{task.info.split}]", record=index) from None
        except RecordError as err:
            if self.config.on_bad_record == "raise":
                raise
            return None, [None] * (1 + self.config.num_negatives), "", err

    def _encode(self, pair: Pair, position: int, k: int) -> tuple[EncodedItem, list[EncodedItem | None]]:
        h = self.config.num_negatives
        chosen = range(len(pair.negatives))
        if len(chosen) > h:
            rng = np.random.default_rng([self.config.seed, 0xBE6, k, position])
            chosen = sorted(rng.choice(len(chosen), h, replace=False).tolist())
        items = [("query", pair.query), ("positive", pair.positive)] + [
            (f"negatives[{i}]", pair.negatives[i]) for i in chosen]
        encoded = [self._encode_item(item, field) for field, item in items]
        return encoded[0], encoded[1:] + [None] * (h - len(chosen))

    def _encode_item(self, item, field: str) -> EncodedItem:
        enc = encode_item(item, tokenizer=self.tokenizer, image_config=self.image_config,
                          box_format=self.config.box_format, field=field)
        if enc.num_patches > self.patches:
            raise RecordError(f"the image gives {enc.num_patches} patches, more than the pipeline's budget of "
                              f"{self.patches} per image", field=f"{field}.image")
        if len(enc.input_ids) > self.config.length_buckets[-1]:
            raise RecordError(f"{len(enc.input_ids)} tokens, more than the largest length bucket "
                              f"{self.config.length_buckets[-1]}", field=field)
        return enc

    def _side(self, rows: list[EncodedItem | None]) -> tuple[Any, np.ndarray, np.ndarray]:
        filler = filler_item(self.tokenizer)
        encoded = [r if r is not None else filler for r in rows]
        has_image = any(e.grid_thw is not None for e in encoded)
        window = self.image_config.merge_size ** 2
        inputs = collate_encoded(encoded, tokenizer=self.tokenizer, model_cfg=self.model_cfg,
                                 length_buckets=self.config.length_buckets,
                                 patches_per_image=self.patches if has_image else window, images_per_row=1,
                                 side=self.config.side)
        valid = np.asarray([r is not None for r in rows], bool)
        return inputs, valid, np.asarray([e.content_id for e in encoded], np.int64)

    def _collate(self, queries, targets, tasks, sources, bad) -> dict[str, Any]:
        query, query_valid, query_ids = self._side(queries)
        target, target_valid, target_ids = self._side(targets)
        group = 1 + self.config.num_negatives
        pair_valid = query_valid & target_valid[::group]  # a pair is only as good as its query and positive
        return {"query": query, "target": target, "query_valid": pair_valid,
                "target_valid": target_valid & np.repeat(pair_valid, group), "query_ids": query_ids,
                "target_ids": target_ids, "tasks": np.asarray(tasks), "sources": np.asarray(sources),
                "bad_records": bad}


def _draw(seed: int, k: int, position: int, n: int) -> int:
    return 0 if n == 1 else int(np.random.default_rng([seed, 0xD4A, k, position]).integers(n))


# ----------------------------------------------------------------------------------------------- pipeline
class Pipeline:
    """The mixture as a grain dataset of steps, and checkpointable iterators over it."""

    def __init__(self, tasks: Sequence[Task], *, tokenizer: Tokenizer, image_config: ImageConfig,
                 model_cfg: ModelConfig, config: PipelineConfig = PipelineConfig()):
        if not tasks:
            raise ValueError("a pipeline needs at least one task")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        check_compatible(tokenizer, image_config, model_cfg)
        self.config, self.tasks = config, tuple(tasks)
        self.bad = BadRecordLog()
        self.build_step = _BuildStep(tasks, tokenizer, image_config, model_cfg, config)
        self.dataset = grain.MapDataset.range(MAX_STEPS).map(self.build_step)

    def __getitem__(self, step: int) -> dict[str, Any]:
        """Step ``step`` directly (random access; what the iterator yields at that position)."""
        return self._account(self.dataset[step])

    def tasks_of(self, step: int) -> list[str]:
        """The task of each sub-batch of ``step``, without building the step (cheap: the plan only)."""
        n = self.config.sub_batches
        return [self.tasks[self.build_step.plan.slot(step * n + j)[0]].name for j in range(n)]

    def __iter__(self) -> "PipelineIterator":
        ds = self.dataset.to_iter_dataset(grain.ReadOptions(num_threads=self.config.read_threads,
                                                            prefetch_buffer_size=self.config.prefetch_steps))
        if self.config.worker_count > 0:
            _mark_flags_parsed()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.config.worker_count))
        return PipelineIterator(iter(ds), self._account)

    def _account(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Moves the step's skipped records into self.bad and logs them, once, when the step is consumed."""
        for reason, file, record, field in batch.pop("bad_records"):
            err = RecordError(reason, file=file, record=record, field=field)
            log.warning("skipping bad record: %s", err)
            self.bad.add(err)
        return batch


class PipelineIterator:
    """Yields step dicts; get_state()/set_state() are grain's (JSON-able) and resume exactly."""

    def __init__(self, it: grain.DatasetIterator, account: Callable[[dict], dict]):
        self._it, self._account = it, account

    def __iter__(self) -> "PipelineIterator":
        return self

    def __next__(self) -> dict[str, Any]:
        return self._account(next(self._it))

    def get_state(self) -> dict:
        return self._it.get_state()

    def set_state(self, state: dict) -> None:
        self._it.set_state(state)


def _mark_flags_parsed() -> None:
    """grain's worker processes read absl flags; outside absl.app.run they are unparsed (environment.md §4)."""
    from absl import flags  # noqa: PLC0415

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


# ------------------------------------------------------------------------------------------------ sources
def tfds_task(name: str, task: str, *, split: str, data_dir: str | os.PathLike | None = None,
              weight: float = 1.0, adapter: Adapter | None = None, task_name: str | None = None) -> Task:
    """A Task over a built TFDS dataset ("rs_scenes/aid"), read with tfds.data_source, images left encoded."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    from vlm2geovec_jax.inputs.adapters import adapter as find_adapter  # noqa: PLC0415

    builder = tfds.builder(name, data_dir=data_dir)
    features = builder.info.features
    source = builder.as_data_source(split=split, decoders=skip_image_decoding(features))
    names = tuple(features["label"].names) if "label" in features else ()
    return Task(task_name or f"{name}:{task}", source, adapter or find_adapter(name, task),
                SourceInfo(name, split, names), weight)


def skip_image_decoding(features) -> dict:
    """SkipDecoding for every Image feature (nested ones too): adapters hand the encoded bytes to Items."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    out = {}
    for key, feature in features.items():
        if isinstance(feature, tfds.features.Image):
            out[key] = tfds.decode.SkipDecoding()
        elif isinstance(feature, tfds.features.FeaturesDict):
            nested = skip_image_decoding(feature)
            if nested:
                out[key] = nested
    return out


def array_record_task(paths: Sequence[str | os.PathLike], task: str, *, weight: float = 1.0,
                      dataset: str = "pairs", split: str = "train", adapter: Adapter | None = None) -> Task:
    """A Task over ArrayRecord files of JSON Pairs (pair_to_dict, one a record; adapters.pair_json)."""
    from vlm2geovec_jax.inputs.adapters import pair_json  # noqa: PLC0415

    source = grain.sources.ArrayRecordDataSource([os.fspath(p) for p in paths])
    return Task(f"{dataset}:{task}", source, adapter or pair_json, SourceInfo(dataset, split), weight)
