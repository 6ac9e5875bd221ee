"""Multi-process training: two processes on localhost (jax.distributed, 4 CPU devices each, gloo collectives)
follow the loss trajectory of one process with 8 devices, write one checkpoint together, and only process 0
writes metrics.

The same global batch either way: the synthetic source draws every global batch from (seed, step) and each
process keeps its own rows (train/data.py), which to_global assembles into global arrays.
"""
from __future__ import annotations

import numpy as np
import pytest

from vlm2geovec_jax.train.metrics_log import read_metrics
from train_runs import checkpoint_steps, finish_all, free_port, load_dump, restore_numpy, run_worker, start_worker

TRAJECTORY = ("loss", "accuracy", "grad_norm", "param_norm", "update_norm", "learning_rate")


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "jax_cache"


def assert_close_trees(actual: dict, expected: dict, what: str) -> None:
    assert sorted(actual) == sorted(expected), what
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=f"{what}: {key}")


def test_two_processes_train_like_one_process_with_eight_devices(tmp_path, jax_cache):
    single, multi = tmp_path / "single", tmp_path / "multi"
    run_worker(single, "--dump", str(single / "final.npz"), devices=8, cache_dir=jax_cache)

    coordinator = f"127.0.0.1:{free_port()}"
    procs = [start_worker(multi, "--coordinator", coordinator, "--num-processes", "2",
                          "--process-id", str(i), "--dump", str(multi / "final.npz"), devices=4, cache_dir=jax_cache)
             for i in range(2)]
    for i, (code, out) in enumerate(finish_all(procs)):
        assert code == 0, f"process {i} exited {code}; output:\n{out[-4000:]}"
        assert f"worker: process {i} finished at step 4" in out

    one, two = read_metrics(single), read_metrics(multi)
    assert [m["step"] for m in two] == [1, 2, 3, 4]  # one line per step: only process 0 writes metrics
    for a, b in zip(two, one):
        for key in TRAJECTORY:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=f"step {a['step']} {key}")
    assert one[-1]["loss"] != one[0]["loss"]  # the trajectory moves, so matching it means something

    # Both processes wrote their shards of each checkpoint, and it restores to the single-process result.
    assert checkpoint_steps(multi) == [2, 4]
    step4 = multi / "checkpoints" / "4" / "params"
    assert (step4 / "ocdbt.process_0").is_dir() and (step4 / "ocdbt.process_1").is_dir(), list(step4.iterdir())
    assert_close_trees(restore_numpy(step4), restore_numpy(single / "checkpoints" / "4" / "params"), "checkpoint 4")
    assert_close_trees(load_dump(multi / "final.npz"), load_dump(single / "final.npz"), "final params")

    # The final LoRA-merged export is written by both processes into one staging directory, then renamed once.
    assert (multi / "model" / "model_config.json").is_file() and not list(multi.glob(".model.tmp-*"))
    assert_close_trees(restore_numpy(multi / "model" / "params"), restore_numpy(single / "model" / "params"),
                       "exported model")
