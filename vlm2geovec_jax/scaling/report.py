"""``vlm2geovec scale fit --workdir W``: the fit of a study's runs as W/fit.json and W/report.md with figures.

    W/fit.json                   runs, law (constants with bootstrap intervals), holdout, optimal
    W/report.md                  the same in words and tables, with the figures below
    W/loss_vs_compute.png        eval loss against training compute, one line per rung, the frontier
    W/isoflop.png                predicted loss against model size at fixed compute, N*(C) marked
    W/predicted_vs_observed.png  the law against every run; the largest run as predicted without it
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vlm2geovec_jax.scaling import fit as fit_lib  # noqa: E402
from vlm2geovec_jax.scaling.run import read_results  # noqa: E402


def _si(n: float) -> str:
    return next((f"{n / s:.3g}{u}" for u, s in (("B", 1e9), ("M", 1e6), ("K", 1e3)) if n >= s), f"{n:.0f}")


def _law(fit: dict) -> fit_lib.Law:
    return fit_lib.Law(**{k: v["value"] for k, v in fit["law"].items()})


def loss_vs_compute(fit: dict, path: Path) -> Path:
    runs = fit["runs"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for rung in dict.fromkeys(r["rung"] for r in sorted(runs, key=lambda r: r["non_embedding_params"])):
        mine = sorted((r for r in runs if r["rung"] == rung), key=lambda r: r["flops"])
        ax.plot([r["flops"] for r in mine], [r["eval_loss"] for r in mine], "o-", ms=4,
                label=f"{rung} (N = {_si(mine[0]['non_embedding_params'])})")
    order = sorted(runs, key=lambda r: r["flops"])
    frontier = np.minimum.accumulate([r["eval_loss"] for r in order])
    ax.step([r["flops"] for r in order], frontier, "k:", where="post", label="frontier (best so far)")
    opt = fit["optimal"]
    ax.plot(opt["compute"], opt["loss"], "k--", lw=1, label="law at N*(C)")
    ax.set(xscale="log", xlabel="training compute (FLOPs)", ylabel="held-out InfoNCE",
           title="eval loss against compute, per rung")
    return _save(fig, ax, path)


def _save(fig, ax, path: Path) -> Path:
    """Legend, layout, PNG at 120 dpi, figure closed (pyplot keeps every open figure alive)."""
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def isoflop(fit: dict, path: Path) -> Path:
    law, opt, k, g = _law(fit), fit["optimal"], fit["flops_per_example"]["k"], fit["flops_per_example"]["g"]
    sizes = [r["non_embedding_params"] for r in fit["runs"]]
    ns = np.geomspace(min(sizes) / 4, max(sizes) * 4, 200)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for c, n_opt, l_opt in zip(opt["compute"], opt["params"], opt["loss"]):
        line, = ax.plot(ns, law(ns, c / (k * ns ** g)), label=f"C = {c:.2g}")
        ax.plot([n_opt], [l_opt], "*", ms=10, color=line.get_color())
    for point in fit["isoflop_observed"]:
        ax.plot([point["params"]], [point["loss"]], "kD", ms=5)
    ax.scatter(sizes, [r["eval_loss"] for r in fit["runs"]], c=np.log10([r["flops"] for r in fit["runs"]]),
               cmap="viridis", s=18, zorder=3, label="runs (colour: log10 C)")
    observed = [r["eval_loss"] for r in fit["runs"]]
    ax.set_ylim(min(observed + opt["loss"]) * 0.97, max(observed) * 1.15)
    ax.set(xscale="log", xlabel="non-embedding parameters N", ylabel="held-out InfoNCE",
           title="isoFLOP curves of the fitted law (star: N*(C))")
    return _save(fig, ax, path)


def predicted_vs_observed(fit: dict, path: Path) -> Path:
    runs, hold = fit["runs"], fit["holdout"]
    observed = [r["eval_loss"] for r in runs]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(observed, [r["predicted_loss"] for r in runs], s=18, label="fit on all runs")
    ax.scatter([hold["observed"]], [hold["predicted"]], marker="x", s=80, c="red",
               label=f"{hold['run']} predicted without it ({100 * hold['relative_error']:.1f}% off)")
    lo, hi = min(observed) * 0.97, max(observed) * 1.03
    ax.plot([lo, hi], [lo, hi], "k:", lw=1)
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="observed eval loss", ylabel="predicted eval loss",
           title="L(N, D) against the runs")
    return _save(fig, ax, path)


def markdown(fit: dict) -> str:
    law, hold, opt = fit["law"], fit["holdout"], fit["optimal"]
    lines = ["# Scaling fit", "",
             f"L(N, D) = E + A / N^alpha + B / D^beta fitted to {len(fit['runs'])} runs: N = non-embedding "
             "parameters, D = training examples, L = held-out InfoNCE on the study's fixed evaluation set "
             f"(Huber delta {fit['fit']['huber_delta']:g} on log residuals, L-BFGS-B from a grid of starts; "
             f"95% intervals from {fit['fit']['bootstrap_samples']} bootstrap refits).", "",
             "| constant | value | 95% interval |", "|---|---:|---|"]
    lines += [f"| {k} | {v['value']:.4g} | [{v['interval'][0]:.4g}, {v['interval'][1]:.4g}] |" for k, v in law.items()]
    lines += ["", "## Leave-largest-out", "",
              f"Fitted without {hold['run']}, the law predicts its eval loss as {hold['predicted']:.4f}; measured "
              f"{hold['observed']:.4f}: {100 * hold['relative_error']:.2f}% off.", "",
              "## Compute-optimal size and data", "",
              f"FLOPs per example ~ {fit['flops_per_example']['k']:.3g} N^{fit['flops_per_example']['g']:.3f} over "
              f"the rungs; along the law N*(C) ~ C^{opt['params_exponent']:.3f}, D*(C) ~ "
              f"C^{opt['examples_exponent']:.3f}.", "",
              "| compute (FLOPs) | N* | D* (examples) | predicted loss |", "|---:|---:|---:|---:|"]
    lines += [f"| {c:.3g} | {n:.3g} | {d:.3g} | {l:.4f} |"
              for c, n, d, l in zip(opt["compute"], opt["params"], opt["examples"], opt["loss"])]
    if fit["isoflop_observed"]:
        lines += ["", "Per FLOPs budget, a parabola in log N through the observed runs (diamonds in isoflop.png):", "",
                  "| compute (FLOPs) | N* (parabola) | loss at N* |", "|---:|---:|---:|"]
        lines += [f"| {p['compute']:.3g} | {p['params']:.3g} | {p['loss']:.4f} |" for p in fit["isoflop_observed"]]
    lines += ["", "## Runs", "", "| run | non-emb. params | examples | FLOPs | eval loss | predicted | P@1 |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['name']} | {r['non_embedding_params']:,} | {r['examples']:,} | {r['flops']:.3g} | "
              f"{r['eval_loss']:.4f} | {r['predicted_loss']:.4f} | {r['p_at_1']:.3f} |" for r in fit["runs"]]
    lines += ["", "![loss against compute](loss_vs_compute.png)", "", "![isoFLOP curves](isoflop.png)", "",
              "![predicted against observed](predicted_vs_observed.png)", ""]
    return "\n".join(lines)


def fit_command(workdir: str) -> Path:
    """Fits the finished runs in ``workdir`` and writes fit.json, report.md and the figures there."""
    workdir = Path(workdir)
    results = read_results(workdir)
    if not results:
        raise FileNotFoundError(f"{workdir / 'runs'}: no finished run (runs/*/result.json); run the study first")
    fit = fit_lib.fit_study(results)
    (workdir / "fit.json").write_text(json.dumps(fit, indent=1) + "\n")
    loss_vs_compute(fit, workdir / "loss_vs_compute.png")
    isoflop(fit, workdir / "isoflop.png")
    predicted_vs_observed(fit, workdir / "predicted_vs_observed.png")
    (workdir / "report.md").write_text(markdown(fit))
    hold = fit["holdout"]
    law = {k: v["value"] for k, v in fit["law"].items()}
    print(f"fit of {len(results)} runs: alpha {law['alpha']:.3f}, beta {law['beta']:.3f}"
          f"; {hold['run']} predicted {hold['predicted']:.4f} vs {hold['observed']:.4f} measured "
          f"({100 * hold['relative_error']:.1f}% off)")
    print(f"fit written to {workdir / 'fit.json'}, report to {workdir / 'report.md'}")
    return workdir / "fit.json"
