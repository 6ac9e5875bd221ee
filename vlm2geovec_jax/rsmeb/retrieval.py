"""Jitted retrieval kernels: score per-query candidate lists, and exact top-k against a sharded gallery.

Embeddings are L2-normalised, so cosine similarity is a dot product; it is accumulated in float32 whatever the
storage dtype (bf16 embeddings halve the gallery's memory without changing the ranking arithmetic).

Tie rule, the same in every kernel and in `rsmeb.metrics`: among equal scores the LOWER candidate index ranks
first (`jax.lax.top_k` guarantees it, and the sharded merge keeps it, see `topk_gallery`). This equals numpy's
stable `argsort(-scores)` and VLM2Vec's `argmax`.

Queries are processed in blocks of fixed shape on the host side, so memory stays bounded for any number of
queries and each kernel compiles once per (block, candidate) shape; the last block is zero-padded and trimmed.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

# Per-device bytes one query block may take for its score (or gathered-candidate) buffer.
DEFAULT_BLOCK_BYTES = 1 << 28
HIGHEST = jax.lax.Precision.HIGHEST


def _check_matrix(name: str, x, dim: int | None = None) -> None:
    if getattr(x, "ndim", None) != 2:
        raise ValueError(f"{name}: expected a 2-D array [rows, dim], got shape {getattr(x, 'shape', None)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name}: expected embedding dim {dim} (that of query_emb), got shape {x.shape}")


def block_size(num_queries: int, bytes_per_query: int, max_block_bytes: int = DEFAULT_BLOCK_BYTES,
               query_chunk: int | None = None) -> int:
    """Rows per query block: the largest that fits the budget, then evened out so the padded tail is small."""
    if query_chunk is not None and query_chunk < 1:
        raise ValueError(f"query_chunk: expected a positive number of queries, got {query_chunk}")
    limit = query_chunk or max(1, max_block_bytes // max(1, bytes_per_query))
    n_blocks = max(1, math.ceil(num_queries / limit))
    return max(1, math.ceil(num_queries / n_blocks))


def _query_blocks(x: np.ndarray, block: int, fill=0):
    """Yield (rows, block-shaped slice): the tail is padded with `fill` so every call has one shape."""
    for start in range(0, x.shape[0], block):
        part = x[start:start + block]
        rows = part.shape[0]
        if rows < block:
            part = np.concatenate([part, np.full((block - rows,) + part.shape[1:], fill, part.dtype)])
        yield rows, part


# ---------------------------------------------------------------------------------------------------------
# Per-query candidate lists (the MMEB protocol).

@functools.partial(jax.jit, static_argnames=("precision",))
def _score_block(query: jax.Array, cands: jax.Array, index: jax.Array, precision) -> jax.Array:
    gathered = jnp.take(cands, jnp.maximum(index, 0), axis=0)  # [B, K, D]
    scores = jnp.einsum("bd,bkd->bk", query, gathered, precision=precision,
                        preferred_element_type=jnp.float32)
    return jnp.where(index >= 0, scores, -jnp.inf)


def check_cand_index(cand_index: np.ndarray, num_queries: int, num_cands: int) -> None:
    """Reject an index table that is not [Q, K] ints in [-1, C), naming the first bad entry."""
    if cand_index.ndim != 2 or cand_index.shape[0] != num_queries:
        raise ValueError(f"cand_index: expected shape [{num_queries}, K] (one row per query), "
                         f"got {cand_index.shape}")
    if not np.issubdtype(cand_index.dtype, np.integer):
        raise ValueError(f"cand_index: expected an integer array, got dtype {cand_index.dtype}")
    bad = np.argwhere((cand_index < -1) | (cand_index >= num_cands))
    if bad.size:
        q, j = (int(v) for v in bad[0])
        raise ValueError(f"cand_index[{q}, {j}] = {int(cand_index[q, j])}: expected -1 (padding) or a row "
                         f"of cand_emb in [0, {num_cands})")


def score_candidates(query_emb, cand_emb, cand_index, *, query_chunk: int | None = None,
                     max_block_bytes: int = DEFAULT_BLOCK_BYTES, precision=HIGHEST) -> jax.Array:
    """Scores [Q, K] float32 of each query against its own candidate list; -1 entries score -inf.

    `cand_index[q]` lists rows of `cand_emb` (the unique candidates, embedded once). The gather of a block's
    candidates is [block, K, D], so blocks are sized to keep that under `max_block_bytes`.
    """
    query_emb, cand_emb = np.asarray(query_emb), jnp.asarray(cand_emb)
    _check_matrix("query_emb", query_emb)
    _check_matrix("cand_emb", cand_emb, query_emb.shape[1])
    cand_index = np.asarray(cand_index)
    check_cand_index(cand_index, query_emb.shape[0], cand_emb.shape[0])
    num_q, num_k = cand_index.shape
    if num_q == 0 or num_k == 0:
        return jnp.zeros((num_q, num_k), jnp.float32)
    block = block_size(num_q, num_k * query_emb.shape[1] * cand_emb.dtype.itemsize, max_block_bytes,
                       query_chunk)
    out = []
    index_blocks = _query_blocks(cand_index.astype(np.int32), block, fill=-1)
    for (rows, q), (_, idx) in zip(_query_blocks(query_emb, block), index_blocks):
        out.append(_score_block(jnp.asarray(q), cand_emb, jnp.asarray(idx), precision)[:rows])
    return jnp.concatenate(out)


@functools.partial(jax.jit, static_argnames=("k",))
def topk_scores(scores: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Top-k (values, column indices) of each row of a score matrix, best first, lower index first on ties."""
    return jax.lax.top_k(scores, k)


# ---------------------------------------------------------------------------------------------------------
# Whole-gallery search, sharded over devices.

@dataclasses.dataclass(frozen=True, eq=False)
class ShardedGallery:
    """A gallery laid out once over a mesh, to be searched by many query sets.

    `array` is [size padded to a multiple of the device count, D], sharded on rows over every mesh axis;
    rows at and past `size` are zero padding that the search masks to -inf.
    """
    array: jax.Array
    size: int
    mesh: Mesh

    @property
    def rows_per_shard(self) -> int:
        return self.array.shape[0] // self.mesh.size


def default_mesh() -> Mesh:
    """A 1-D mesh over all devices (Mesh() gives Auto axis types, which shard_map and jit expect here)."""
    return Mesh(np.asarray(jax.devices()), ("gallery",))


def shard_gallery(gallery_emb, mesh: Mesh | None = None) -> ShardedGallery:
    """Pad the gallery's rows to a multiple of the device count and shard them over all axes of `mesh`.

    A host array is cut into device shards directly, so no padded full copy is made on the host; a JAX array
    (e.g. embeddings still on the accelerators) is padded and resharded on device, never fetched.
    """
    mesh = mesh or default_mesh()
    _check_matrix("gallery_emb", gallery_emb)
    if gallery_emb.shape[0] == 0:
        raise ValueError("gallery_emb: expected at least one row, got an empty gallery")
    size, dim = gallery_emb.shape
    padded = math.ceil(size / mesh.size) * mesh.size
    sharding = NamedSharding(mesh, P(mesh.axis_names, None))
    if isinstance(gallery_emb, jax.Array):
        array = jax.device_put(jnp.pad(gallery_emb, ((0, padded - size), (0, 0))), sharding)
        return ShardedGallery(array, size, mesh)
    gallery = np.asarray(gallery_emb)

    def shard(index):
        rows = gallery[index[0]]
        want = len(range(*index[0].indices(padded)))
        if rows.shape[0] < want:
            rows = np.concatenate([rows, np.zeros((want - rows.shape[0], dim), gallery.dtype)])
        return rows

    array = jax.make_array_from_callback((padded, dim), sharding, shard)
    return ShardedGallery(array, size, mesh)


def _local_topk(query, shard, *, k: int, size: int, axes, precision):
    """One device: scores against its rows, padding masked, top-k with GLOBAL row indices."""
    rows = shard.shape[0]
    scores = jnp.dot(query, shard.T, precision=precision, preferred_element_type=jnp.float32)
    global_idx = jax.lax.axis_index(axes) * rows + jnp.arange(rows, dtype=jnp.int32)
    scores = jnp.where(global_idx < size, scores, -jnp.inf)
    values, local = jax.lax.top_k(scores, min(k, rows))
    return values, global_idx[local]


@functools.partial(jax.jit, static_argnames=("k", "size", "mesh", "precision"))
def _topk_block(query, gallery, *, k: int, size: int, mesh: Mesh, precision):
    axes = mesh.axis_names
    local = jax.shard_map(
        functools.partial(_local_topk, k=k, size=size, axes=axes, precision=precision), mesh=mesh,
        in_specs=(P(), P(axes, None)), out_specs=(P(None, axes), P(None, axes)))
    # [B, devices * k_local], in shard order; XLA gathers the small candidate lists for the merge.
    values, index = local(query, gallery)
    # Shard s holds only indices below shard s+1's, and each shard's list is in (score desc, index asc)
    # order, so among equal values the concatenated position order IS global index order: top_k's
    # lower-position-first rule therefore breaks ties by lower global index.
    values, pos = jax.lax.top_k(values, k)
    return values, jnp.take_along_axis(index, pos, axis=1)


def topk_gallery(query_emb, gallery_emb, k: int, *, mesh: Mesh | None = None, query_chunk: int | None = None,
                 max_block_bytes: int = DEFAULT_BLOCK_BYTES, precision=HIGHEST) -> tuple[jax.Array, jax.Array]:
    """Exact top-k (scores [Q, k] float32, gallery indices [Q, k] int32) of every query against a gallery.

    The gallery (an array, or a `ShardedGallery` from `shard_gallery` to reuse its layout) is sharded on rows
    over every device of `mesh` (default: all devices, 1-D). Each device ranks its shard locally; the
    per-shard lists are merged into the global top-k. Ties: lower gallery index first. A block's per-device
    score buffer is [block, rows per shard] float32, sized under `max_block_bytes`.
    """
    gallery = gallery_emb if isinstance(gallery_emb, ShardedGallery) else shard_gallery(gallery_emb, mesh)
    if mesh is not None and gallery.mesh != mesh:
        raise ValueError("mesh: the ShardedGallery was laid out on a different mesh than the one passed")
    query_emb = np.asarray(query_emb)
    _check_matrix("query_emb", query_emb)
    _check_matrix("gallery_emb", gallery.array, query_emb.shape[1])
    if not 1 <= k <= gallery.size:
        raise ValueError(f"k: expected 1 <= k <= gallery size {gallery.size}, got {k}")
    if query_emb.shape[0] == 0:
        return jnp.zeros((0, k), jnp.float32), jnp.zeros((0, k), jnp.int32)
    block = block_size(query_emb.shape[0], 4 * gallery.rows_per_shard, max_block_bytes, query_chunk)
    replicated = NamedSharding(gallery.mesh, P())
    values, index = [], []
    for rows, q in _query_blocks(query_emb, block):
        v, i = _topk_block(jax.device_put(q, replicated), gallery.array, k=k, size=gallery.size,
                           mesh=gallery.mesh, precision=precision)
        values.append(v[:rows])
        index.append(i[:rows])
    return jnp.concatenate(values), jnp.concatenate(index)
