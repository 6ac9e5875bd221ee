"""Retrieval throughput: the jitted sharded top-k against numpy and faiss-cpu, measured in the same run.

    python -m vlm2geovec_jax.bench.retrieval            # 1,000 queries x 100,000 x 1,536 gallery, k=10
    python -m vlm2geovec_jax.bench.retrieval --quick    # 200 queries x 20,000 x 512

All three are exact maximum-inner-product searches over the same L2-normalised float32 data: numpy
(blocked matmul + argpartition, then an exact sort of the k), faiss `IndexFlatIP`, and
`rsmeb.retrieval.topk_gallery` over all JAX devices (one on a CPU unless XLA_FLAGS asks for more).
Repeats are interleaved (numpy, jax, faiss, numpy, ...) so load from other processes hits all alike; the
median per method is reported. Peak RSS at the default sizes is about 2.6 GiB (gallery 0.6 GiB on the host,
faiss's copy, per-block score buffers; on CPU the JAX shards alias the host array).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import jax
import numpy as np

from vlm2geovec_jax.rsmeb import retrieval

# faiss's OpenMP threads otherwise busy-wait after each search and steal the cores from the next method.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
SETTLE_S = 0.5  # pause between timed calls, for any spinning thread pool to park


def make_data(gallery: int, queries: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit gallery vectors, and queries that are noisy copies of gallery rows (so top-1 is well separated)."""
    rng = np.random.default_rng(seed)
    g = np.empty((gallery, dim), np.float32)
    for start in range(0, gallery, 8192):  # in slices: no float64 temporaries of the whole gallery
        part = rng.standard_normal((min(8192, gallery - start), dim), dtype=np.float32)
        g[start:start + len(part)] = part / np.linalg.norm(part, axis=1, keepdims=True)
    q = g[rng.integers(0, gallery, queries)] + rng.standard_normal((queries, dim), dtype=np.float32) * 0.05
    return g, q / np.linalg.norm(q, axis=1, keepdims=True)


def numpy_topk(query: np.ndarray, gallery: np.ndarray, k: int, block: int = 256) -> np.ndarray:
    """Exact top-k indices ordered by (score desc, index asc), in query blocks of bounded memory.

    argpartition may keep either of two items tied exactly at the k-th place; random float data has none.
    """
    out = np.empty((len(query), k), np.int64)
    for start in range(0, len(query), block):
        scores = query[start:start + block] @ gallery.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part.sort(axis=1)
        order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=1)
        out[start:start + block] = np.take_along_axis(part, order, axis=1)
    return out


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _faiss_runners(gallery: np.ndarray, k: int) -> dict:
    """Search functions over one IndexFlatIP, with faiss's default dispatch and forced onto its BLAS path.

    Empty (with a printed reason) when faiss is not installed.
    """
    try:
        import faiss
    except ImportError:
        print("faiss: SKIPPED (faiss-cpu is not installed; `pip install faiss-cpu` to compare against it)")
        return {}
    index = faiss.IndexFlatIP(gallery.shape[1])
    seconds, _ = _timed(lambda: index.add(gallery))
    print(f"faiss: faiss-cpu {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads, "
          f"IndexFlatIP built in {seconds:.2f} s")
    default = faiss.cvar.distance_compute_blas_threshold
    print(f"faiss: 'faiss' uses the default distance_compute_blas_threshold={default} (queries below it take "
          f"the SIMD scan), 'faiss-blas' sets it to 1 (BLAS matmul + heap)")

    def search(q, threshold):
        faiss.cvar.distance_compute_blas_threshold = threshold
        return index.search(q, k)[1]

    return {"faiss": lambda q: search(q, default), "faiss-blas": lambda q: search(q, 1)}


def _agreement(got, want: np.ndarray) -> float:
    return 100.0 * float((np.asarray(got) == want).mean())


def run(gallery_rows: int, queries: int, dim: int, k: int, repeats: int, seed: int) -> None:
    g, q = make_data(gallery_rows, queries, dim, seed)
    print(f"data: gallery {gallery_rows:,} x {dim} float32 ({g.nbytes / 2**20:,.0f} MiB), "
          f"{queries:,} queries, k={k}, {repeats} interleaved repeats, median reported")
    print(f"jax: {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} device(s)")

    seconds, sharded = _timed(lambda: retrieval.shard_gallery(g))
    sharded.array.block_until_ready()
    print(f"jax: gallery sharded in {seconds:.2f} s, {sharded.rows_per_shard:,} rows per device")

    def jax_search(x):
        _, index = retrieval.topk_gallery(x, sharded, k)
        return index.block_until_ready()

    seconds, _ = _timed(lambda: jax_search(q))
    print(f"jax: first call (compile + run) {seconds:.2f} s")
    methods = {"numpy": lambda x: numpy_topk(x, g, k), "jax": jax_search}
    for name, fn in _faiss_runners(g, k).items():
        fn(q[:8])  # warm the thread pool
        methods[name] = fn

    times = {name: [] for name in methods}
    results = {}
    for _ in range(repeats):
        for name, fn in methods.items():
            time.sleep(SETTLE_S)
            seconds, results[name] = _timed(lambda: fn(q))
            times[name].append(seconds)
    report(times, results, queries)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS: {peak:.2f} GiB")


def report(times: dict, results: dict, queries: int) -> None:
    """Queries per second per method, ratios to numpy (and faiss), and top-k agreement with numpy."""
    qps = {name: queries / statistics.median(t) for name, t in times.items()}
    for name, value in qps.items():
        line = (f"{name:>10}: {value:10,.1f} queries/s  (median {statistics.median(times[name]):.3f} s, "
                f"runs {', '.join(f'{t:.3f}' for t in times[name])} s)")
        line += f"  top-k identical to numpy: {_agreement(results[name], results['numpy']):.2f}%"
        print(line)
    print(f"ratio jax / numpy: {qps['jax'] / qps['numpy']:.2f}x")
    for name in ("faiss", "faiss-blas"):
        if name in qps:
            print(f"ratio jax / {name}: {qps['jax'] / qps[name]:.2f}x;  {name} / numpy: "
                  f"{qps[name] / qps['numpy']:.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--dim", type=int, default=1_536)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="200 queries x 20,000 x 512: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.gallery, args.queries, args.dim = 20_000, 200, 512
    run(args.gallery, args.queries, args.dim, args.k, args.repeats, args.seed)


if __name__ == "__main__":
    main()
