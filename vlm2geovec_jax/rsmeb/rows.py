"""Prepared datasets -> per-task EvalRows, deterministically from the task seed, from evaluation splits only.

For each task: the examples of its split (filtered by ``task.filters``) go through the task adapter
(inputs/adapters.py, or the small ``EXTRACTORS`` registry here for sources it does not cover) into
(query, gold) Pairs; pairs with the same query merge into one row with several positives; the distinct
golds form the task's pool. Candidates follow the policy (suite.py): every class name / answer, the gold
plus sampled others, or the whole gallery. Then each row's candidates are shuffled with the seed and the
positives tracked: rsmeb/metrics.py breaks ties by lower candidate index and MMEB puts the gold first, so
without the shuffle a collapsed encoder (all scores tied) would score 100% instead of chance.

Split safety: a training split is refused when a source is loaded and asserted again on every pair.
TFDS's resisc45 / eurosat / uc_merced have one split ("train", the whole dataset); their "test" here is
a held-out 20% made like data/rs_scenes's split (within each class, files ordered by SHA-256 of
``class/file``, the last 20%), which training must exclude with ``held_out_positions``.

Official MMEB-format files (``task.official_file``) are read unchanged by mmeb.read_mmeb_*; only their
candidate order is shuffled, for the same tie reason.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image as PILImage

from vlm2geovec_jax.inputs import adapters
from vlm2geovec_jax.inputs.adapters import SourceInfo, class_text
from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.inputs.identity import ImageDigests, item_key
from vlm2geovec_jax.inputs.mmeb import read_mmeb_jsonl, read_mmeb_parquet
from vlm2geovec_jax.inputs.records import EvalRow, Item, Pair
from vlm2geovec_jax.rsmeb.suite import TRAIN_SPLITS, Suite, Task

CATALOG_ONE_SPLIT = ("resisc45", "eurosat", "uc_merced")  # TFDS catalog sets with only a "train" split
HELD_OUT_FROM = 0.8


@dataclasses.dataclass(frozen=True)
class SplitSource:
    """One split of one dataset: its examples (a Sequence, e.g. a tfds data source) and what adapters need."""

    examples: Sequence[Mapping[str, Any]]
    info: SourceInfo


# ------------------------------------------------------------------------------------------------ seeds
def rng_for(*parts: Any) -> np.random.Generator:
    """A generator that depends only on ``parts`` (seed, task name, qid ...), never on call order."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


# ---------------------------------------------------------------------------------------------- sources
def held_out_positions(filenames: Sequence[str], labels: Sequence[int], class_names: Sequence[str]) -> list[int]:
    """Positions of the held-out 20% of a one-split catalog set (module docstring), in source order."""
    by_class: dict[int, list[tuple[str, int]]] = {}
    for pos, (name, label) in enumerate(zip(filenames, labels)):
        digest = hashlib.sha256(f"{class_names[label]}/{name}".encode("utf-8")).hexdigest()
        by_class.setdefault(int(label), []).append((digest, pos))
    out = []
    for members in by_class.values():
        members.sort()
        out += [pos for _, pos in members[int(len(members) * HELD_OUT_FROM):]]
    return sorted(out)


class _CatalogView(Sequence):
    """Held-out examples of a catalog set, with the shared feature names (image_id, image_size) added."""

    def __init__(self, source: Sequence, positions: list[int]):
        self.source, self.positions = source, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = dict(self.source[self.positions[i]])
        with PILImage.open(io.BytesIO(bytes(ex["image"]))) as im:
            ex["image_size"] = np.array(im.size, np.int32)
        ex["image_id"] = ex["filename"]
        return ex


def load_source(dataset: str, split: str, data_dir: str | os.PathLike | None) -> SplitSource:
    """One prepared split, read with tfds.data_source, images left encoded; training splits are refused."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    from vlm2geovec_jax.inputs.pipeline import skip_image_decoding  # noqa: PLC0415 (imports grain)

    if split in TRAIN_SPLITS:
        raise ValueError(f"{dataset}: split {split!r} is a training split; RSMEB reads evaluation splits only")
    where = "the default TFDS data_dir" if data_dir is None else f"data dir {data_dir}"
    try:
        builder = tfds.builder(dataset, data_dir=None if data_dir is None else os.fspath(data_dir))
    except tfds.core.registered.DatasetNotFoundError:
        builder = None
    if builder is None or not os.path.isdir(builder.data_dir):
        raise FileNotFoundError(f"{where}: dataset {dataset} is not prepared there; build it first "
                                "(data/README.md) or pass the --data-dir that holds it")
    features = builder.info.features
    names = tuple(features["label"].names) if "label" in features else ()
    decoders = skip_image_decoding(features)
    if dataset.split("/", 1)[0] in CATALOG_ONE_SPLIT:
        if split != "test":
            raise ValueError(f"{dataset}: only the held-out 'test' split exists for a one-split catalog set, "
                             f"got {split!r}")
        whole = builder.as_data_source(split="train", decoders=decoders)
        meta = [(bytes(ex["filename"]).decode("utf-8"), int(ex["label"])) for ex in whole]
        positions = held_out_positions([m[0] for m in meta], [m[1] for m in meta], names)
        return SplitSource(_CatalogView(whole, positions), SourceInfo(dataset, split, names))
    return SplitSource(builder.as_data_source(split=split, decoders=decoders), SourceInfo(dataset, split, names))


# ----------------------------------------------------------------------------------- (query, gold) pairs
def _text(value: Any) -> str:
    return bytes(value).decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


# Sources the adapters module does not cover; adapters.ADAPTERS is consulted first.
EXTRACTORS: dict[tuple[str, str], Callable[[Mapping[str, Any], SourceInfo], list[Pair]]] = {
    # catalog sets read through _CatalogView carry the shared image/image_id/image_size/label features
    **{(name, "scene_classification"): adapters.scene_classification for name in CATALOG_ONE_SPLIT},
}


def extractor(task: Task) -> Callable[[Mapping[str, Any], SourceInfo], list[Pair]]:
    """The (example, info) -> Pairs function of a task's source and kind."""
    key = (task.builder, task.kind)
    if key in adapters.ADAPTERS:
        return adapters.ADAPTERS[key]
    if key in EXTRACTORS:
        return EXTRACTORS[key]
    return adapters.adapter(task.dataset, task.kind)  # raises, listing what exists


def _field(ex: Mapping[str, Any], path: str) -> Any:
    value: Any = ex
    for part in path.split("/"):
        if not isinstance(value, Mapping) or part not in value:
            raise RecordError(f"filter field {path!r} not in the example (have {', '.join(sorted(ex))})",
                              field=path)
        value = value[part]
    return _text(value)


def task_pairs(task: Task, source: SplitSource) -> list[Pair]:
    """Every (query, gold) Pair of the task's split, in source order, filtered; each checked split-safe."""
    if source.info.split != task.split or task.split in TRAIN_SPLITS:
        raise ValueError(f"task {task.name!r}: source split {source.info.split!r} for task split {task.split!r}; "
                         "expected the task's own evaluation split")
    extract = extractor(task)
    pairs = []
    for n, ex in enumerate(source.examples):
        try:
            if all(_field(ex, k) in allowed for k, allowed in task.filters.items()):
                pairs += extract(ex, source.info)
        except RecordError as err:
            raise RecordError(err.reason, file=err.file or source.info.dataset,
                              record=err.record or f"{task.split}[{n}]", field=err.field) from None
    for pair in pairs:  # the assertion the zero-shot protocol rests on
        if pair.source.split != task.split or pair.source.split in TRAIN_SPLITS:
            raise AssertionError(f"task {task.name!r}: pair {pair.source.id} comes from split {pair.source.split!r}")
    if not pairs:
        raise ValueError(f"task {task.name!r}: no (query, gold) pairs in {task.dataset}[{task.split}] "
                         f"with filters {dict(task.filters)}")
    return pairs


# -------------------------------------------------------------------------------------------------- rows
@dataclasses.dataclass
class _Query:
    item: Item
    qid: str
    origin: str
    image: str | None = None  # digest of the query's image
    golds: list[str] = dataclasses.field(default_factory=list)
    negatives: list[str] = dataclasses.field(default_factory=list)


def _origin(pair: Pair) -> str:
    return pair.source.id.split("#", 1)[0]


class _Pool:
    """Distinct candidate items by content key, in first-seen order, with the examples each came from and
    the query images they answer (for same-image hard negatives: the other regions of a query's image)."""

    def __init__(self, instruction: str, digests: ImageDigests):
        self.instruction, self.digest = instruction or None, digests
        self.items: dict[str, Item] = {}
        self.by_origin: dict[str, set[str]] = {}
        self.by_image: dict[str, list[str]] = {}

    def add(self, item: Item, origin: str | None) -> str:
        item = dataclasses.replace(item, instruction=self.instruction)
        key = item_key(item, digest=self.digest)
        self.items.setdefault(key, item)
        if origin is not None:
            self.by_origin.setdefault(origin, set()).add(key)
        return key

    def answers_image(self, key: str, image: str | bytes | None) -> str | None:
        """Records that gold ``key`` answers a query on ``image``; returns the image's digest."""
        if image is None:
            return None
        digest = self.digest(image)
        keys = self.by_image.setdefault(digest, [])
        if key not in keys:
            keys.append(key)
        return digest


def _queries(task: Task, pairs: list[Pair], pool: _Pool, negatives: _Pool) -> list[_Query]:
    out: dict[str, _Query] = {}
    qids: set[str] = set()
    for pair in pairs:
        query = dataclasses.replace(pair.query, instruction=task.query_instruction or None)
        key = item_key(query, digest=pool.digest)
        if key not in out:
            qid = f"{task.name}/{pair.source.id}"
            while qid in qids:
                qid += "+"
            qids.add(qid)
            out[key] = _Query(query, qid, _origin(pair))
        row = out[key]
        gold = pool.add(pair.positive, _origin(pair))
        row.image = pool.answers_image(gold, pair.query.image)
        if gold not in row.golds:
            row.golds.append(gold)
        row.negatives += [negatives.add(n, None) for n in pair.negatives]
    return list(out.values())


def _select(task: Task, queries: list[_Query]) -> list[_Query]:
    if len(queries) <= task.num_queries:
        return queries
    keep = rng_for(task.seed, task.name, "queries").choice(len(queries), task.num_queries, replace=False)
    return [queries[i] for i in sorted(keep.tolist())]


def _sampled(task: Task, q: _Query, pool: _Pool, keys: list[str], negatives: _Pool,
             rng: np.random.Generator) -> list[str]:
    """Golds, then hard negatives if asked (the pair's own, then the golds of other queries on the same
    image: its other regions), then random others; never another item of the query's own example."""
    chosen = list(q.golds)
    taken = set(chosen)
    excluded = pool.by_origin.get(q.origin, set())
    if task.hard_negatives:
        for k in q.negatives + pool.by_image.get(q.image, []):
            if len(chosen) < task.num_candidates and k not in taken:
                chosen.append(k)
                taken.add(k)
                if k not in pool.items:
                    pool.items[k] = negatives.items[k]
    need = task.num_candidates - len(chosen)
    if need > 0:
        order = rng.permutation(len(keys))
        for i in order:
            k = keys[i]
            if k not in taken and k not in excluded:
                chosen.append(k)
                taken.add(k)
                if len(chosen) == task.num_candidates:
                    break
    return chosen


def _class_candidates(task: Task, source: SplitSource, pool: _Pool) -> list[str] | None:
    if task.kind != "scene_classification" or not source.info.class_names:
        return None
    keys = [pool.add(Item(text=class_text(c)), None) for c in source.info.class_names]
    return list(dict.fromkeys(keys))


def _row(task: Task, q: _Query, keys: list[str], pool: _Pool, *, where: Mapping[str, int] | None = None,
         shared: tuple[Item, ...] | None = None) -> EvalRow:
    """One row over candidates ``keys`` (already in their final order); ``where``/``shared`` reuse a gallery's."""
    where = where if where is not None else {k: i for i, k in enumerate(keys)}
    missing = [g for g in q.golds if g not in where]
    if missing:
        raise RecordError(f"gold {pool.items[missing[0]].text or 'item'!r} is not among the candidates "
                          f"({task.candidate_policy}); expected it in the candidate set", record=q.qid)
    candidates = shared if shared is not None else tuple(pool.items[k] for k in keys)
    return EvalRow(q.qid, task.name, q.item, candidates, tuple(where[g] for g in q.golds))


def _shuffled(keys: list[str], rng: np.random.Generator) -> list[str]:
    return [keys[i] for i in rng.permutation(len(keys))]


def build_task_rows(task: Task, source: SplitSource) -> list[EvalRow]:
    """The task's EvalRows: the same task (seed included) and source always give identical rows."""
    pairs = task_pairs(task, source)
    digests = ImageDigests()
    pool = _Pool(task.candidate_instruction, digests)
    negatives = _Pool(task.candidate_instruction, digests)
    queries = _select(task, _queries(task, pairs, pool, negatives))
    gold_keys = list(pool.items)
    if task.candidate_policy == "gallery":
        gallery = _shuffled(gold_keys, rng_for(task.seed, task.name, "gallery"))
        where = {k: i for i, k in enumerate(gallery)}
        shared = tuple(pool.items[k] for k in gallery)  # one tuple for the whole gallery
        return [_row(task, q, gallery, pool, where=where, shared=shared) for q in queries]
    if task.candidate_policy == "all_classes":
        classes = _class_candidates(task, source, pool) or gold_keys
        return [_row(task, q, _shuffled(classes, rng_for(task.seed, task.name, q.qid)), pool) for q in queries]
    rows = []
    for q in queries:
        rng = rng_for(task.seed, task.name, q.qid)
        rows.append(_row(task, q, _shuffled(_sampled(task, q, pool, gold_keys, negatives, rng), rng), pool))
    return rows


# ------------------------------------------------------------------------------------------ official files
def shuffle_row(row: EvalRow, rng: np.random.Generator) -> EvalRow:
    """The row with its candidates permuted and its positives moved with them (scores change only on ties)."""
    order = rng.permutation(len(row.candidates))
    where = {int(old): new for new, old in enumerate(order)}
    return dataclasses.replace(row, candidates=tuple(row.candidates[i] for i in order),
                               positives=tuple(where[p] for p in row.positives))


def read_official_rows(task: Task, data_dir: str | os.PathLike | None) -> list[EvalRow]:
    """An MMEB-format file (.jsonl or .parquet; image paths relative to its folder), read unchanged, shuffled."""
    path = os.path.join(os.fspath(data_dir or ""), task.official_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: official file of task {task.name!r} not found")
    root = os.path.dirname(path)
    if path.endswith(".parquet"):
        rows = list(read_mmeb_parquet(path, task=task.name, image_root=root))
    elif path.endswith(".jsonl"):
        rows = list(read_mmeb_jsonl(path, task=task.name, image_root=root))
    else:
        raise ValueError(f"{path}: expected an MMEB-format .jsonl or .parquet file")
    return [shuffle_row(r, rng_for(task.seed, task.name, r.qid)) for r in rows]


# ------------------------------------------------------------------------------------------------- suite
Loader = Callable[[str, str], SplitSource]


def build_rows(suite: Suite, data_dir: str | os.PathLike | None = None, *, loader: Loader | None = None,
               tasks: Iterable[str] | None = None) -> dict[str, list[EvalRow]]:
    """task name -> EvalRows for every task of the suite (or ``tasks``); sources are loaded once each."""
    load = loader or (lambda dataset, split: load_source(dataset, split, data_dir))
    wanted = set(tasks) if tasks is not None else None
    sources: dict[tuple[str, str], SplitSource] = {}
    out = {}
    for task in suite.tasks:
        if wanted is not None and task.name not in wanted:
            continue
        if task.official_file:
            out[task.name] = read_official_rows(task, data_dir)
            continue
        if (task.dataset, task.split) not in sources:
            sources[(task.dataset, task.split)] = load(task.dataset, task.split)
        out[task.name] = build_task_rows(task, sources[(task.dataset, task.split)])
    return out
