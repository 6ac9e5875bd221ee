"""Runs tests/scripts/train_worker.py in subprocesses and reads what it leaves behind (used by
test_resume.py and test_multiprocess.py).

Every worker of a test session shares one persistent JAX compilation cache, so only the first run of each
device layout pays for XLA compilation (minutes on a loaded 2-core machine); a cached executable computes
exactly what a fresh compile does.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

WORKER = Path(__file__).parent / "scripts" / "train_worker.py"
ROOT = Path(__file__).resolve().parents[1]
# Small enough to compile quickly, still LoRA on a sharded encoder: 1 text layer, 1 vision block.
OVERRIDES = ("model.text.num_layers=1", "model.vision.depth=1", "num_steps=4", "checkpoint.every=2")
KILLED = -signal.SIGKILL


def worker_env(devices: int, cache_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def start_worker(workdir: Path, *flags: str, devices: int, cache_dir: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(WORKER), str(workdir), *OVERRIDES, *flags]  # a test's own overrides win
    return subprocess.Popen(cmd, cwd=ROOT, env=worker_env(devices, cache_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
    """(return code, combined output); kills the worker if it overruns."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"worker {proc.args} ran past {timeout} s; output:\n{out[-4000:]}") from None
    return proc.returncode, out


def finish_all(procs: list[subprocess.Popen], timeout: float = 400, expect: int = 0) -> list[tuple[int, str]]:
    """Waits for cooperating workers; once one exits other than ``expect`` the others are killed (they would wait
    for it forever)."""
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs):
        failed = any(p.returncode not in (None, expect) for p in procs)
        if failed or time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(0.2)
    return [(p.wait(), p.stdout.read()) for p in procs]


def run_worker(workdir: Path, *flags: str, devices: int, cache_dir: Path, expect: int = 0) -> str:
    code, out = finish(start_worker(workdir, *flags, devices=devices, cache_dir=cache_dir))
    assert code == expect, f"worker {' '.join(flags)} exited {code}, expected {expect}; output:\n{out[-4000:]}"
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkpoint_steps(workdir: Path) -> list[int]:
    """The complete (finalised) checkpoints orbax would resume from."""
    return list(ocp.CheckpointManager(workdir / "checkpoints").all_steps())


def restore_numpy(item_dir: Path) -> dict[str, np.ndarray]:
    """A saved pytree item (e.g. checkpoints/2/params) as host numpy arrays, whatever devices wrote it."""
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(item_dir).item_metadata.tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    restored = checkpointer.restore(item_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    return flatten(restored)


def flatten(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def load_dump(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}
