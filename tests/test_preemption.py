"""Pre-emption: SIGTERM mid-run makes ``vlm2geovec train`` save a checkpoint at the next step boundary and exit 75;
rerunning the same command ends bit-identical (float32, CPU) to a run that was never interrupted. With two
processes, a SIGTERM to one of them stops both at the same step.

The single-process run reads the grain pipeline (GeoScenes built here, the demo tokenizer), so the checkpoint must
carry the data iterator's position for the resumed run to see the same batches.
"""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vlm2geovec_jax.train.metrics_log import read_metrics
from vlm2geovec_jax.train.preemption import EXIT_PREEMPTED
from train_runs import ROOT, checkpoint_steps, finish, finish_all, free_port, restore_numpy, start_worker, worker_env

DEVICES = 4
STEPS = 40  # long enough that the signal lands mid-run: the tiny steps take tens of milliseconds
REPLAYED = ("loss", "accuracy", "grad_norm", "param_norm", "update_norm", "learning_rate")
PIPELINE = ("model.text.num_layers=1", "model.vision.depth=1", "batch_size=8", "data.pipeline.sub_batch_size=4",
            f"num_steps={STEPS}", "log_every=1", "checkpoint.every=1000", "optimizer.warmup_steps=2")


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "jax_cache"


@pytest.fixture(scope="module")
def geoscenes(tmp_path_factory) -> tuple[str, ...]:
    """GeoScenes (16 training tiles) and the demo tokenizer: the ``data.pipeline`` overrides that read them."""
    from vlm2geovec_jax import demo
    from vlm2geovec_jax.inputs.tokenizer import build_demo_tokenizer

    root = tmp_path_factory.mktemp("geoscenes")
    demo.build_geoscenes(root / "data", dict(demo.DEMO_WORLD, num_train=16, num_test=2))
    return f"data.pipeline.data_dir={root / 'data'}", f"data.pipeline.tokenizer={build_demo_tokenizer(root / 'tok')}"


def start_train(workdir: Path, overrides: tuple[str, ...], cache_dir: Path) -> subprocess.Popen:
    """``vlm2geovec train --config configs/demo.py`` in a subprocess, as a user (or a TPU VM's supervisor) runs it."""
    cmd = [sys.executable, "-m", "vlm2geovec_jax.cli", "train", "--config", str(ROOT / "configs" / "demo.py"),
           "--workdir", str(workdir), *(f"--config.{o}" for o in overrides)]
    return subprocess.Popen(cmd, cwd=ROOT, env=worker_env(DEVICES, cache_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def sigterm_after_logged(proc: subprocess.Popen, workdir: Path, steps: int, timeout: float = 400) -> int:
    """Sends SIGTERM once metrics.jsonl has logged ``steps`` steps; returns how many it had then."""
    deadline = time.monotonic() + timeout
    while len(logged := read_metrics(workdir)) < steps:
        assert proc.poll() is None, f"the run ended before step {steps}:\n{proc.stdout.read()[-4000:]}"
        assert time.monotonic() < deadline, f"no step {steps} in {timeout} s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    return logged[-1]["step"]


def stopped_at(out: str) -> int:
    match = re.search(r"pre-empted \(SIGTERM\): stopped after step (\d+) and saved its checkpoint", out)
    assert match, out[-4000:]
    return int(match.group(1))


def assert_same_run(workdir: Path, reference: Path, item_dirs: tuple[str, ...]) -> None:
    """Same final checkpoint and exported model, and every logged step's metrics equal the reference's."""
    for item in item_dirs:
        actual, expected = restore_numpy(workdir / item), restore_numpy(reference / item)
        assert sorted(actual) == sorted(expected), item
        for key in expected:
            np.testing.assert_array_equal(actual[key], expected[key], err_msg=f"{item}: {key}")
    logged, expected = read_metrics(workdir), read_metrics(reference)
    assert [m["step"] for m in logged] == [m["step"] for m in expected]
    for a, b in zip(logged, expected):
        assert {k: a[k] for k in REPLAYED} == {k: b[k] for k in REPLAYED}, a["step"]


def test_sigterm_saves_exits_75_and_the_rerun_equals_an_uninterrupted_pipeline_run(tmp_path, geoscenes, jax_cache):
    overrides = (*PIPELINE, *geoscenes)
    reference, workdir = tmp_path / "reference", tmp_path / "preempted"
    code, out = finish(start_train(reference, overrides, jax_cache))
    assert code == 0, out[-4000:]
    assert [m["step"] for m in read_metrics(reference)] == list(range(1, STEPS + 1))

    proc = start_train(workdir, overrides, jax_cache)
    seen = sigterm_after_logged(proc, workdir, 3)
    code, out = finish(proc)
    assert code == EXIT_PREEMPTED, out[-4000:]
    step = stopped_at(out)
    assert seen < step < STEPS  # the step in flight finished; the run did not go on to the end
    assert checkpoint_steps(workdir) == [step]  # checkpoint.every=1000: this one is the pre-emption's
    assert read_metrics(workdir)[-1]["step"] == step and not (workdir / "model").exists()

    code, out = finish(start_train(workdir, overrides, jax_cache))
    assert code == 0, out[-4000:]
    assert checkpoint_steps(workdir) == [STEPS]
    # Resumed at step + 1 with the data iterator where it stopped: every step's loss is the reference's.
    assert_same_run(workdir, reference, (f"checkpoints/{STEPS}/params", f"checkpoints/{STEPS}/opt_state",
                                         "model/params"))


def run_two(workdir: Path, cache_dir: Path, *overrides: str, sigterm: int | None = None) -> list[tuple[int, str]]:
    """Two cooperating worker processes (4 devices each); ``sigterm``: the process to SIGTERM mid-run."""
    coordinator = f"127.0.0.1:{free_port()}"
    procs = [start_worker(workdir, "--coordinator", coordinator, "--num-processes", "2", "--process-id", str(i),
                          *overrides, devices=4, cache_dir=cache_dir) for i in range(2)]
    if sigterm is None:
        return finish_all(procs)
    sigterm_after_logged(procs[sigterm], workdir, 3)  # process 0 writes the metrics
    return finish_all(procs, expect=EXIT_PREEMPTED)


def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step(tmp_path, jax_cache):
    steps = ("num_steps=100", "checkpoint.every=1000", "log_every=1")
    reference, workdir = tmp_path / "reference", tmp_path / "preempted"
    for i, (code, out) in enumerate(run_two(reference, jax_cache, *steps)):
        assert code == 0, f"process {i}:\n{out[-4000:]}"

    results = run_two(workdir, jax_cache, *steps, sigterm=1)
    for i, (code, out) in enumerate(results):
        assert code == EXIT_PREEMPTED, f"process {i} exited {code}:\n{out[-4000:]}"
    step = stopped_at(results[0][1])
    assert stopped_at(results[1][1]) == step < 100
    assert checkpoint_steps(workdir) == [step]
    saved = workdir / "checkpoints" / str(step) / "params"
    assert (saved / "ocdbt.process_0").is_dir() and (saved / "ocdbt.process_1").is_dir(), list(saved.iterdir())

    for i, (code, out) in enumerate(run_two(workdir, jax_cache, *steps)):
        assert code == 0, f"process {i}:\n{out[-4000:]}"
        assert f"worker: process {i} finished at step 100" in out
    assert_same_run(workdir, reference, ("checkpoints/100/params", "checkpoints/100/opt_state", "model/params"))
