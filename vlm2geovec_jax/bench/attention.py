"""The ``xla`` attention kernel against ``jax.nn.dot_product_attention(implementation="xla")`` on this machine.

    python -m vlm2geovec_jax.bench.attention [--presets tiny,small_100m] [--batch 8] [--iters 20]

Why the hand-written kernel stays (issue 12: keep it only if it beats the library's on a CPU): both run on
the attention shapes of bench.encoder's inputs (text rows of 128 tokens; 224 x 224 images, 256 patches each,
in the vision tower), with the same segment-id masks, forward and forward+backward, jitted. Repeats are
interleaved so load from other processes hits both alike; medians are reported, with the ratio
(library time / ours: above 1 means ours is faster) and the largest difference between the two outputs.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from vlm2geovec_jax.models.attention import attention, segment_mask
from vlm2geovec_jax.models.presets import model_config


def _library(q, k, v, segment_ids, *, causal):
    mask = segment_mask(segment_ids, causal)[:, None]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")


def _ours(q, k, v, segment_ids, *, causal):
    return attention(q, k, v, segment_ids, causal=causal, implementation="xla")


def attention_cases(preset: str, batch: int):
    """(name, q/k/v shapes, segment ids, causal) for each tower's attention in bench.encoder's inputs."""
    cfg = model_config(preset)
    t, v = cfg.text, cfg.vision
    text_ids = np.ones((batch, 128), np.int32)
    text_ids[: batch // 2, :16] = 0  # half the rows left-padded, as a bucketed batch
    yield "text", (batch, 128, t.num_heads, t.num_kv_heads, t.head_dim), text_ids, True
    yield "vision", (batch, 256, v.num_heads, v.num_heads, v.head_dim), np.ones((batch, 256), np.int32), False


def _timed(fn, args, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - start) / iters


def bench_case(name: str, shape: tuple[int, ...], segment_ids: np.ndarray, causal: bool, iters: int,
               repeats: int = 5) -> dict:
    b, length, heads, kv_heads, head_dim = shape
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (b, length, heads, head_dim), jnp.float32)
    k, v = (jax.random.normal(key, (b, length, kv_heads, head_dim), jnp.float32) for key in keys[1:])
    ids = jnp.asarray(segment_ids)
    row = {"tower": name, "shape": f"B{b} L{length} heads {heads}/{kv_heads} x{head_dim}"}
    for mode in ("forward", "backward"):
        fns = {}
        for label, kernel in (("ours", _ours), ("library", _library)):
            forward = lambda q, k, v, kernel=kernel: kernel(q, k, v, ids, causal=causal)
            if mode == "backward":
                loss = lambda q, k, v, f=forward: jnp.sum(f(q, k, v) ** 2)
                fns[label] = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
            else:
                fns[label] = jax.jit(forward)
            jax.block_until_ready(fns[label](q, k, v))  # compile
        times = {label: [] for label in fns}
        for _ in range(repeats):
            for label, fn in fns.items():
                times[label].append(_timed(fn, (q, k, v), iters))
        ours, library = (statistics.median(times[label]) for label in ("ours", "library"))
        diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), fns["ours"](q, k, v),
                            fns["library"](q, k, v))
        row[mode] = dict(ours_ms=round(ours * 1e3, 3), library_ms=round(library * 1e3, 3),
                         ratio=round(library / ours, 2), max_abs_diff=max(jax.tree.leaves(diff)))
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,small_100m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; ratio = library time / ours", flush=True)
    for preset in args.presets.split(","):
        for case in attention_cases(preset, args.batch):
            row = bench_case(*case, iters=args.iters)
            for mode in ("forward", "backward"):
                m = row[mode]
                print(f"{preset:>11} {row['tower']:>6} {row['shape']:<28} {mode:>8}: ours {m['ours_ms']:>8.3f} ms  "
                      f"library {m['library_ms']:>8.3f} ms  ratio {m['ratio']:.2f}x  max|diff| "
                      f"{m['max_abs_diff']:.1e}", flush=True)


if __name__ == "__main__":
    main()
