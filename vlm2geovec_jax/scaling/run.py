"""Running a study: every run on this machine one after another (resumable), or emitted for a cluster.

``vlm2geovec scale run --study FILE --workdir W`` trains each run in ``W/runs/NAME`` and writes
``W/runs/NAME/result.json`` when it ends; a run with a result is skipped, a run without one resumes from its
last checkpoint (the trainer's exact resume), so a killed study is simply started again. ``--emit DIR``
writes ``DIR/NAME.py`` (the run's full training config) and ``DIR/commands.sh`` (one ``vlm2geovec train``
per run) instead.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import ml_collections

from vlm2geovec_jax.scaling.study import Run, load_study, plan
from vlm2geovec_jax.train.metrics_log import read_metrics

RESULT = "result.json"


def final_eval(run_dir: Path, steps: int) -> dict:
    """The held-out evaluation logged at the run's last step (the last such line: a resumed run may repeat it)."""
    evals = [m for m in read_metrics(run_dir) if "eval_loss" in m and m["step"] == steps]
    if not evals:
        raise ValueError(f"{run_dir / 'metrics.jsonl'}: no eval_loss at step {steps}; the study's eval.every "
                         "must be > 0")
    return evals[-1]


def result_of(run: Run, run_dir: Path, wall_s: float) -> dict:
    ev = final_eval(run_dir, run.steps)
    return dict(name=run.name, rung=run.rung, budget=run.budget, budget_kind=run.budget_kind, seed=run.seed,
                params=run.params,
                non_embedding_params=run.non_embedding_params, flops_per_example=run.flops_per_example,
                steps=run.steps, examples=run.examples, flops=run.flops, eval_loss=ev["eval_loss"],
                p_at_1=ev["eval_p_at_1"], wall_s=wall_s)


def prepare_data(study: ml_collections.ConfigDict, workdir: Path) -> None:
    """Builds the study's GeoScenes world and the demo tokenizer (once) and points the base config's data at
    them: every task reads the world just built."""
    if not study.get("geoscenes"):
        return
    from vlm2geovec_jax.demo import build_geoscenes  # noqa: PLC0415
    from vlm2geovec_jax.inputs.tokenizer import build_demo_tokenizer  # noqa: PLC0415

    dataset = build_geoscenes(workdir / "data", study.geoscenes.to_dict())
    pipeline = study.base.data.pipeline
    pipeline.data_dir = str(workdir / "data")
    pipeline.tokenizer = str(build_demo_tokenizer(workdir / "tokenizer"))
    pipeline.tasks = [{**dict(task), "dataset": dataset} for task in pipeline.tasks]


def run_study(study_path: str, workdir: str, *, progress: bool = True) -> Path:
    """Trains every run not finished yet; returns the runs directory."""
    from vlm2geovec_jax.train.trainer import train  # noqa: PLC0415

    workdir = Path(workdir).absolute()
    study = load_study(study_path)
    logging.getLogger("vlm2geovec_jax.inputs.pipeline").setLevel(logging.ERROR)
    prepare_data(study, workdir)  # before planning: every run's config copies the base
    runs = plan(study)
    begin = time.perf_counter()
    for i, run in enumerate(runs, 1):
        run_dir = workdir / "runs" / run.name
        head = f"[{i}/{len(runs)}] {run.name}: {run.non_embedding_params / 1e6:.2f}M non-embedding params, " \
               f"{run.steps} steps, {run.flops:.3g} FLOPs"
        if (run_dir / RESULT).is_file():
            print(f"{head}: done before, skipped", flush=True)
            continue
        print(f"{head}{' (resuming)' if (run_dir / 'checkpoints').is_dir() else ''}", flush=True)
        config = run.config
        start = time.perf_counter()
        train(config, run_dir, progress=progress)
        result = result_of(run, run_dir, time.perf_counter() - start)
        (run_dir / RESULT).write_text(json.dumps(result, indent=1) + "\n")
        print(f"[{i}/{len(runs)}] {run.name}: eval loss {result['eval_loss']:.4f}, P@1 {result['p_at_1']:.3f}, "
              f"{result['wall_s']:.0f} s (study so far {time.perf_counter() - begin:.0f} s)", flush=True)
    print(f"{len(runs)} runs finished in {workdir / 'runs'}; fit them with: vlm2geovec scale fit --workdir {workdir}")
    return workdir / "runs"


def read_results(workdir: str | Path) -> list[dict]:
    """Every finished run's result, in name order."""
    paths = sorted((Path(workdir) / "runs").glob(f"*/{RESULT}"))
    return [json.loads(p.read_text()) for p in paths]


CONFIG_FILE = '''"""Run {name} of study {study} (rung {rung}, {kind} budget {budget:g}, seed {seed}).

Written by vlm2geovec scale run --emit.
"""
import json

import ml_collections

CONFIG = json.loads(r"""{json}""")


def get_config():
    return ml_collections.ConfigDict(CONFIG)
'''


def emit(study_path: str, out: str, workdir: str, topology: str | None = None) -> Path:
    """One config file per run and commands.sh with one ``vlm2geovec train`` per run; returns commands.sh.

    With ``topology``, each run's train step is also compiled for it by ``vlm2geovec plan`` (libtpu, ahead of
    time): ``<run>.plan.json`` beside the config and one line per run saying whether it fits.
    """
    study = load_study(study_path)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["#!/bin/sh", f"# study {study.name}: {len(plan(study))} runs; add --distributed on multi-host pods",
             "set -e"]
    for run in plan(study):
        path = out_dir / f"{run.name}.py"
        path.write_text(CONFIG_FILE.format(name=run.name, study=study.name, rung=run.rung, kind=study.budgets.kind,
                                           budget=run.budget, seed=run.seed,
                                           json=json.dumps(run.config.to_dict(), indent=1)))
        lines.append(f"vlm2geovec train --config {path} --workdir {workdir}/runs/{run.name}")
        if topology:
            check_fits(run.name, run.config, topology, out_dir / f"{run.name}.plan.json")
    commands = out_dir / "commands.sh"
    commands.write_text("\n".join(lines) + "\n")
    commands.chmod(0o755)
    print(f"{len(lines) - 3} run configs and {commands} written")
    return commands


def check_fits(name: str, config, topology: str, path: Path) -> dict:
    """``vlm2geovec plan`` of one run's train step on ``topology``; writes its JSON and prints one line."""
    from vlm2geovec_jax.plan import report  # noqa: PLC0415 (imports libtpu's topologies)
    from vlm2geovec_jax.plan.planner import make_plan  # noqa: PLC0415
    from vlm2geovec_jax.plan.topology import get_topology  # noqa: PLC0415

    plan = make_plan(config, get_topology(topology), with_eval=False, log=lambda line: None)
    report.write_json(plan, path)
    verdict = {True: "fits", False: "DOES NOT FIT", None: "not compiled (analytic only)"}[plan["fits"]]
    print(f"{name}: {verdict} on {topology} ({plan['hbm_per_chip_gib']:.2f} of {plan['hbm_capacity_gib']:.2f} "
          f"GiB a chip); plan in {path}")
    return plan
