"""Run a suite: embed every unique item once (cached), score each task, save each result as it finishes.

``run_suite`` takes any ``embed_fn(items) -> [n, D]`` (a checkpoint, a baseline, a fake in tests). Tasks run
in suite order; each first embeds what the cache lacks, then scores with the jitted kernels of
rsmeb/retrieval.py (``score_candidates`` for per-row candidate lists, ``topk_gallery`` for a shared
gallery), then writes ``tasks/<task>.json`` atomically. A finished task whose rows and model key are
unchanged (same fingerprint) is not rerun, so a killed run resumes where it stopped and ends with the same
report; the report (report.json / .md / .png) is written at the end. ``eval_command`` is ``vlm2geovec eval``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vlm2geovec_jax.inputs.records import EvalRow, Item
from vlm2geovec_jax.rsmeb import metrics, retrieval
from vlm2geovec_jax.rsmeb.cache import (
    DEFAULT_CHUNK, EmbedFn, EmbeddingCache, ImageDigests, atomic_write_text, item_key, model_slug)
from vlm2geovec_jax.rsmeb.suite import Suite, Task

GALLERY_K = max(metrics.CUTOFFS)


@dataclasses.dataclass
class TaskIndex:
    """A task's rows as content keys: queries [Q], unique candidates [C], per-row index [Q, K] (-1 = none)."""

    qids: list[str]
    query_keys: list[str]
    cand_keys: list[str]
    cand_index: np.ndarray
    positives: list[tuple[int, ...]]
    items: dict[str, Item]
    gallery: bool

    def fingerprint(self) -> str:
        """sha256 of everything scored: qids, item keys, candidate lists, positives."""
        h = hashlib.sha256()
        for part in (self.qids, self.query_keys, self.cand_keys, [list(p) for p in self.positives]):
            h.update(json.dumps(part).encode("utf-8"))
        h.update(np.ascontiguousarray(self.cand_index, np.int64).tobytes())
        return h.hexdigest()


class _Keys:
    """item_key memoised per item object (rows share their candidate objects, and images are hashed once)."""

    def __init__(self):
        self._by_id: dict[int, tuple[Item, str]] = {}
        self._digests = ImageDigests()

    def __call__(self, item: Item) -> str:
        hit = self._by_id.get(id(item))
        if hit is None or hit[0] is not item:
            hit = (item, item_key(item, self._digests))
            self._by_id[id(item)] = hit
        return hit[1]


def index_task(task: Task, rows: Sequence[EvalRow], keys: _Keys | None = None) -> TaskIndex:
    """Content keys of a task's rows; a gallery task must give every row the same candidate list."""
    keys = keys or _Keys()
    if not rows:
        raise ValueError(f"task {task.name!r}: no rows; expected at least one query")
    items: dict[str, Item] = {}
    slot: dict[str, int] = {}
    done: dict[int, list[int]] = {}  # candidate tuples shared by rows (a gallery, a class list): keyed once
    table = []
    first = rows[0].candidates
    for row in rows:
        if task.candidate_policy == "gallery" and row.candidates is not first and row.candidates != first:
            raise ValueError(f"task {task.name!r}, row {row.qid}: gallery tasks need one shared candidate list")
        ids = done.get(id(row.candidates))
        if ids is None:
            ids = []
            for cand in row.candidates:
                k = keys(cand)
                if k not in slot:
                    slot[k] = len(slot)
                    items[k] = cand
                ids.append(slot[k])
            done[id(row.candidates)] = ids
        table.append(ids)
    query_keys = [keys(r.query) for r in rows]
    items.update({k: r.query for k, r in zip(query_keys, rows)})
    width = max(len(t) for t in table)
    cand_index = np.full((len(rows), width), -1, np.int32)
    for i, ids in enumerate(table):
        cand_index[i, :len(ids)] = np.asarray(ids, np.int32)
    return TaskIndex([r.qid for r in rows], query_keys, list(slot), cand_index, [r.positives for r in rows],
                     items, task.candidate_policy == "gallery")


# ---------------------------------------------------------------------------------------------- scoring
def _normalised(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def chance_p1(index: TaskIndex) -> float:
    """Expected P@1 (%) of a random ranking: mean over rows of positives / candidates."""
    sizes = (index.cand_index >= 0).sum(axis=1)
    return float(100.0 * np.mean([len(p) / k for p, k in zip(index.positives, sizes)]))


def score_task(task: Task, index: TaskIndex, cache: EmbeddingCache) -> dict[str, Any]:
    """All metrics of one task from cached embeddings, plus chance level and the top-1 tie rate."""
    queries = _normalised(cache.get(index.query_keys))
    cands = _normalised(cache.get(index.cand_keys))
    if index.gallery:
        k = min(GALLERY_K, len(index.cand_keys))
        positives = [tuple(int(index.cand_index[0][p]) for p in pos) for pos in index.positives]
        top_scores, ranked = retrieval.topk_gallery(queries, cands, k)
        result = metrics.task_metrics(np.asarray(ranked), positives, qids=index.qids)
    else:
        scores = retrieval.score_candidates(queries, cands, index.cand_index)
        result = metrics.metrics_from_scores(scores, index.positives, qids=index.qids)
        top_scores, _ = retrieval.topk_scores(scores, min(2, scores.shape[1]))
        k = int(index.cand_index.shape[1])
    ties = metrics.top1_tie_rate(top_scores) if np.shape(top_scores)[1] >= 2 else 0.0
    return {"task": task.name, "group": task.group, "kind": task.kind, "dataset": task.dataset,
            "split": task.split, "policy": task.candidate_policy, "num_queries": len(index.qids),
            "num_candidates": int((index.cand_index >= 0).sum(axis=1).max()), "ranked_k": k,
            "metrics": result, "headline": {m: result[m] for m in task.metrics}, "chance_p@1": chance_p1(index), "top1_tie_rate": ties, "paper_p1": task.paper_p1}


# ----------------------------------------------------------------------------------------------- running
def _check_rows(suite: Suite, rows_by_task: Mapping[str, Sequence[EvalRow]]) -> None:
    names = [t.name for t in suite.tasks]
    missing = [n for n in names if n not in rows_by_task]
    extra = sorted(set(rows_by_task) - set(names))
    if missing:
        raise ValueError(f"rows_by_task: no rows for task(s) {missing} of suite {suite.name!r}")
    if extra:
        raise ValueError(f"rows_by_task: task(s) {extra} are not in suite {suite.name!r}")


def _saved(path: Path, fingerprint: str, model_key: str) -> dict | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("fingerprint") == fingerprint and data.get("model_key") == model_key:
        return data
    return None


def run_suite(embed_fn: EmbedFn, suite: Suite, rows_by_task: Mapping[str, Sequence[EvalRow]],
              out_dir: str | os.PathLike, *, model_key: str, cache_dir: str | os.PathLike | None = None,
              chunk_size: int = DEFAULT_CHUNK, progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) every task of ``suite`` and writes the report; returns the report dict.

    ``model_key`` names the checkpoint (and any setting that changes an embedding); the embedding cache
    defaults to ``out_dir/embeddings/<model key>`` and may be shared between output directories.
    """
    from vlm2geovec_jax.rsmeb import report as report_lib  # noqa: PLC0415

    _check_rows(suite, rows_by_task)
    out = Path(out_dir)
    (out / "tasks").mkdir(parents=True, exist_ok=True)
    cache = EmbeddingCache(cache_dir or out / "embeddings" / model_slug(model_key), model_key)
    keys = _Keys()
    results = {}
    for task in tqdm(suite.tasks, desc=suite.name, unit="task", disable=not progress):
        index = index_task(task, rows_by_task[task.name], keys)
        fingerprint = index.fingerprint()
        path = out / "tasks" / f"{task.name}.json"
        saved = _saved(path, fingerprint, model_key)
        if saved is None:
            cache.ensure(index.items, embed_fn, chunk_size=chunk_size, progress=progress, desc=task.name)
            saved = {**score_task(task, index, cache), "fingerprint": fingerprint, "model_key": model_key}
            atomic_write_text(path, json.dumps(saved, indent=1, sort_keys=True))
        results[task.name] = saved
    report = report_lib.build_report(suite, results, model_key=model_key)
    report_lib.write_report(report, out)
    return report


# ---------------------------------------------------------------------------------------------- the CLI
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


def embedder_embed_fn(embedder, *, tokenizer, image_config, batch_size: int = 32,
                      box_format: str = "qwen") -> EmbedFn:
    """embed_fn over a loaded Embedder through inputs/embed_items.py; a bad item raises, naming the item."""
    from vlm2geovec_jax.inputs.embed_items import embed_items  # noqa: PLC0415

    def embed_fn(items: list[Item]) -> np.ndarray:
        return embed_items(embedder, enumerate(items), num_rows=len(items), tokenizer=tokenizer,
                           image_config=image_config, batch_size=batch_size, box_format=box_format, progress=False)
    return embed_fn


def checkpoint_embed_fn(ckpt: str | os.PathLike, *, batch_size: int = 32, box_format: str = "qwen",
                        attention: str = "auto") -> EmbedFn:
    """embed_fn over a checkpoint, loaded once, with the tokenizer and image settings of its assets."""
    from vlm2geovec_jax.embedder import load  # noqa: PLC0415 (imports the model)
    from vlm2geovec_jax.inputs.embed_items import assets_dir, image_config_from  # noqa: PLC0415
    from vlm2geovec_jax.inputs.tokenizer import Tokenizer  # noqa: PLC0415

    assets = assets_dir(ckpt)
    return embedder_embed_fn(load(ckpt, attention=attention), tokenizer=Tokenizer.from_dir(assets),
                             image_config=image_config_from(assets), batch_size=batch_size, box_format=box_format)


def prepare_suite(suite_path: str | os.PathLike, data_dir: str | os.PathLike | None,
                  tasks: Sequence[str] | None = None) -> tuple[Suite, dict[str, list[EvalRow]]]:
    """The suite (optionally a subset of its tasks) and its rows, crop-baseline tasks added when it asks."""
    from vlm2geovec_jax.rsmeb import crop, rows as rows_lib  # noqa: PLC0415
    from vlm2geovec_jax.rsmeb.suite import load_suite  # noqa: PLC0415

    suite = load_suite(suite_path)
    if tasks:
        suite = suite.subset(list(tasks))
    rows = rows_lib.build_rows(suite, data_dir)
    if suite.crop_baseline:
        suite, rows = crop.with_crop_baseline(suite, rows)
    return suite, rows


def eval_command(ckpt: str | os.PathLike, suite_path: str | os.PathLike, data_dir: str | os.PathLike | None,
                 out: str | os.PathLike, *, batch_size: int = 32, tasks: Sequence[str] | None = None,
                 box_format: str = "qwen", progress: bool = True, attention: str = "auto") -> Path:
    """``vlm2geovec eval``: build the suite's rows, embed with the checkpoint, score, report; returns report.md."""
    suite, rows = prepare_suite(suite_path, data_dir, tasks)
    model_key = f"{checkpoint_key(ckpt)}|box={box_format}|templates={suite.templates_version}"
    embed_fn = checkpoint_embed_fn(ckpt, batch_size=batch_size, box_format=box_format, attention=attention)
    run_suite(embed_fn, suite, rows, out, model_key=model_key, progress=progress)
    path = Path(out) / "report.md"
    print(f"RSMEB report written to {path} (also report.json, report.png; per-task results in "
          f"{Path(out) / 'tasks'})")
    return path
