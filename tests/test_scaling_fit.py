"""The L(N, D) fit recovers a known law, covers it with its intervals, and refuses what it cannot fit."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vlm2geovec_jax.scaling import fit

TRUTH = fit.Law(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)  # Chinchilla's published constants


def _grid(noise: float, seed: int = 0):
    n, d = np.meshgrid(np.geomspace(1e6, 3e9, 7), np.geomspace(1e8, 3e11, 6))
    n, d = n.ravel(), d.ravel()
    rng = np.random.default_rng(seed)
    return n, d, TRUTH(n, d) * np.exp(rng.normal(0, noise, n.shape))


def test_fit_recovers_known_exponents_and_the_intervals_cover_the_truth():
    n, d, loss = _grid(noise=0.003)
    law = fit.fit_law(n, d, loss)
    assert law.alpha == pytest.approx(TRUTH.alpha, rel=0.05) and law.beta == pytest.approx(TRUTH.beta, rel=0.05)
    assert law.E == pytest.approx(TRUTH.E, rel=0.05)
    intervals = fit.bootstrap(n, d, loss, law, samples=100)
    for name, (low, high) in intervals.items():
        assert low <= getattr(TRUTH, name) <= high, (name, low, high)
        assert low < high


def test_compute_optimal_point_minimises_loss_on_its_isoflop_curve():
    k, g = 6.0, 1.0  # C = 6 N D
    for compute in (1e18, 1e21):
        n_opt, d_opt, l_opt = fit.compute_optimal(TRUTH, k, g, compute)
        assert n_opt * d_opt * 6 == pytest.approx(compute)
        # brute force over the same isoFLOP curve
        ns = np.geomspace(1e3, 1e13, 200001)
        losses = TRUTH(ns, compute / (6 * ns))
        assert n_opt == pytest.approx(ns[np.argmin(losses)], rel=1e-3)
        assert l_opt == pytest.approx(losses.min(), rel=1e-9)
    # Chinchilla's closed form for C = 6ND: N* = G (C/6)^(beta/(alpha+beta)), G = (alpha A / (beta B))^(1/(alpha+beta))
    a, b = TRUTH.alpha, TRUTH.beta
    closed = (a * TRUTH.A / (b * TRUTH.B)) ** (1 / (a + b)) * (1e21 / 6) ** (b / (a + b))
    assert fit.compute_optimal(TRUTH, 6.0, 1.0, 1e21)[0] == pytest.approx(closed, rel=1e-4)


def test_holdout_predicts_the_largest_run_from_the_others():
    n, d, loss = _grid(noise=0.003)
    flops = 6 * n * d
    out = fit.holdout(n, d, loss, flops, [f"run{i}" for i in range(len(n))])
    assert out["run"] == f"run{int(np.argmax(flops))}"
    assert out["relative_error"] < 0.02


@pytest.mark.parametrize("n, d, loss, message", [
    ([1e6, 2e6, 4e6, 1e6, 2e6], [1e8, 1e8, 1e8, 1e9, 1e9], [3, 2.9, 2.8, 2.5, 2.4], "need at least 6 runs"),
    ([1e6, 2e6, 4e6, 1e6, 2e6, 4e6], [1e8] * 3 + [1e9] * 3, [3, 2.9, math.nan, 2.5, 2.4, 2.3], "run 2 (eval_loss=nan)"),
    ([1e6, 2e6, 4e6, 8e6, 16e6, 32e6], [1e8] * 6, [3, 2.9, 2.8, 2.7, 2.6, 2.5], "need at least 2 budgets"),
    ([1e6] * 6, [1e8, 2e8, 4e8, 8e8, 16e8, 32e8], [3, 2.9, 2.8, 2.7, 2.6, 2.5], "need at least 2 sizes"),
])
def test_degenerate_input_is_an_error_naming_what_is_missing(n, d, loss, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fit.fit_law(n, d, loss)


def test_scale_fit_writes_fit_json_report_and_figures(tmp_path):
    from vlm2geovec_jax import cli
    n, d, loss = _grid(noise=0.003)
    n, d, loss = n[::3], d[::3], loss[::3]
    for i, (ni, di, li) in enumerate(zip(n, d, loss)):
        run = tmp_path / "runs" / f"run{i:02d}"
        run.mkdir(parents=True)
        per_example = 6 * ni
        (run / "result.json").write_text(json.dumps(dict(
            name=run.name, rung=f"n{ni:.0e}", budget=di, budget_kind="examples", seed=0, params=int(ni * 1.1),
            non_embedding_params=int(ni), flops_per_example=per_example, steps=1, examples=int(di),
            flops=per_example * int(di), eval_loss=li, p_at_1=0.5, wall_s=1.0)))
    assert cli.main(["scale", "fit", "--workdir", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "fit.json").read_text())
    assert len(out["runs"]) == len(n) and {"params", "flops", "examples", "eval_loss", "p_at_1"} <= set(out["runs"][0])
    assert set(out["law"]) == {"E", "A", "alpha", "B", "beta"} and len(out["law"]["alpha"]["interval"]) == 2
    assert {"run", "predicted", "observed", "relative_error"} <= set(out["holdout"])
    assert {"compute", "params", "examples"} <= set(out["optimal"])
    assert out["flops_per_example"]["g"] == pytest.approx(1.0)
    for name in ("report.md", "loss_vs_compute.png", "isoflop.png", "predicted_vs_observed.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert cli.main(["scale", "fit", "--workdir", str(tmp_path / "nothing")]) == 2

    # fit.json is a function of the results alone (a seeded bootstrap; wall times not read), so a resumed study
    # whose results equal an uninterrupted one's (test_scaling_run) ends with the same fit.json.
    first = (tmp_path / "fit.json").read_bytes()
    for path in (tmp_path / "runs").glob("*/result.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "wall_s": 99.0}))
    assert cli.main(["scale", "fit", "--workdir", str(tmp_path)]) == 0
    assert (tmp_path / "fit.json").read_bytes() == first


def test_isoflop_parabola_finds_the_minimum_of_an_observed_sweep():
    c, k = 1e18, 6.0
    ns = np.geomspace(1e7, 1e10, 9)
    results = [dict(budget=c, budget_kind="flops", non_embedding_params=n, eval_loss=float(TRUTH(n, c / (k * n))))
               for n in ns]
    (point,) = fit.isoflop_parabolas(results)
    assert point["params"] == pytest.approx(fit.compute_optimal(TRUTH, k, 1.0, c)[0], rel=0.25)
    assert fit.isoflop_parabolas([dict(r, budget_kind="examples") for r in results]) == []
