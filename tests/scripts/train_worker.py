"""One training process for the fault-tolerance and multi-process tests (tests/test_resume.py,
tests/test_multiprocess.py, tests/test_preemption.py): trains configs/tiny.py with overrides into a workdir,
optionally dying on purpose.

    python tests/scripts/train_worker.py WORKDIR [--kill-after-step N] [--kill-in-save N]
        [--coordinator HOST:PORT --num-processes P --process-id I] [--dump FILE] [key=value ...]

--kill-after-step N   SIGKILL from a hook after step N, once the checkpoint of the last multiple of
                      checkpoint.every before N is finalised (so the test knows where resume must start).
--kill-in-save N      SIGKILL inside orbax's commit of step N: its files are written to the temporary directory
                      but the atomic rename that finalises it has not happened.
--dump FILE           after training, writes the final trainable parameters (gathered to every process) as .npz
                      (process 0 only).
It SIGKILLs itself rather than raising so that nothing (atexit, orbax's finalisers, jax) gets to clean up: the
workdir is left exactly as a crashed or pre-empted machine would leave it. A SIGTERM (pre-emption notice) ends it
as it ends ``vlm2geovec train``: checkpoint saved, exit code EXIT_PREEMPTED.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--kill-after-step", type=int, default=0)
    parser.add_argument("--kill-in-save", type=int, default=0)
    parser.add_argument("--coordinator", default="")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--dump", default="")
    parser.add_argument("overrides", nargs="*")
    return parser.parse_intermixed_args(argv)


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def kill_in_commit_of(step: int) -> None:
    """Patches orbax's atomic-rename finalisation so that committing ``step`` SIGKILLs the process."""
    from orbax.checkpoint._src.path import atomicity

    original = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self):
        if self.get_final().name == str(step):
            print(f"worker: killed while committing {self.get()}", flush=True)
            die()
        return await original(self)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize


def kill_after(step: int, workdir: Path, every: int):
    """A hook that SIGKILLs after ``step``, once the checkpoint it must resume from is on disk."""
    saved = workdir / "checkpoints" / str((step // every) * every)

    def hook(done: int, state) -> None:
        if done != step:
            return
        deadline = time.monotonic() + 120
        while every <= step and not saved.is_dir() and time.monotonic() < deadline:
            time.sleep(0.05)  # the async save of that step may still be committing
        print(f"worker: killed after step {done}", flush=True)
        die()

    return hook


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    import jax

    if args.num_processes > 1:
        # gloo is already jax 0.10.2's default for CPU collectives across processes; said here so a change of
        # default cannot silently leave the processes without cross-process collectives.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                                   process_id=args.process_id)
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from jax.experimental import multihost_utils

    from vlm2geovec_jax.train import trainer
    from vlm2geovec_jax.train.config import load_config
    from vlm2geovec_jax.train.preemption import EXIT_PREEMPTED, Preempted

    config = load_config(str(ROOT / "configs" / "tiny.py"), args.overrides)
    workdir = Path(args.workdir)
    hooks = []
    if args.kill_after_step:
        hooks.append(kill_after(args.kill_after_step, workdir, config.checkpoint.every))
    if args.kill_in_save:
        kill_in_commit_of(args.kill_in_save)
    try:
        state = trainer.train(config, workdir, hooks=hooks, progress=False)
    except Preempted as e:
        print(f"worker: process {jax.process_index()} {e}", flush=True)
        sys.exit(EXIT_PREEMPTED)
    if args.dump:
        flat = {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)}
        flat = multihost_utils.process_allgather(flat, tiled=True)
        if jax.process_index() == 0:
            np.savez(args.dump, **{k: np.asarray(v) for k, v in flat.items()})
    print(f"worker: process {jax.process_index()} finished at step {state.step}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
