"""Retrieval kernels against numpy: the gather scorer with padding, and the sharded top-k on 8 fake devices.

Tie tests use small-integer embeddings: their dot products are exact in float32 whatever the summation
order, so equal scores are truly equal and the tie rule (lower index first) is tested exactly.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType

from vlm2geovec_jax.rsmeb import retrieval


def _int_emb(rng, rows, dim=6):
    return rng.integers(-2, 3, (rows, dim)).astype(np.float32)


def _unit_emb(rng, rows, dim=16):
    x = rng.standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _numpy_topk(query, gallery, k):
    scores = query.astype(np.float64) @ gallery.astype(np.float64).T
    index = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, index, axis=1), index


def test_eight_fake_devices():
    assert jax.device_count() == 8


def test_score_candidates_equals_numpy_with_padding():
    rng = np.random.default_rng(0)
    query, cands = _unit_emb(rng, 11), _unit_emb(rng, 40)
    index = rng.integers(0, 40, (11, 9))
    index[rng.random(index.shape) < 0.3] = -1
    index[3] = -1  # a query whose whole list is padding
    want = np.where(index >= 0, np.einsum("qd,qkd->qk", query, cands[np.maximum(index, 0)]), -np.inf)
    got = np.asarray(retrieval.score_candidates(query, cands, index))
    assert got.dtype == np.float32 and got.shape == (11, 9)
    assert np.array_equal(np.isneginf(got), index < 0)
    np.testing.assert_allclose(got[index >= 0], want[index >= 0], rtol=0, atol=1e-6)
    chunked = np.asarray(retrieval.score_candidates(query, cands, index, query_chunk=4))  # 3 blocks, padded tail
    np.testing.assert_array_equal(chunked, got)


def test_score_candidates_accumulates_bf16_in_float32():
    rng = np.random.default_rng(1)
    query, cands = _unit_emb(rng, 5, 64), _unit_emb(rng, 8, 64)
    q16, c16 = jnp.asarray(query, jnp.bfloat16), jnp.asarray(cands, jnp.bfloat16)
    index = np.tile(np.arange(8), (5, 1))
    got = np.asarray(retrieval.score_candidates(q16, c16, index))
    want = np.asarray(q16, np.float64) @ np.asarray(c16, np.float64).T
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_score_candidates_rejects_out_of_range_index():
    rng = np.random.default_rng(2)
    index = np.array([[0, 1], [2, 5]])
    with pytest.raises(ValueError, match=re.escape(
            "cand_index[1, 1] = 5: expected -1 (padding) or a row of cand_emb in [0, 5)")):
        retrieval.score_candidates(_unit_emb(rng, 2), _unit_emb(rng, 5), index)
    with pytest.raises(ValueError, match=re.escape(
            "cand_emb: expected embedding dim 16 (that of query_emb), got shape (5, 8)")):
        retrieval.score_candidates(_unit_emb(rng, 2), _unit_emb(rng, 5, 8), index)


def test_topk_scores_ties_lower_index_first():
    scores = np.array([[1.0, 3.0, 3.0, -np.inf, 3.0, 2.0], [0.0, 0.0, -np.inf, 0.0, 0.0, 0.0]], np.float32)
    values, index = retrieval.topk_scores(scores, 6)
    np.testing.assert_array_equal(np.asarray(index), [[1, 2, 4, 5, 0, 3], [0, 1, 3, 4, 5, 2]])
    np.testing.assert_array_equal(np.asarray(values), np.take_along_axis(scores, np.asarray(index), axis=1))


@pytest.mark.parametrize("k", [1, 7, 20, 61])
def test_topk_gallery_sharded_equals_numpy_stable_ties(k):
    # 61 rows over 8 devices: 8 rows per shard, the last shard has 5 padding rows; k=20 > rows per shard.
    rng = np.random.default_rng(3)
    query, gallery = _int_emb(rng, 13), _int_emb(rng, 61)
    gallery[40] = gallery[3]  # an exact duplicate across shards
    sharded = retrieval.shard_gallery(gallery)
    assert sharded.array.shape == (64, 6) and len(sharded.array.sharding.device_set) == 8
    values, index = retrieval.topk_gallery(query, sharded, k, query_chunk=5)
    want_values, want_index = _numpy_topk(query, gallery, k)
    np.testing.assert_array_equal(np.asarray(index), want_index)
    np.testing.assert_array_equal(np.asarray(values), want_values)


def test_topk_gallery_all_equal_scores_returns_lowest_indices():
    gallery = np.ones((29, 4), np.float32)
    _, index = retrieval.topk_gallery(np.ones((2, 4), np.float32), gallery, 10)
    np.testing.assert_array_equal(np.asarray(index), np.tile(np.arange(10), (2, 1)))


def test_topk_gallery_on_2d_mesh_and_unit_vectors():
    rng = np.random.default_rng(4)
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    query, gallery = _unit_emb(rng, 9), _unit_emb(rng, 203)
    values, index = retrieval.topk_gallery(query, gallery, 10, mesh=mesh)
    want_values, want_index = _numpy_topk(query, gallery, 10)
    np.testing.assert_array_equal(np.asarray(index), want_index)
    np.testing.assert_allclose(np.asarray(values), want_values, rtol=0, atol=1e-6)
    ints_q, ints_g = _int_emb(rng, 7), _int_emb(rng, 50)
    _, index = retrieval.topk_gallery(ints_q, ints_g, 12, mesh=mesh)
    np.testing.assert_array_equal(np.asarray(index), _numpy_topk(ints_q, ints_g, 12)[1])


def test_topk_gallery_rejects_bad_k_and_dim():
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match=re.escape("k: expected 1 <= k <= gallery size 9, got 10")):
        retrieval.topk_gallery(_unit_emb(rng, 2), _unit_emb(rng, 9), 10)
    with pytest.raises(ValueError, match=re.escape(
            "gallery_emb: expected embedding dim 16 (that of query_emb), got shape (16, 4)")):
        retrieval.topk_gallery(_unit_emb(rng, 2), _unit_emb(rng, 9, 4), 3)


def test_block_size_bounds_memory_and_evens_blocks():
    assert retrieval.block_size(1000, 400_000, max_block_bytes=1 << 28) == 500  # 671 fit: 2 even blocks
    assert retrieval.block_size(10, 4, query_chunk=4) == 4
    assert retrieval.block_size(3, 1 << 40) == 1
    with pytest.raises(ValueError, match="query_chunk: expected a positive number of queries, got 0"):
        retrieval.block_size(10, 4, query_chunk=0)


def test_shard_gallery_from_device_array_equals_host_array():
    rng = np.random.default_rng(6)
    query, gallery = _int_emb(rng, 5), _int_emb(rng, 37)
    on_device = retrieval.shard_gallery(jnp.asarray(gallery))
    from_host = retrieval.shard_gallery(gallery)
    np.testing.assert_array_equal(np.asarray(on_device.array), np.asarray(from_host.array))
    assert on_device.array.sharding.is_equivalent_to(from_host.array.sharding, 2)
    _, index = retrieval.topk_gallery(query, on_device, 9)
    np.testing.assert_array_equal(np.asarray(index), _numpy_topk(query, gallery, 9)[1])
