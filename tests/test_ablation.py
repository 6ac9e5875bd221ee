"""vlm2geovec ablate on a tiny setting: the schema of ablation.json, matched FLOPs, same seed -> same file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlm2geovec_jax import ablation, cli, demo
from vlm2geovec_jax.models.presets import get_preset
from vlm2geovec_jax.train.config import load_config

REPO = Path(__file__).resolve().parents[1]
TASKS = ["scene_classification", "region_caption_retrieval", "referring_expression_retrieval"]


def _config():
    config = load_config(REPO / "configs" / "demo.py")
    config.model = get_preset("tiny")
    config.num_steps, config.batch_size, config.log_every = 2, 8, 1
    config.data.pipeline.sub_batch_size = 8
    config.optimizer.warmup_steps = 1
    return config


def _run(workdir: Path) -> dict:
    world = dict(demo.DEMO_WORLD, num_train=12, num_validation=4, num_test=8)
    return ablation.run_ablation(workdir, config=_config(), world=world, tasks=TASKS, progress=False)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    _run(a)
    _run(b)
    return a, b


def test_same_seed_gives_the_same_ablation_json(two_runs):
    a, b = two_runs
    assert (a / "ablation.json").read_bytes() == (b / "ablation.json").read_bytes()


def test_schema_and_matched_flops(two_runs):
    result = json.loads((two_runs[0] / "ablation.json").read_text())
    assert set(result["tasks"]) == set(TASKS)
    for t in result["tasks"].values():
        assert {"single", "dual", "chance"} <= set(t)
        assert all(0.0 <= t[k] <= 100.0 for k in ("single", "dual", "chance"))
    assert result["tasks"]["scene_classification"]["chance"] == pytest.approx(10.0)  # 10 scene classes
    assert set(result["groups"]) == {"scene_classification", "grounding_region"}
    region = [result["tasks"][t]["single"] for t in TASKS[1:]]
    assert result["groups"]["grounding_region"]["single"] == pytest.approx(sum(region) / 2)
    # dual items are image-only or text-only, so a dual step costs less and the dual model trains longer
    flops, steps, per_step = result["flops"], result["steps"], result["flops_per_step"]
    assert per_step["dual"] < per_step["single"] and steps["single"] == 2 and steps["dual"] >= 2
    assert flops["dual"] == pytest.approx(per_step["dual"] * steps["dual"])
    assert abs(flops["dual"] - flops["single"]) <= per_step["dual"] / 2  # matched to within half a step
    assert set(result["crop"]) == set(TASKS[1:]) and result["split"] == "test"
    assert set(result["validation"]["tasks"]) == set(TASKS) and set(result["validation"]["crop"]) == set(TASKS[1:])
    assert (two_runs[0] / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    md = (two_runs[0] / "ablation.md").read_text()
    assert "| referring_expression_retrieval |" in md and "## Must show" in md


def test_cli_registers_ablate():
    args = cli.build_parser().parse_args(["ablate", "--workdir", "w", "--steps", "3"])
    assert (args.workdir, args.steps) == ("w", 3)


def test_cli_trains_the_ablations_steps_not_the_demos(monkeypatch):
    seen = {}
    monkeypatch.setattr(ablation, "run_ablation", lambda workdir, *, steps: seen.update(steps=steps))
    assert cli.main(["ablate", "--workdir", "w"]) == 0
    assert seen["steps"] == ablation.DEFAULT_STEPS > load_config(REPO / "configs" / "demo.py").num_steps


def test_bad_steps_is_one_line_and_exit_2(capsys):
    assert cli.main(["ablate", "--workdir", "w", "--steps", "0"]) == 2
    assert capsys.readouterr().err.strip().endswith("--steps: expected a positive number of training steps, got 0")
