"""InfoNCE over the global batch, as VLM2Vec trains it: logits = q @ t.T / temperature, cross-entropy.

The loss is written on GLOBAL arrays inside jit. When the embeddings are sharded over the data axis, XLA
inserts the gathers it needs; there is no psum, no loss x world size and no re-insertion of a local shard
(those are artefacts of PyTorch DDP gradient averaging, and the gradient of a global mean is already right).

Target layout (hard negatives). Targets are ONE matrix `[Nq * (1 + H), D]` grouped per query: rows
`i*(1+H)` is query i's positive and rows `i*(1+H)+1 .. i*(1+H)+H` are its H hard negatives. H is inferred
from the shapes, so H = 0 is plain in-batch InfoNCE. This is VLM2Vec's layout (label = arange * Nt/Nq), and
it keeps a query's candidates on the same device as the query when both are sharded over the batch.
Every target is a column for every query: hard negatives of one query are negatives of all the others.

Masks:
- `query_valid [Nq]`, `target_valid [Nt]` mark padding. A pair counts (as a row) only if its query AND
  its positive are valid; invalid targets are never columns, invalid queries never t2q columns. The loss
  is the mean over counted rows (0 when there are none).
- `target_ids` are per-target content ids (e.g. a hash of the class name). In row i, every column whose id
  equals the id of i's positive but that is not the positive itself is a false negative and is masked out.
- `query_tasks [Nq]` (optional; off by default, as in VLM2Vec, whose negatives are the whole batch) are
  per-query task ids; each target belongs to its query's task. In row i only columns of i's own task are
  negatives, so a caption is never a negative of a VQA answer even when the batch mixes tasks.
"""
from __future__ import annotations

import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

DIRECTIONS = ("q2t", "bidirectional")
DEFAULT_TEMPERATURE = 0.02
_MASKED = float(np.finfo(np.float32).min)  # finite, so fully masked (padded) rows stay NaN-free.


def content_id_words(ids: Any) -> np.ndarray:
    """int64 content hashes -> `[N, 2]` uint32 words, so they survive JAX's default 32-bit mode.

    With `jax_enable_x64` off, an int64 array becomes int32 and distinct hashes can collide; two words
    compare exactly. `info_nce` accepts ids as `[N]` or `[N, W]` (equal iff all W words are equal).
    """
    arr = np.asarray(ids)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"content_id_words: ids must be a 1-D integer array, got dtype {arr.dtype} "
                         f"and shape {arr.shape}")
    return np.ascontiguousarray(arr.astype(np.int64)).view(np.uint32).reshape(-1, 2)


def query_task_ids(tasks: Any, num_queries: int) -> np.ndarray:
    """`[Nq]` int32 task id of each query row from the task name of each sub-batch (``tasks``, in row order).

    Ids are the names' CRC-32, so every process gives a task the same id without a shared table; a source
    without tasks (None) is one task.
    """
    if tasks is None or len(tasks) == 0:
        return np.zeros(num_queries, np.int32)
    names = [t.decode() if isinstance(t, bytes) else str(t) for t in np.asarray(tasks).reshape(-1)]
    if num_queries % len(names):
        raise ValueError(f"query_task_ids: {num_queries} query rows do not split into {len(names)} sub-batches")
    ids = np.array([zlib.crc32(n.encode()) & 0x7FFFFFFF for n in names], np.int32)
    return np.repeat(ids, num_queries // len(names))


def num_hard_negatives(num_queries: int, num_targets: int) -> int:
    """H in the grouped layout `[Nq * (1 + H), D]`; raises when Nt is not a multiple of Nq."""
    if num_queries < 1 or num_targets % num_queries:
        raise ValueError(f"info_nce: target has {num_targets} rows; expected a multiple of the "
                         f"{num_queries} query rows, laid out [Nq * (1 + H), D] (positive first per query)")
    return num_targets // num_queries - 1


def info_nce(query: jax.Array, target: jax.Array, *, temperature: float = DEFAULT_TEMPERATURE,
             log_temperature: jax.Array | None = None, direction: str = "q2t",
             query_valid: jax.Array | None = None, target_valid: jax.Array | None = None,
             target_ids: jax.Array | None = None,
             query_tasks: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """InfoNCE loss and in-batch metrics, in float32 on the global batch.

    Args:
      query: `[Nq, D]` query embeddings (any float dtype; cast to float32).
      target: `[Nq * (1 + H), D]` target embeddings, grouped per query, positive first (module doc).
      temperature: fixed temperature, used when `log_temperature` is None.
      log_temperature: learnable scalar; temperature = exp(log_temperature), so it stays positive.
      direction: "q2t" (VLM2Vec) or "bidirectional" (mean of q2t and t2q; t2q rows are the positives).
      query_valid, target_valid: bool padding masks `[Nq]`, `[Nt]`; None means all valid.
      target_ids: `[Nt]` or `[Nt, W]` integer content ids for false-negative masking (`content_id_words`).
      query_tasks: `[Nq]` integer task ids; when given, a query's negatives are its own task's targets only.

    Returns:
      (loss, metrics) with metrics `accuracy` (q2t top-1 over counted rows), `num_valid`, `temperature`,
      and `accuracy_t2q` when bidirectional.
    """
    q, t = _check_embeddings(query, target)
    nq, nt = q.shape[0], t.shape[0]
    group = num_hard_negatives(nq, nt) + 1
    if direction not in DIRECTIONS:
        raise ValueError(f"info_nce: direction={direction!r}; expected one of {DIRECTIONS}")
    pos = jnp.arange(nq) * group
    q_valid = _mask("query_valid", query_valid, nq)
    t_valid = _mask("target_valid", target_valid, nt)
    row_valid = q_valid & _positives(t_valid, group)
    temp = (jnp.exp(jnp.asarray(log_temperature, jnp.float32)) if log_temperature is not None
            else jnp.asarray(temperature, jnp.float32))
    same = _same_content(target_ids, nt, group)  # [Nq, Nt] or None
    sims = jnp.einsum("qd,td->qt", q, t, precision=jax.lax.Precision.HIGHEST,
                      preferred_element_type=jnp.float32)
    logits = sims / temp

    on_task = _same_task(query_tasks, nq)  # [Nq, Nq] or None
    keep = jnp.broadcast_to(t_valid[None, :], (nq, nt))
    if same is not None:
        keep = keep & ~(same & (jnp.arange(nt)[None, :] != pos[:, None]))
    if on_task is not None:
        keep = keep & jnp.repeat(on_task, group, axis=1)  # target j belongs to query j // group
    loss_q2t, acc_q2t = _cross_entropy(logits, keep, pos, row_valid)
    metrics = {"accuracy": acc_q2t, "num_valid": row_valid.sum(), "temperature": temp}
    if direction == "q2t":
        return loss_q2t, metrics

    logits_t2q = _positives(logits.T, group)  # [Nq positives, Nq queries]: positive i against all queries
    keep_t2q = jnp.broadcast_to(q_valid[None, :], (nq, nq))
    if same is not None:
        keep_t2q = keep_t2q & ~(_positives(same.T, group) & ~jnp.eye(nq, dtype=bool))
    if on_task is not None:
        keep_t2q = keep_t2q & on_task
    loss_t2q, acc_t2q = _cross_entropy(logits_t2q, keep_t2q, jnp.arange(nq), row_valid)
    metrics["accuracy_t2q"] = acc_t2q
    return 0.5 * (loss_q2t + loss_t2q), metrics


def _cross_entropy(logits: jax.Array, keep: jax.Array, label: jax.Array,
                   row_valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean CE and top-1 accuracy over valid rows, masked columns excluded from the softmax."""
    masked = jnp.where(keep, logits, _MASKED)
    lse = jax.nn.logsumexp(masked, axis=-1)
    is_label = jnp.arange(logits.shape[1])[None, :] == label[:, None]  # iota compare: no gather
    positive = jnp.sum(jnp.where(is_label, logits, 0.0), axis=-1)
    weight = row_valid.astype(jnp.float32)
    count = jnp.maximum(weight.sum(), 1.0)
    loss = jnp.sum((lse - positive) * weight) / count
    hit = (jnp.argmax(masked, axis=-1) == label).astype(jnp.float32)
    return loss, jnp.sum(hit * weight) / count


def _positives(x: jax.Array, group: int) -> jax.Array:
    """Rows 0, group, 2*group, ... of x (the positives in the grouped layout), as a strided slice."""
    return x[::group]


def _same_content(target_ids: jax.Array | None, nt: int, group: int) -> jax.Array | None:
    """`[Nq, Nt]` bool: target column j has the same content id as row i's positive."""
    if target_ids is None:
        return None
    ids = jnp.asarray(target_ids)
    if ids.shape[:1] != (nt,) or ids.ndim not in (1, 2) or not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(f"info_nce: target_ids has shape {ids.shape} and dtype {ids.dtype}; expected "
                         f"integers of shape [{nt}] or [{nt}, W] (one content id per target row)")
    ids = ids.reshape(nt, -1)
    return jnp.all(_positives(ids, group)[:, None, :] == ids[None, :, :], axis=-1)


def _same_task(query_tasks: jax.Array | None, nq: int) -> jax.Array | None:
    """`[Nq, Nq]` bool: queries i and j come from the same task."""
    if query_tasks is None:
        return None
    tasks = jnp.asarray(query_tasks)
    if tasks.shape != (nq,) or not jnp.issubdtype(tasks.dtype, jnp.integer):
        raise ValueError(f"info_nce: query_tasks has shape {tasks.shape} and dtype {tasks.dtype}; expected "
                         f"integers of shape ({nq},) (one task id per query row)")
    return tasks[:, None] == tasks[None, :]


def _mask(name: str, mask: jax.Array | None, n: int) -> jax.Array:
    if mask is None:
        return jnp.ones((n,), bool)
    mask = jnp.asarray(mask)
    if mask.shape != (n,):
        raise ValueError(f"info_nce: {name} has shape {mask.shape}; expected ({n},), one flag per row")
    return mask.astype(bool)


def _check_embeddings(query: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
    q, t = jnp.asarray(query), jnp.asarray(target)
    if q.ndim != 2 or t.ndim != 2 or q.shape[1] != t.shape[1]:
        raise ValueError(f"info_nce: query has shape {q.shape} and target {t.shape}; expected [Nq, D] "
                         "and [Nq * (1 + H), D] with the same D")
    return q.astype(jnp.float32), t.astype(jnp.float32)
