"""Self-attention by configuration: ``model.attention`` is ``auto``, ``xla``, ``cudnn`` or ``splash``.

One function, ``attention``, serves both towers. Masks arrive as segment ids ``[B, L]``: a query attends the
keys of its own segment (and, when causal, not later ones). The language model passes its attention mask (1 =
token, 0 = padding, on either side), the vision tower its frame ids (one segment per frame of each image slot,
0 = padded patch). Padding positions attend each other, so no row is empty and nothing becomes NaN; their
outputs are never read by real positions.

- ``xla``: plain XLA ops, float32 logits as transformers, the [B, L, L] mask built from the segment ids, grouped
  kv heads not repeated. The query heads of one kv head form one axis, so both products are batched matmuls;
  on this project's CPUs its forward runs 1.2-1.8x faster than ``jax.nn.dot_product_attention(implementation=
  "xla")`` on the tiny and small_100m shapes (``python -m vlm2geovec_jax.bench.attention``).
- ``cudnn``: cuDNN flash attention through the same function (bf16 only, GPU only). cuDNN masks by sequence
  lengths, so rows are rotated left by their leading padding (causal, left padding) and back afterwards;
  each row must hold one run of real tokens (true of our text rows and single-frame image slots).
- ``splash``: Pallas splash attention (TPU; interpret mode on CPU, for tests) with segment ids, so no [L, L]
  mask or logits exist. Under a mesh it runs in ``shard_map``: batch over (data, fsdp), heads over tensor.
- ``auto``: splash on TPU (head sizes up to 1024), cuDNN on a GPU where it takes the dtype and head size, XLA
  otherwise.

The platform is that of the mesh in context (an ahead-of-time TPU topology compiled on a CPU host counts as
TPU), else JAX's default backend. ``check`` runs when the model is built, so an impossible choice fails there.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from vlm2geovec_jax.sharding import LOGICAL_RULES

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash")
SPLASH_BLOCKS = (512, 256, 128)  # splash with segment ids needs blocks that are multiples of 128
# Compiled for v5e ahead of time, splash took every head size tried from 4 to 1024 (80 and 128 are Qwen2-VL's);
# at 2048 the kernel's blocks overflow the TPU core's scoped VMEM (CompileTimeScopedVmemOom).
SPLASH_MAX_HEAD_DIM = 1024


def platform() -> str:
    """'tpu', 'gpu' or 'cpu': the platform the program being traced is for."""
    mesh = jax.sharding.get_abstract_mesh()
    device = None if mesh.empty else mesh.abstract_device
    name = device.platform if device is not None else jax.default_backend()
    return "gpu" if name in ("cuda", "rocm") else name


def _cudnn_problem(head_dims: tuple[int, ...], dtype) -> str | None:
    if jnp.dtype(dtype) != jnp.bfloat16:
        return f"cuDNN flash attention takes bfloat16, not {jnp.dtype(dtype).name} (set model.dtype=bfloat16)"
    limit = 256 if _gpu_capability() >= (9, 0) else 128
    bad = [h for h in head_dims if h % 8 or h > limit]
    return f"cuDNN flash attention takes head sizes that are multiples of 8 up to {limit}, not {bad}" if bad else None


def _gpu_capability() -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in jax.devices("gpu")[0].compute_capability.split("."))
    except (RuntimeError, AttributeError, ValueError):
        return (0,)


def resolve(choice: str, *, head_dims: tuple[int, ...], dtype, where: str | None = None) -> str:
    """The implementation ``choice`` means here ('xla', 'cudnn' or 'splash'); ValueError if it cannot run."""
    where = where or platform()
    if choice not in IMPLEMENTATIONS:
        raise ValueError(f"model.attention {choice!r} not in {IMPLEMENTATIONS}")
    if choice == "auto":
        if where == "tpu" and max(head_dims) <= SPLASH_MAX_HEAD_DIM:
            return "splash"
        return "cudnn" if where == "gpu" and _cudnn_problem(head_dims, dtype) is None else "xla"
    problem = None
    if choice == "cudnn":
        problem = "cuDNN needs a GPU" if where != "gpu" else _cudnn_problem(head_dims, dtype)
    elif choice == "splash" and where not in ("tpu", "cpu"):
        problem = "splash is a TPU kernel (it runs on TPU, or on CPU in interpret mode)"
    elif choice == "splash" and max(head_dims) > SPLASH_MAX_HEAD_DIM:
        problem = f"splash takes head sizes up to {SPLASH_MAX_HEAD_DIM}, not {max(head_dims)}"
    if problem:
        raise ValueError(f"model.attention={choice!r} cannot run on this {where}: {problem}; "
                         f"use 'auto' or 'xla'")
    return choice


def check(cfg) -> str:
    """Validates ``cfg.attention`` for both towers on this platform (at model construction); returns it resolved."""
    return resolve(cfg.attention, head_dims=(cfg.text.head_dim, cfg.vision.head_dim), dtype=cfg.dtype)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, *, causal: bool,
              implementation: str = "auto") -> jax.Array:
    """Softmax self-attention: q [B, L, N, H], k/v [B, L, K, H] (N a multiple of K), segment_ids [B, L] int.

    Query i attends key j iff ``segment_ids[i] == segment_ids[j]`` (and j <= i when ``causal``); scale H**-0.5.
    """
    impl = resolve(implementation, head_dims=(q.shape[-1],), dtype=q.dtype)
    segment_ids = segment_ids.astype(jnp.int32)
    if impl == "splash":
        return _splash_sharded(q, k, v, segment_ids, causal)
    if impl == "cudnn":
        return lengths_masked(q, k, v, segment_ids, causal)
    return grouped_softmax_attention(q, k, v, segment_mask(segment_ids, causal))


def segment_mask(segment_ids: jax.Array, causal: bool) -> jax.Array:
    """[B, L, L] bool: query i may attend key j (same segment, and j <= i when causal)."""
    mask = segment_ids[:, :, None] == segment_ids[:, None, :]
    if causal:
        mask &= jnp.tril(jnp.ones(mask.shape[1:], bool))
    return mask


def grouped_softmax_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """The ``xla`` kernel: q [B, T, N, H], k/v [B, S, K, H], mask [B, T, S] bool; logits and softmax in float32.

    The query heads of one kv head are laid out as one [group * T] axis, so both products are plain batched
    matmuls over (batch, kv head), which XLA's CPU backend runs faster than the 5-D contraction. A row with no
    key left (never produced by ``attention``) would get a uniform distribution, not NaN.
    """
    b, t, n, h = q.shape
    kv_heads = k.shape[2]
    group = n // kv_heads
    q = q.reshape(b, t, kv_heads, group, h).transpose(0, 2, 3, 1, 4).reshape(b, kv_heads, group * t, h)
    logits = jnp.einsum("bkqh,bskh->bkqs", q, k, preferred_element_type=jnp.float32) * (h ** -0.5)
    logits = logits.reshape(b, kv_heads, group, t, -1)
    logits = jnp.where(mask[:, None, None], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype).reshape(b, kv_heads, group * t, -1)
    out = jnp.einsum("bkqs,bskh->bkqh", probs, v).reshape(b, kv_heads, group, t, h)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)


# ---- cuDNN -------------------------------------------------------------------------------------------------


def lengths_masked(q, k, v, segment_ids, causal, implementation="cudnn"):
    """Attention masked by sequence lengths (what cuDNN takes); causal rows are rotated so their real tokens
    start at position 0, and rotated back. ``implementation="xla"`` runs the same masking on a CPU (tests).

    An all-padding row (an empty image slot) gets length 1 and padding rows are zeroed, so no value the
    kernel leaves undefined reaches a later layer.
    """
    valid = segment_ids > 0
    lengths = jnp.maximum(jnp.sum(valid, axis=-1, dtype=jnp.int32), 1)
    if not causal:  # image slots: real patches first, padding after
        out = jax.nn.dot_product_attention(q, k, v, query_seq_lengths=lengths, key_value_seq_lengths=lengths,
                                           implementation=implementation)
        return jnp.where(valid[:, :, None, None], out, 0)
    length = q.shape[1]
    start = jnp.argmax(valid, axis=-1)  # left padding: the first real token
    order = (jnp.arange(length)[None] + start[:, None]) % length

    def rotate(x, index):
        return jnp.take_along_axis(x, index[:, :, None, None], axis=1)

    out = jax.nn.dot_product_attention(rotate(q, order), rotate(k, order), rotate(v, order), is_causal=True,
                                       query_seq_lengths=lengths, key_value_seq_lengths=lengths,
                                       implementation=implementation)
    return jnp.where(valid[:, :, None, None], rotate(out, jnp.argsort(order, axis=-1)), 0)


# ---- splash ------------------------------------------------------------------------------------------------


def splash_block(length: int) -> tuple[int, int]:
    """(block size, padded length): the largest block in SPLASH_BLOCKS costing at most 1/16 extra padding."""
    floor = -(-length // 128) * 128
    for block in SPLASH_BLOCKS:
        padded = -(-length // block) * block
        if padded - floor <= length // 16 or block == SPLASH_BLOCKS[-1]:
            return block, padded
    raise AssertionError("unreachable")


def _splash_local(q, k, v, segment_ids, causal, interpret):
    """Splash on unsharded (or per-shard) arrays, batch by vmap. The sequence is padded with zeros up to a
    multiple of the block size (segment id 0: the padding segment) and cut back afterwards."""
    from jax.experimental.pallas.ops.tpu import splash_attention as sa  # noqa: PLC0415 (pallas import cost)

    b, length, heads, head_dim = q.shape
    block, padded = splash_block(length)
    if padded != length:
        widths = ((0, 0), (0, padded - length), (0, 0), (0, 0))
        q, k, v = (jnp.pad(x, widths) for x in (q, k, v))
        segment_ids = jnp.pad(segment_ids, ((0, 0), (0, padded - length)))
    shape = (padded, padded)
    mask = sa.MultiHeadMask([sa.CausalMask(shape) if causal else sa.FullMask(shape)] * heads)
    sizes = sa.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                          block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
    kernel = sa.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)
    q = (q.astype(jnp.float32) * head_dim ** -0.5).astype(q.dtype)  # splash does not scale the logits

    def one(q, k, v, ids):  # [heads, length, head_dim] each
        return kernel(q, k, v, segment_ids=sa.SegmentIds(ids, ids))

    heads_first = functools.partial(jnp.swapaxes, axis1=1, axis2=2)
    out = jax.vmap(one)(heads_first(q), heads_first(k), heads_first(v), segment_ids)
    return heads_first(out)[:, :length]


def _mesh_axes(logical: str) -> tuple[str, ...]:
    axes = dict(LOGICAL_RULES)[logical]
    return (axes,) if isinstance(axes, str) else tuple(axes or ())


def _dividing(axes: tuple[str, ...], size: int, mesh) -> tuple[str, ...]:
    """The leading mesh axes among ``axes`` whose product divides ``size`` (size-1 axes dropped)."""
    kept, product = [], 1
    for axis in axes:
        n = mesh.shape[axis]
        if n > 1 and size % (product * n) == 0:
            kept.append(axis)
            product *= n
    return tuple(kept)


def _splash_sharded(q, k, v, segment_ids, causal):
    """Splash inside ``shard_map`` when a mesh is in context: batch over (data, fsdp), heads over tensor.

    A Pallas call cannot be partitioned by XLA, so each device runs the kernel on its own batch rows and
    heads. If the tensor axis divides the query heads but not the kv heads, kv heads are repeated just
    enough to be split (the only case where they are copied).
    """
    interpret = platform() == "cpu"
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return _splash_local(q, k, v, segment_ids, causal, interpret)
    batch = _dividing(_mesh_axes("act_batch"), q.shape[0], mesh)
    heads = _dividing(_mesh_axes("act_heads"), q.shape[2], mesh)
    if heads:
        shards, kv_heads, group = mesh.shape[heads[0]], k.shape[2], q.shape[2] // k.shape[2]
        repeat = shards // math.gcd(kv_heads, shards)
        if group % repeat:
            heads = ()
        elif repeat > 1:
            k, v = jnp.repeat(k, repeat, axis=2), jnp.repeat(v, repeat, axis=2)
    spec = P(batch or None, None, heads or None, None)
    body = functools.partial(_splash_local, causal=causal, interpret=interpret)
    return jax.shard_map(body, mesh=mesh, in_specs=(spec, spec, spec, P(batch or None, None)), out_specs=spec,
                         check_vma=False)(q, k, v, segment_ids)

