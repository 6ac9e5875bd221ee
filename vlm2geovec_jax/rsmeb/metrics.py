"""Retrieval metrics from ranked candidate lists, per task in percent, and their aggregation over tasks.

Definitions (Q queries, each with one or more positive candidate indices):
- ranking: the order the kernels in `rsmeb.retrieval` produce: score descending, and among equal scores the
  LOWER candidate index first. This is the one tie rule of the package; it is VLM2Vec's `argmax` rule, so
  figures compare with published MMEB numbers. Beware that MMEB rows put the gold at index 0, so a tie with
  the gold counts as a hit (a collapsed encoder scores 100): `top1_tie_rate` shows how often the top-1 was
  decided by a tie, and should be near 0 for a healthy model.
- p@1: fraction of queries whose top-ranked candidate is a positive (the headline).
- recall@k: fraction of queries with ANY positive in the top k (VLM2Vec/MMEB "hit@k"); recall@1 == p@1.
- mrr: mean of 1 / rank of the first positive, 0 when no positive is in the list. From a full ranking it is
  exact; from a top-k list (`topk_gallery`) it is MRR@k.
- ndcg@10: binary relevance, DCG = sum over the top 10 of rel_i / log2(i + 1) (i from 1), normalised by the
  ideal DCG of min(#positives, 10) positives ranked first.
A list shorter than a cutoff counts what it holds (right when candidate lists are shorter than the cutoff).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.rsmeb import retrieval

CUTOFFS = (1, 5, 10)
NDCG_CUTOFF = 10
METRICS = ("p@1", "recall@1", "recall@5", "recall@10", "mrr", "ndcg@10")


def _qid(qids: Sequence | None, q: int):
    return qids[q] if qids is not None else q


def positives_matrix(positives, *, qids: Sequence | None = None) -> np.ndarray:
    """[Q, P] int64 positives padded with -1, from per-query lists or an already padded matrix.

    Every query needs at least one positive, no repeats, all >= 0 (an error names the query).
    """
    if isinstance(positives, np.ndarray) and positives.ndim == 2:
        rows = [row[row != -1] for row in positives]
    else:
        rows = [np.atleast_1d(np.asarray(p)) for p in positives]
    width = max([len(r) for r in rows], default=0)
    out = np.full((len(rows), max(width, 1)), -1, np.int64)
    for q, row in enumerate(rows):
        if row.size == 0:
            raise RecordError("no positive candidate; expected at least one index",
                              record=_qid(qids, q), field="positives")
        if not np.issubdtype(row.dtype, np.integer) or (row < 0).any():
            raise RecordError(f"expected non-negative integer candidate indices, got {row.tolist()}",
                              record=_qid(qids, q), field="positives")
        if len(np.unique(row)) != len(row):
            raise RecordError(f"repeated candidate index in {row.tolist()}; expected distinct indices",
                              record=_qid(qids, q), field="positives")
        out[q, :len(row)] = row
    return out


def hit_matrix(ranked, positives, *, qids: Sequence | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(hits [Q, k] bool: ranked[q, i] is a positive of q, number of positives per query [Q])."""
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or not np.issubdtype(ranked.dtype, np.integer):
        raise ValueError(f"ranked: expected a 2-D integer array [queries, k], got {ranked.dtype} {ranked.shape}")
    pos = positives_matrix(positives, qids=qids)
    if pos.shape[0] != ranked.shape[0]:
        raise ValueError(f"positives: expected one entry per query ({ranked.shape[0]}), got {pos.shape[0]}")
    ordered = np.sort(ranked, axis=1)
    dup = np.nonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))[0]
    if dup.size:
        raise RecordError(f"a candidate appears twice in the ranked list {ranked[dup[0]].tolist()}",
                          record=_qid(qids, int(dup[0])), field="ranked")
    hits = (ranked[:, :, None] == pos[:, None, :]).any(axis=2) & (ranked >= 0)
    return hits, (pos >= 0).sum(axis=1)


def _dcg_weights(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(n) + 2.0)


def task_metrics(ranked, positives, *, qids: Sequence | None = None) -> dict[str, float]:
    """All METRICS, in percent, of one task from ranked lists [Q, k] (best first) and per-query positives."""
    hits, num_pos = hit_matrix(ranked, positives, qids=qids)
    if hits.shape[0] == 0:
        raise ValueError("ranked: expected at least one query, got none")
    out = {f"recall@{c}": 100.0 * hits[:, :c].any(axis=1).mean() for c in CUTOFFS}
    out["p@1"] = out["recall@1"]
    found = hits.any(axis=1)
    out["mrr"] = 100.0 * np.where(found, 1.0 / (hits.argmax(axis=1) + 1.0), 0.0).mean()
    top = hits[:, :NDCG_CUTOFF]
    dcg = (top * _dcg_weights(top.shape[1])).sum(axis=1)
    ideal = np.cumsum(_dcg_weights(NDCG_CUTOFF))[np.minimum(num_pos, NDCG_CUTOFF) - 1]
    out["ndcg@10"] = 100.0 * (dcg / ideal).mean()
    return {name: float(out[name]) for name in METRICS}


def metrics_from_scores(scores, positives, *, qids: Sequence | None = None) -> dict[str, float]:
    """Task metrics from a full score matrix [Q, K] (e.g. `score_candidates`), ranked by the jitted top-k.

    Positives index columns of `scores`; one outside [0, K) or on a padded (-inf) column is an error.
    """
    if np.ndim(scores) != 2:
        raise ValueError(f"scores: expected a 2-D array [queries, candidates], got shape {np.shape(scores)}")
    num_k = int(np.shape(scores)[1])
    pos = positives_matrix(positives, qids=qids)
    if pos.shape[0] != np.shape(scores)[0]:
        raise ValueError(f"positives: expected one entry per query ({np.shape(scores)[0]}), got {pos.shape[0]}")
    host = np.asarray(scores)
    for q, j in np.argwhere(pos >= num_k):
        raise RecordError(f"candidate index {pos[q, j]} outside the {num_k} scored candidates",
                          record=_qid(qids, int(q)), field="positives")
    pos_scores = np.take_along_axis(host, np.maximum(pos, 0), axis=1)
    for q, j in np.argwhere((pos >= 0) & np.isneginf(pos_scores)):
        raise RecordError(f"candidate {pos[q, j]} is padding (score -inf); expected a real candidate",
                          record=_qid(qids, int(q)), field="positives")
    _, ranked = retrieval.topk_scores(scores, num_k)
    return task_metrics(np.asarray(ranked), pos, qids=qids)


def top1_tie_rate(top_scores) -> float:
    """Percent of queries whose best score equals the runner-up's, i.e. whose top-1 the tie rule decided."""
    top = np.asarray(top_scores)
    if top.ndim != 2 or top.shape[1] < 2:
        raise ValueError(f"top_scores: expected [queries, k >= 2] sorted best first, got shape {top.shape}")
    tied = (top[:, 0] == top[:, 1]) & np.isfinite(top[:, 0])
    return float(100.0 * tied.mean()) if len(top) else 0.0


def aggregate(task_scores: Mapping[str, Mapping[str, float]], groups: Mapping[str, Sequence[str]],
              metric: str = "p@1") -> dict:
    """Per-group and overall means of one metric: {"groups": {group: mean}, "overall": mean}.

    Both are plain means of TASK scores (overall over every task in `task_scores`, not a mean of group
    means), as RSMEB/MMEB report them. A group naming a task without scores is an error, not a silent skip.
    """
    if not task_scores:
        raise ValueError("task_scores: expected scores of at least one task, got none")
    for task, scores in task_scores.items():
        if metric not in scores:
            raise ValueError(f"task_scores[{task!r}]: expected metric {metric!r}, got {sorted(scores)}")
    by_group = {}
    for group, tasks in groups.items():
        if not tasks:
            raise ValueError(f"groups[{group!r}]: expected at least one task, got none")
        missing = [t for t in tasks if t not in task_scores]
        if missing:
            raise ValueError(f"groups[{group!r}]: no scores for task(s) {missing}; "
                             f"scored tasks are {sorted(task_scores)}")
        by_group[group] = float(np.mean([task_scores[t][metric] for t in tasks]))
    overall = float(np.mean([s[metric] for s in task_scores.values()]))
    return {"metric": metric, "groups": by_group, "overall": overall}
