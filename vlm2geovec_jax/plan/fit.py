"""``--fit``: the fastest configuration that fits, found by compiling.

Train: remat policies from least to most recomputation; for each, the fewest GradCache chunks whose step fits
with the headroom, by bisection over the admissible chunk counts (memory falls as chunks grow, so the largest
count is tried first: if that does not fit, the policy cannot). The first policy that fits wins: chunks cost a
few weight re-reads, recomputation costs FLOPs. Eval: the largest per-device batch, by doubling then bisection.
"""
from __future__ import annotations

from collections.abc import Callable

from vlm2geovec_jax.plan.estimate import POLICIES
from vlm2geovec_jax.plan.memory import Measure

Trial = tuple[int, str, Measure]


def chunk_counts(batch_rows: tuple[int, ...], shards: int) -> list[int]:
    """Chunk counts GradCache admits: every side's rows divide into chunks x batch shards (grad_cache.py)."""
    return [n for n in range(1, min(batch_rows) + 1) if all(rows % (n * shards) == 0 for rows in batch_rows)]


def fit_train(measure: Callable[[int, str], Measure], counts: list[int], limit: int,
              log: Callable[[str], None] = print) -> tuple[Trial | None, list[Trial]]:
    """(the chosen (chunks, policy, measure) or None, every trial) for steps needing at most ``limit`` bytes."""
    trials: list[Trial] = []

    def ok(i: int, policy: str) -> bool:
        m = measure(counts[i], policy)
        trials.append((counts[i], policy, m))
        good = m.compiled and m.total <= limit
        log(f"  chunks {counts[i]:>4}, remat {policy:<18} {m.total / 2 ** 30:7.2f} GiB a chip "
            f"{'fits' if good else 'does not fit'} ({m.compile_s:.0f} s)")
        return good

    for policy in POLICIES:
        if not ok(len(counts) - 1, policy):
            continue
        lo, hi = -1, len(counts) - 1   # counts[hi] fits; counts[lo] does not (or lo = -1: nothing below)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ok(mid, policy):
                hi = mid
            else:
                lo = mid
        chosen = next(t for t in trials if t[0] == counts[hi] and t[1] == policy)
        return chosen, trials
    return None, trials


def fit_eval(measure: Callable[[int], Measure], start: int, limit: int, cap: int = 4096,
             log: Callable[[str], None] = print) -> tuple[int, Measure | None]:
    """The largest eval batch (rows on one chip, to within an eighth) whose forward needs at most ``limit``
    bytes, and its measure; (0, None) when not even one row fits."""
    results: dict[int, Measure] = {}

    def ok(rows: int) -> bool:
        m = results[rows] = measure(rows)
        good = m.compiled and m.total <= limit
        log(f"  eval batch {rows:>5}: {m.total / 2 ** 30:7.2f} GiB a chip {'fits' if good else 'does not fit'} "
            f"({m.compile_s:.0f} s)")
        return good

    rows = max(start, 1)
    if ok(rows):                      # double until it fails: lo fits, hi does not (None: the cap fits)
        lo, hi = rows, None
        while hi is None and lo < cap:
            nxt = min(lo * 2, cap)
            lo, hi = (nxt, None) if ok(nxt) else (lo, nxt)
    else:                             # halve until it fits
        lo, hi = 0, rows
        while lo == 0 and hi > 1:
            nxt = hi // 2
            lo, hi = (nxt, hi) if ok(nxt) else (0, nxt)
    while hi is not None and lo > 0 and hi - lo > max(1, lo // 8):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo, results.get(lo)
