"""GradCache in JAX: the exact gradient of a contrastive loss over a batch too large for one forward.

Three passes (Gao et al. 2021, as VLM2Vec trains):
  1. embed every chunk with no gradient (`lax.map` over chunks), giving the full representation matrices;
  2. loss and d loss / d embeddings on the full matrices (plus d loss / d params, e.g. a learnable
     temperature);
  3. re-run each chunk's forward under `jax.vjp`, pull the cached embedding gradients back to the
     parameters and accumulate them (`lax.scan` over chunks).
Peak activation memory is that of one chunk; the negatives are those of the whole batch, which gradient
accumulation would lose.

Chunk layout. Chunks are STRIDED: chunk c holds rows c, c + n, c + 2n, ... (n = num_chunks), i.e.
`[B, ...] -> [B/n, n, ...] -> swap -> [n, B/n, ...]`. With the batch sharded contiguously over the data
axis and B divisible by n * (data-axis size), each device's rows split into n local pieces, one per chunk:
every device holds a slice of every chunk, the reshape moves no data, and the second (chunk-row) axis keeps
the data sharding. Contiguous chunks (`reshape(n, B/n)`) would instead put chunk c on 1/n of the devices.
When a mesh is given the layout is pinned with `with_sharding_constraint` (P(None, batch_axis) on the chunk
stack, P(batch_axis) on the chunk inside the loop). Embeddings are put back in the original row order, so
`loss_fn` sees the batch as the caller laid it out (e.g. hard negatives grouped per query).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

EmbedFn = Callable[..., jax.Array]  # (params, inputs_chunk[, rng]) -> [chunk, D]
LossFn = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def grad_cache_value_and_grad(embed_fn: EmbedFn, loss_fn: LossFn, params: Any, query_inputs: Any,
                              target_inputs: Any, num_chunks: int, *, mesh: Mesh | None = None,
                              batch_axis: str | tuple[str, ...] = "data", rng: jax.Array | None = None,
                              remat: bool = False, remat_policy: Callable[..., bool] | None = None
                              ) -> tuple[jax.Array, dict[str, jax.Array], Any]:
    """(loss, metrics, grads) of `loss_fn(params, embed(query), embed(target))`, chunk by chunk.

    Args:
      embed_fn: `(params, inputs_chunk) -> [chunk, D]`, or `(params, inputs_chunk, rng)` when `rng` is
        given. Used on queries and targets alike (one shared encoder, as VLM2Vec).
      loss_fn: `(params, q_emb [Bq, D], t_emb [Bt, D]) -> (loss, metrics)`; it gets params so a learnable
        temperature (or any loss parameter) receives its gradient.
      params: the differentiated pytree (close over frozen weights in `embed_fn`).
      query_inputs, target_inputs: pytrees whose leaves have the batch as leading axis; the two may
        differ in batch size (hard negatives) and structure.
      num_chunks: number of chunks per side; each batch must divide into it (module doc for sharding).
      mesh, batch_axis: when given, chunks are constrained to stay sharded over `batch_axis`.
      rng: optional key; chunk c of each side gets the same derived key in passes 1 and 3, so dropout
        masks replay exactly.
      remat, remat_policy: wrap `embed_fn` in `jax.checkpoint(policy=remat_policy)`. Around a whole
        encoder this saves little (pass 3 recomputes right away); the memory lever is per-layer remat
        inside the encoder. It is here so a policy can be passed from the config without code changes.

    Returns:
      (loss, metrics, grads) equal to `jax.value_and_grad` of the unchunked computation.
    """
    if not isinstance(num_chunks, int) or num_chunks < 1:
        raise ValueError(f"grad_cache: num_chunks={num_chunks!r}; expected a positive int")
    layout = _Layout(num_chunks, mesh, batch_axis)
    chunks_q = layout.split("query_inputs", query_inputs)
    chunks_t = layout.split("target_inputs", target_inputs)
    fn = jax.checkpoint(embed_fn, policy=remat_policy) if remat else embed_fn
    keys_q, keys_t = _chunk_keys(rng, num_chunks)

    emb_q = layout.merge(_embed_all(fn, params, chunks_q, keys_q, layout))
    emb_t = layout.merge(_embed_all(fn, params, chunks_t, keys_t, layout))
    (loss, metrics), (g_loss, g_q, g_t) = jax.value_and_grad(loss_fn, argnums=(0, 1, 2), has_aux=True)(
        params, emb_q, emb_t)

    grads = _accumulate(fn, params, chunks_q, layout.split("d loss / d query embeddings", g_q), keys_q,
                        layout, g_loss)
    grads = _accumulate(fn, params, chunks_t, layout.split("d loss / d target embeddings", g_t), keys_t,
                        layout, grads)
    return loss, metrics, grads


class _Layout:
    """Strided chunking `[B, ...] <-> [n, B/n, ...]` with the chunk-row axis kept on `batch_axis`."""

    def __init__(self, num_chunks: int, mesh: Mesh | None, batch_axis: str | tuple[str, ...]):
        self.n, self.mesh, self.axis = num_chunks, mesh, batch_axis
        self.shards = 1
        if mesh is not None:
            names = (batch_axis,) if isinstance(batch_axis, str) else tuple(batch_axis)
            for name in names:
                if name not in mesh.shape:
                    raise ValueError(f"grad_cache: batch_axis {name!r} is not an axis of the mesh "
                                     f"{dict(mesh.shape)}")
                self.shards *= mesh.shape[name]

    def split(self, what: str, tree: Any) -> Any:
        """`[B, ...] -> [n, B/n, ...]`: chunk c = rows c, c+n, ..."""
        leaves = jax.tree_util.tree_leaves_with_path(tree)
        if not leaves:
            raise ValueError(f"grad_cache: {what} has no array leaves")
        first, ref = jax.tree_util.keystr(leaves[0][0]), leaves[0][1]
        batch = ref.shape[0] if ref.ndim else None
        for path, leaf in leaves:
            if leaf.ndim == 0 or leaf.shape[0] != batch:
                raise ValueError(f"grad_cache: {what}{jax.tree_util.keystr(path)} has shape {leaf.shape}; "
                                 f"expected the leading batch axis {batch} of {what}{first} "
                                 f"{tuple(ref.shape)}")
        if batch % (self.n * self.shards):
            raise ValueError(f"grad_cache: {what} has batch {batch}; expected a multiple of num_chunks "
                             f"({self.n}) x devices on {self.axis!r} ({self.shards}) so that every device "
                             "holds an equal slice of every chunk")

        def one(x):
            x = x.reshape(batch // self.n, self.n, *x.shape[1:]).swapaxes(0, 1)
            return self.constrain(x, P(None, self.axis))
        return jax.tree.map(one, tree)

    def merge(self, stacked: jax.Array) -> jax.Array:
        """`[n, B/n, D] -> [B, D]` in the original row order."""
        x = stacked.swapaxes(0, 1).reshape(-1, *stacked.shape[2:])
        return self.constrain(x, P(self.axis))

    def constrain(self, x: Any, spec: P) -> Any:
        if self.mesh is None:
            return x
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))


def _embed_all(fn: EmbedFn, params: Any, chunks: Any, keys: jax.Array | None, layout: _Layout) -> jax.Array:
    """Pass 1: `[n, c, D]` embeddings, no gradient kept."""
    params = jax.lax.stop_gradient(params)

    def body(xs):
        chunk, key = xs
        out = _call(fn, params, layout.constrain(chunk, P(layout.axis)), key)
        return layout.constrain(jax.lax.stop_gradient(out), P(layout.axis))
    return jax.lax.map(body, (chunks, keys))


def _accumulate(fn: EmbedFn, params: Any, chunks: Any, cotangents: jax.Array, keys: jax.Array | None,
                layout: _Layout, init: Any) -> Any:
    """Pass 3: add sum_c VJP(embed chunk c)(cached d loss / d emb_c) to `init`."""
    def body(acc, xs):
        chunk, cot, key = xs
        chunk = layout.constrain(chunk, P(layout.axis))
        out, pull = jax.vjp(lambda p: _call(fn, p, chunk, key), params)
        (grad,) = pull(layout.constrain(cot.astype(out.dtype), P(layout.axis)))
        return jax.tree.map(jnp.add, acc, grad), None
    acc, _ = jax.lax.scan(body, init, (chunks, cotangents, keys))
    return acc


def _call(fn: EmbedFn, params: Any, chunk: Any, key: jax.Array | None) -> jax.Array:
    out = fn(params, chunk) if key is None else fn(params, chunk, key)
    if getattr(out, "ndim", None) != 2:
        raise ValueError(f"grad_cache: embed_fn returned shape {getattr(out, 'shape', type(out))}; "
                         "expected [chunk, D] embeddings")
    return out


def _chunk_keys(rng: jax.Array | None, n: int) -> tuple[jax.Array | None, jax.Array | None]:
    """One key per chunk and side, identical in passes 1 and 3."""
    if rng is None:
        return None, None
    key_q, key_t = jax.random.split(rng)
    return jax.random.split(key_q, n), jax.random.split(key_t, n)
