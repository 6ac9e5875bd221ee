"""The ``xla`` attention kernel against ``jax.nn.dot_product_attention(implementation="xla")`` on this machine.

    python -m vlm2geovec_jax.bench.attention [--presets tiny,small_100m] [--batch 8] [--iters 20]
                                             [--dtype float32|bfloat16] [--text-length 128] [--patches 256]

Why the hand-written kernel stays (issue 12: keep it only if it beats the library's on a CPU): both run on
the attention shapes of bench.encoder's inputs (by default text rows of 128 tokens; 224 x 224 images, 256
patches each, in the vision tower), with the same segment-id masks, forward and forward+backward, jitted.
Differences are taken at real positions only (padding rows are never read, and cuDNN zeroes them). Repeats are
interleaved so load from other processes hits both alike; medians are reported, with the ratio
(library time / ours: above 1 means ours is faster) and the largest difference between the two outputs.
Where cuDNN can run (a GPU, ``--dtype bfloat16``) the ``cudnn`` kernel is timed too, with its speed-up over
ours (ours / cudnn).
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from vlm2geovec_jax.models.attention import attention, resolve, segment_mask
from vlm2geovec_jax.models.presets import model_config


def _library(q, k, v, segment_ids, *, causal):
    mask = segment_mask(segment_ids, causal)[:, None]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")


def _kernels(head_dim: int, dtype) -> dict:
    """{label: kernel}: ours (xla), the library's, and cuDNN where it can run (a GPU, bf16)."""
    kernels = {"ours": functools.partial(attention, implementation="xla"), "library": _library}
    try:
        resolve("cudnn", head_dims=(head_dim,), dtype=dtype)
        kernels["cudnn"] = functools.partial(attention, implementation="cudnn")
    except ValueError:
        pass  # not a GPU, or not bf16
    return kernels


def attention_cases(preset: str, batch: int, text_length: int = 128, patches: int = 256):
    """(name, q/k/v shapes, segment ids, causal) for each tower's attention in bench.encoder's inputs."""
    cfg = model_config(preset)
    t, v = cfg.text, cfg.vision
    text_ids = np.ones((batch, text_length), np.int32)
    text_ids[: batch // 2, : text_length // 8] = 0  # half the rows left-padded, as a bucketed batch
    yield "text", (batch, text_length, t.num_heads, t.num_kv_heads, t.head_dim), text_ids, True
    yield "vision", (batch, patches, v.num_heads, v.num_heads, v.head_dim), np.ones((batch, patches), np.int32), False


def _timed(fn, args, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - start) / iters


def bench_case(name: str, shape: tuple[int, ...], segment_ids: np.ndarray, causal: bool, iters: int,
               repeats: int = 5, dtype=jnp.float32) -> dict:
    b, length, heads, kv_heads, head_dim = shape
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (b, length, heads, head_dim), dtype)
    k, v = (jax.random.normal(key, (b, length, kv_heads, head_dim), dtype) for key in keys[1:])
    ids = jnp.asarray(segment_ids)
    real = (ids > 0)[:, :, None, None]
    row = {"tower": name, "shape": f"B{b} L{length} heads {heads}/{kv_heads} x{head_dim}"}
    for mode in ("forward", "backward"):
        fns = {}
        for label, kernel in _kernels(head_dim, dtype).items():
            forward = lambda q, k, v, kernel=kernel: jnp.where(real, kernel(q, k, v, ids, causal=causal), 0)
            if mode == "backward":
                loss = lambda q, k, v, f=forward: jnp.sum(f(q, k, v).astype(jnp.float32) ** 2)
                fns[label] = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
            else:
                fns[label] = jax.jit(forward)
            jax.block_until_ready(fns[label](q, k, v))  # compile
        times = {label: [] for label in fns}
        for _ in range(repeats):
            for label, fn in fns.items():
                times[label].append(_timed(fn, (q, k, v), iters))
        median = {label: statistics.median(t) for label, t in times.items()}
        ours, library = median["ours"], median["library"]
        row[mode] = dict(ours_ms=round(ours * 1e3, 3), library_ms=round(library * 1e3, 3),
                         ratio=round(library / ours, 2), max_abs_diff=_max_diff(fns["ours"], fns["library"], q, k, v))
        if "cudnn" in median:
            row[mode].update(cudnn_ms=round(median["cudnn"] * 1e3, 3), cudnn_speedup=round(ours / median["cudnn"], 2),
                             cudnn_max_abs_diff=_max_diff(fns["ours"], fns["cudnn"], q, k, v))
    return row


def _max_diff(f, g, q, k, v) -> float:
    """Largest difference between two kernels' outputs (forward) or gradients (backward), in float32."""
    diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))),
                        f(q, k, v), g(q, k, v))
    return max(jax.tree.leaves(diff))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,small_100m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--text-length", type=int, default=128, help="tokens per text row")
    parser.add_argument("--patches", type=int, default=256, help="patches per image (vision tower rows)")
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {args.dtype}; ratio = library time / ours",
          flush=True)
    for preset in args.presets.split(","):
        for case in attention_cases(preset, args.batch, args.text_length, args.patches):
            row = bench_case(*case, iters=args.iters, dtype=jnp.dtype(args.dtype))
            for mode in ("forward", "backward"):
                m = row[mode]
                cudnn = (f"  cudnn {m['cudnn_ms']:>8.3f} ms ({m['cudnn_speedup']:.2f}x ours, max|diff| "
                         f"{m['cudnn_max_abs_diff']:.1e})" if "cudnn_ms" in m else "")
                print(f"{preset:>11} {row['tower']:>6} {row['shape']:<28} {mode:>8}: ours {m['ours_ms']:>8.3f} ms  "
                      f"library {m['library_ms']:>8.3f} ms  ratio {m['ratio']:.2f}x  max|diff| "
                      f"{m['max_abs_diff']:.1e}{cudnn}", flush=True)


if __name__ == "__main__":
    main()
