"""Metrics against an independent pure-python implementation, with ties, padding and several positives."""
import math
import re

import numpy as np
import pytest

from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.rsmeb import metrics, retrieval


def _reference(scores, positives):
    """Pure python: sort each row by (score desc, index asc), then every metric straight from its definition."""
    totals = dict.fromkeys(metrics.METRICS, 0.0)
    for row, pos in zip(scores.tolist(), positives):
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        rel = [1 if j in pos else 0 for j in order]
        totals["p@1"] += rel[0]
        for c in (1, 5, 10):
            totals[f"recall@{c}"] += 1 if any(rel[:c]) else 0
        totals["mrr"] += 1 / (rel.index(1) + 1) if 1 in rel else 0
        dcg = sum(r / math.log2(i + 2) for i, r in enumerate(rel[:10]))
        ideal = sum(1 / math.log2(i + 2) for i in range(min(len(pos), 10)))
        totals["ndcg@10"] += dcg / ideal
    return {name: 100 * v / len(positives) for name, v in totals.items()}


def _random_task(seed, queries=60, cands=15):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, (queries, cands)).astype(np.float32)  # 4 levels: ties everywhere
    scores[rng.random(scores.shape) < 0.1] = -np.inf  # padded candidates
    positives = []
    for q in range(queries):
        real = np.flatnonzero(np.isfinite(scores[q]))
        positives.append(sorted(rng.choice(real, size=min(len(real), rng.integers(1, 13)), replace=False)))
    return scores, positives


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_from_scores_equal_brute_force(seed):
    scores, positives = _random_task(seed)
    assert any(len(p) > 10 for p in positives) and any(len(p) == 1 for p in positives)
    got = metrics.metrics_from_scores(scores, positives)
    want = _reference(scores, positives)
    assert set(got) == set(metrics.METRICS)
    for name in metrics.METRICS:
        assert got[name] == pytest.approx(want[name], abs=1e-9), name


def test_golden_values():
    # q0: positive ranked 2nd; q1: two positives tie with a negative at the top, gold rank 1 by lower index;
    # q2: positive ranked 6th of 6.
    scores = np.array([[0.9, 0.8, 0.1, 0.0, 0.0, 0.0],
                       [0.5, 0.5, 0.5, 0.1, 0.0, 0.0],
                       [0.0, 0.9, 0.8, 0.7, 0.6, 0.5]], np.float32)
    got = metrics.metrics_from_scores(scores, [[1], [0, 2], [0]])
    ndcg = (1 / math.log2(3) + (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)) + 1 / math.log2(7)) / 3
    assert got == pytest.approx({"p@1": 100 / 3, "recall@1": 100 / 3, "recall@5": 200 / 3, "recall@10": 100.0,
                                 "mrr": 100 * (1 / 2 + 1 + 1 / 6) / 3, "ndcg@10": 100 * ndcg})


def test_task_metrics_from_sharded_gallery_topk():
    rng = np.random.default_rng(3)
    query = rng.integers(-2, 3, (20, 5)).astype(np.float32)
    gallery = rng.integers(-2, 3, (45, 5)).astype(np.float32)
    positives = [rng.choice(45, size=rng.integers(1, 4), replace=False) for _ in range(20)]
    _, ranked = retrieval.topk_gallery(query, gallery, 45)
    got = metrics.task_metrics(ranked, positives)
    want = _reference(query.astype(np.float64) @ gallery.T.astype(np.float64), [set(p) for p in positives])
    assert got == pytest.approx(want, abs=1e-9)
    top10 = metrics.task_metrics(np.asarray(ranked)[:, :10], positives)  # truncated list: MRR becomes MRR@10
    for name in ("p@1", "recall@5", "recall@10", "ndcg@10"):
        assert top10[name] == pytest.approx(want[name], abs=1e-9)
    assert top10["mrr"] <= want["mrr"]


def test_positives_as_padded_matrix_equal_lists():
    scores, positives = _random_task(4, queries=10)
    padded = np.full((10, 12), -1)
    for q, p in enumerate(positives):
        padded[q, :len(p)] = p
    assert metrics.metrics_from_scores(scores, padded) == metrics.metrics_from_scores(scores, positives)


def test_bad_positives_name_the_query_and_field():
    scores = np.zeros((2, 3), np.float32)
    with pytest.raises(RecordError, match=re.escape(
            "record q7, field positives: no positive candidate; expected at least one index")):
        metrics.metrics_from_scores(scores, [[0], []], qids=["q6", "q7"])
    with pytest.raises(RecordError, match=re.escape(
            "record 0, field positives: repeated candidate index in [1, 1]; expected distinct indices")):
        metrics.metrics_from_scores(scores, [[1, 1], [0]])
    with pytest.raises(RecordError, match=re.escape(
            "record 1, field positives: candidate index 3 outside the 3 scored candidates")):
        metrics.metrics_from_scores(scores, [[0], [3]])
    scores[1, 2] = -np.inf
    with pytest.raises(RecordError, match=re.escape(
            "record 1, field positives: candidate 2 is padding (score -inf); expected a real candidate")):
        metrics.metrics_from_scores(scores, [[0], [2]])


def test_top1_tie_rate():
    top = np.array([[0.9, 0.9, 0.1], [0.9, 0.8, 0.8], [-np.inf, -np.inf, -np.inf], [0.5, 0.5, 0.5]])
    assert metrics.top1_tie_rate(top) == 50.0


def test_aggregate_means_of_task_scores():
    tasks = {"a": {"p@1": 10.0}, "b": {"p@1": 20.0}, "c": {"p@1": 60.0}}
    got = metrics.aggregate(tasks, {"g1": ["a", "b"], "g2": ["c"]})
    assert got == {"metric": "p@1", "groups": {"g1": 15.0, "g2": 60.0}, "overall": 30.0}
    with pytest.raises(ValueError, match=re.escape(
            "groups['g2']: no scores for task(s) ['d']; scored tasks are ['a', 'b', 'c']")):
        metrics.aggregate(tasks, {"g2": ["c", "d"]})


def test_ranked_list_with_a_repeated_candidate_is_rejected():
    with pytest.raises(RecordError, match=re.escape(
            "record b, field ranked: a candidate appears twice in the ranked list [4, 2, 4]")):
        metrics.task_metrics(np.array([[0, 1, 2], [4, 2, 4]]), [[0], [2]], qids=["a", "b"])
