"""Fault tolerance of the trainer: a run SIGKILLed after a step, or while orbax commits a checkpoint, resumes
from its workdir and ends bit-identical (float32, CPU) to an uninterrupted run of the same config.

The runs are subprocesses (tests/scripts/train_worker.py) that kill themselves with SIGKILL, so nothing gets to
clean up: the workdir is what a crashed or pre-empted machine leaves behind.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vlm2geovec_jax.train.metrics_log import read_metrics
from train_runs import KILLED, checkpoint_steps, load_dump, restore_numpy, run_worker

DEVICES = 8
REPLAYED = ("loss", "accuracy", "grad_norm", "param_norm", "update_norm", "learning_rate")


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "jax_cache"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, jax_cache) -> Path:
    """An uninterrupted run (4 steps, checkpoints at 2 and 4); its final params in reference/final.npz."""
    workdir = tmp_path_factory.mktemp("reference")
    run_worker(workdir, "--dump", str(workdir / "final.npz"), devices=DEVICES, cache_dir=jax_cache)
    assert [m["step"] for m in read_metrics(workdir)] == [1, 2, 3, 4]
    return workdir


def assert_trees_equal(actual: dict, expected: dict, what: str) -> None:
    assert sorted(actual) == sorted(expected), what
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=f"{what}: {key}")


def assert_same_metrics(actual: dict, expected: dict) -> None:
    assert actual["step"] == expected["step"]
    assert {k: actual[k] for k in REPLAYED} == {k: expected[k] for k in REPLAYED}, actual["step"]


def assert_resumed_equals_reference(workdir: Path, reference: Path) -> None:
    assert_trees_equal(load_dump(workdir / "final.npz"), load_dump(reference / "final.npz"), "final params")
    assert_trees_equal(restore_numpy(workdir / "model" / "params"), restore_numpy(reference / "model" / "params"),
                       "exported model (LoRA merged)")
    assert checkpoint_steps(workdir) == [2, 4]
    logged = {m["step"]: m for m in read_metrics(workdir)}  # the last entry of each step: the resumed run's
    for expected in read_metrics(reference):
        assert_same_metrics(logged[expected["step"]], expected)


def test_sigkill_after_a_step_then_resume_equals_an_uninterrupted_run(tmp_path, reference, jax_cache):
    out = run_worker(tmp_path, "--kill-after-step", "3", devices=DEVICES, cache_dir=jax_cache, expect=KILLED)
    assert "worker: killed after step 3" in out
    assert checkpoint_steps(tmp_path) == [2]
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2, 3]
    assert not (tmp_path / "model").exists()

    run_worker(tmp_path, "--dump", str(tmp_path / "final.npz"), devices=DEVICES, cache_dir=jax_cache)
    log = read_metrics(tmp_path)
    assert [m["step"] for m in log] == [1, 2, 3, 3, 4]  # resumed from the step-2 checkpoint, not from scratch

    assert_same_metrics(log[3], log[2])  # step 3 replayed exactly: same batch, params, optimizer state
    assert_resumed_equals_reference(tmp_path, reference)


def test_sigkill_while_committing_a_checkpoint_keeps_the_previous_one(tmp_path, reference, jax_cache):
    out = run_worker(tmp_path, "--kill-in-save", "4", devices=DEVICES, cache_dir=jax_cache, expect=KILLED)
    assert "worker: killed while committing" in out
    partial = list((tmp_path / "checkpoints").glob("4.orbax-checkpoint-tmp*"))
    assert len(partial) == 1 and (partial[0] / "params").is_dir(), list((tmp_path / "checkpoints").iterdir())
    assert checkpoint_steps(tmp_path) == [2]  # the half-written step 4 is not a checkpoint
    assert_trees_equal(restore_numpy(tmp_path / "checkpoints" / "2" / "params"),
                       restore_numpy(reference / "checkpoints" / "2" / "params"), "step-2 checkpoint")
    assert not (tmp_path / "model").exists()

    run_worker(tmp_path, "--dump", str(tmp_path / "final.npz"), devices=DEVICES, cache_dir=jax_cache)
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2, 3, 4, 3, 4]  # restarted at the step-2 checkpoint
    assert not list((tmp_path / "checkpoints").glob("4.orbax-checkpoint-tmp*"))  # the stale one was replaced
    assert_resumed_equals_reference(tmp_path, reference)
