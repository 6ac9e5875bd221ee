"""Fitting L(N, D) = E + A / N^alpha + B / D^beta to a study's runs, and what follows from the fit.

As Chinchilla and its replications fit it: the prediction in log space, log L = LSE(a - alpha log N,
b - beta log D, e) with A = e^a, B = e^b, E = e^e; a Huber loss (delta 1e-3) on log residuals; L-BFGS-B with
bounds from a grid of starting points, the best kept. N counts non-embedding parameters, D training examples.
Every constant gets a bootstrap interval (runs resampled with replacement, refitted). Compute C = FLOPs per
example (train/flops.py, vision and image tokens included) x D; FLOPs per example ~ k N^g is fitted across
the rungs, so the compute-optimal N*(C) minimises L(N, C / (k N^g)) and D*(C) = C / (k N*^g).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize

NAMES = ("E", "A", "alpha", "B", "beta")
HUBER_DELTA = 1e-3
# x = (a, alpha, b, beta, e); bounds keep exponents positive and E positive below every observed loss.
STARTS = dict(a=(0.0, 10.0), alpha=(0.2, 0.8), b=(0.0, 10.0), beta=(0.2, 0.8))


@dataclasses.dataclass(frozen=True)
class Law:
    E: float
    A: float
    alpha: float
    B: float
    beta: float

    def __call__(self, n, d):
        return self.E + self.A / np.power(n, self.alpha) + self.B / np.power(d, self.beta)

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def check_runs(n: Sequence[float], d: Sequence[float], loss: Sequence[float], names: Sequence[str]) -> None:
    """Raises ValueError naming what is missing for a fit: finite losses, enough runs, two sizes, two budgets."""
    loss = np.asarray(loss, float)
    bad = [f"{name} (eval_loss={value})" for name, value in zip(names, loss) if not np.isfinite(value) or value <= 0]
    if bad:
        raise ValueError(f"fit: runs with a non-finite or non-positive eval loss: {', '.join(bad)}")
    if len(loss) <= len(NAMES):
        raise ValueError(f"fit: {len(loss)} runs for {len(NAMES)} constants ({', '.join(NAMES)}); need at least "
                         f"{len(NAMES) + 1} runs")
    if len(set(n)) < 2:
        raise ValueError(f"fit: every run has the same model size (N={n[0]:g}); need at least 2 sizes for alpha")
    if len(set(d)) < 2:
        raise ValueError(f"fit: every run has the same budget (D={d[0]:g} examples); need at least 2 budgets for "
                         "beta")


def _objective(x, log_n, log_d, log_l):
    """Huber loss of the log residuals and its gradient."""
    a, alpha, b, beta, e = x
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    top = terms.max(0)
    weights = np.exp(terms - top)
    total = weights.sum(0)
    r = top + np.log(total) - log_l
    weights /= total
    small = np.abs(r) <= HUBER_DELTA
    value = np.where(small, 0.5 * r ** 2, HUBER_DELTA * (np.abs(r) - 0.5 * HUBER_DELTA)).sum()
    dr = np.where(small, r, HUBER_DELTA * np.sign(r))
    grad = np.array([(dr * weights[0]).sum(), -(dr * weights[0] * log_n).sum(), (dr * weights[1]).sum(),
                     -(dr * weights[1] * log_d).sum(), (dr * weights[2]).sum()])
    return value, grad


def _bounds(loss: np.ndarray) -> list[tuple[float, float]]:
    return [(-20.0, 60.0), (0.0, 3.0), (-20.0, 60.0), (0.0, 3.0), (math.log(1e-4), math.log(float(loss.min())))]


def _starts(loss: np.ndarray):
    e_hi = math.log(float(loss.min()))
    for a, alpha, b, beta in itertools.product(*STARTS.values()):
        for e in (e_hi - 2.0, e_hi - 0.2):
            yield np.array([a, alpha, b, beta, e])


def fit_law(n, d, loss, *, starts=None, names: Sequence[str] | None = None) -> Law:
    """The best fit over the starting grid (or the given ``starts``)."""
    n, d, loss = (np.asarray(x, float) for x in (n, d, loss))
    check_runs(n, d, loss, names or [f"run {i}" for i in range(len(loss))])
    args = (np.log(n), np.log(d), np.log(loss))
    best, bounds = None, _bounds(loss)
    for x0 in (starts if starts is not None else _starts(loss)):
        x0 = np.clip(x0, *np.array(bounds).T)
        res = optimize.minimize(_objective, x0, args=args, jac=True, method="L-BFGS-B", bounds=bounds,
                                options=dict(maxiter=1000, ftol=1e-14, gtol=1e-10))
        if best is None or res.fun < best.fun:
            best = res
    a, alpha, b, beta, e = best.x
    return Law(E=math.exp(e), A=math.exp(a), alpha=float(alpha), B=math.exp(b), beta=float(beta))


def _x(law: Law) -> np.ndarray:
    return np.array([math.log(law.A), law.alpha, math.log(law.B), law.beta, math.log(law.E)])


def bootstrap(n, d, loss, law: Law, *, samples: int = 200, seed: int = 0, level: float = 0.95) -> dict:
    """{constant: [low, high]} from refits on runs resampled with replacement (started at the full fit);
    resamples with fewer than two sizes or budgets are drawn again."""
    n, d, loss = (np.asarray(x, float) for x in (n, d, loss))
    rng = np.random.default_rng(seed)
    fits = []
    while len(fits) < samples:
        idx = rng.integers(0, len(loss), len(loss))
        if len(set(n[idx])) < 2 or len(set(d[idx])) < 2:
            continue
        fits.append(dataclasses.astuple(fit_law(n[idx], d[idx], loss[idx], starts=[_x(law)])))
    low, high = np.percentile(np.array(fits), [50 * (1 - level), 50 * (1 + level)], axis=0)
    return {name: [float(lo), float(hi)] for name, lo, hi in zip(NAMES, low, high)}


def holdout(n, d, loss, flops, names: Sequence[str]) -> dict:
    """Fits without the run of most compute (the largest) and predicts it."""
    n, d, loss, flops = (np.asarray(x, float) for x in (n, d, loss, flops))
    last = int(np.lexsort((d, n, flops))[-1])
    keep = np.arange(len(loss)) != last
    law = fit_law(n[keep], d[keep], loss[keep], names=[x for i, x in enumerate(names) if i != last])
    predicted = float(law(n[last], d[last]))
    return dict(run=names[last], predicted=predicted, observed=float(loss[last]),
                relative_error=abs(predicted - loss[last]) / loss[last], law=law.as_dict())


def flops_per_example_law(n, flops_per_example) -> tuple[float, float]:
    """(k, g) of FLOPs per example ~ k N^g across the rungs (a line in log-log)."""
    g, log_k = np.polyfit(np.log(np.asarray(n, float)), np.log(np.asarray(flops_per_example, float)), 1)
    return float(math.exp(log_k)), float(g)


def compute_optimal(law: Law, k: float, g: float, compute: float) -> tuple[float, float, float]:
    """(N*, D*, L*) minimising L(N, C / (k N^g)) over log N."""
    def loss_at(log_n):
        n = math.exp(log_n)
        return float(law(n, compute / (k * n ** g)))
    res = optimize.minimize_scalar(loss_at, bounds=(math.log(1e2), math.log(1e13)), method="bounded",
                                   options=dict(xatol=1e-6))
    n = math.exp(res.x)
    return n, compute / (k * n ** g), float(res.fun)


def isoflop_levels(flops: Sequence[float], count: int = 4) -> list[float]:
    """Compute budgets spanning the study's runs, equally spaced in log."""
    lo, hi = math.log10(min(flops)), math.log10(max(flops))
    return [float(10 ** x) for x in np.linspace(lo, hi, count)]


def isoflop_parabolas(results: Sequence[dict]) -> list[dict]:
    """marin's reading of an isoFLOP sweep: per FLOPs budget with 3+ sizes, a quadratic in log N through the
    observed losses, its vertex the budget's compute-optimal size (studies with FLOPs budgets only)."""
    out = []
    for budget in sorted({r["budget"] for r in results if r.get("budget_kind") == "flops"}):
        runs = [r for r in results if r.get("budget_kind") == "flops" and r["budget"] == budget]
        log_n = np.log([r["non_embedding_params"] for r in runs])
        if len(set(log_n)) < 3:
            continue
        c2, c1, c0 = np.polyfit(log_n, [r["eval_loss"] for r in runs], 2)
        vertex = -c1 / (2 * c2) if c2 > 0 else float(log_n[np.argmin([r["eval_loss"] for r in runs])])
        out.append(dict(compute=float(budget), params=float(math.exp(vertex)),
                        loss=float(c0 + c1 * vertex + c2 * vertex ** 2), curvature=float(c2)))
    return out


def fit_study(results: Sequence[dict], *, samples: int = 200, seed: int = 0) -> dict:
    """fit.json's content from the runs' results (scaling/run.py), runs ordered by size, then budget."""
    results = sorted(results, key=lambda r: (r["non_embedding_params"], r["examples"], r["name"]))
    names = [r["name"] for r in results]
    n = [r["non_embedding_params"] for r in results]
    d = [r["examples"] for r in results]
    loss = [r["eval_loss"] for r in results]
    flops = [r["flops"] for r in results]
    law = fit_law(n, d, loss, names=names)
    intervals = bootstrap(n, d, loss, law, samples=samples, seed=seed)
    k, g = flops_per_example_law(n, [r["flops_per_example"] for r in results])
    levels = isoflop_levels(flops)
    optimal = [compute_optimal(law, k, g, c) for c in levels]
    n_exp = float(np.polyfit(np.log(levels), np.log([o[0] for o in optimal]), 1)[0])
    runs = [dict(name=r["name"], rung=r["rung"], params=r["params"], non_embedding_params=r["non_embedding_params"],
                 flops=r["flops"], examples=r["examples"], eval_loss=r["eval_loss"], p_at_1=r["p_at_1"],
                 predicted_loss=float(law(r["non_embedding_params"], r["examples"]))) for r in results]
    return dict(
        runs=runs,
        law={name: dict(value=value, interval=intervals[name]) for name, value in law.as_dict().items()},
        fit=dict(N="non-embedding parameters", D="training examples", loss="held-out InfoNCE (eval_loss)",
                 huber_delta=HUBER_DELTA, bootstrap_samples=samples, interval=0.95),
        holdout=holdout(n, d, loss, flops, names),
        flops_per_example=dict(k=k, g=g),
        optimal=dict(compute=levels, params=[o[0] for o in optimal], examples=[o[1] for o in optimal],
                     loss=[o[2] for o in optimal], params_exponent=n_exp, examples_exponent=1.0 - g * n_exp),
        isoflop_observed=isoflop_parabolas(results))
