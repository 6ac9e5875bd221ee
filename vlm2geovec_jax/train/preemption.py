"""Pre-emption: SIGTERM (a TPU VM's pre-emption or maintenance notice, ``kill``, Kubernetes) stops training at a
step boundary with a checkpoint, instead of losing everything since the last periodic one.

The trainer asks ``notice.reached(step)`` after every step. With one process a SIGTERM handler sets a flag and
the answer is "yes" after the step in flight. With several processes every one must stop, and save, at the SAME
step, or the checkpoint would mix steps: JAX's preemption sync manager (started by ``jax.distributed
.initialize``) catches SIGTERM on any process, tells the others through the coordination service, and agrees on
the step (a little past the furthest process's), with no device synchronisation per step. The trainer then saves
model, optimizer and data-iterator state, waits for the write to finish, and raises ``Preempted``; the command
exits with ``EXIT_PREEMPTED``, and rerunning it resumes exactly where it stopped.
"""
from __future__ import annotations

import signal
import threading
from types import TracebackType

import jax
from jax.experimental import multihost_utils

# EX_TEMPFAIL of sysexits.h ("temporary failure, retry"): a supervisor restarts on this code, not on a crash.
EXIT_PREEMPTED = 75


class Preempted(Exception):
    """Training stopped on a pre-emption notice after saving the checkpoint of ``step``."""

    def __init__(self, step: int, checkpoint_dir: str):
        super().__init__(f"pre-empted (SIGTERM): stopped after step {step} and saved its checkpoint in "
                         f"{checkpoint_dir}; rerun the same command to resume")
        self.step = step


class PreemptionNotice:
    """Context manager: while active, SIGTERM requests a stop that ``reached(step)`` reports at a step boundary."""

    def __init__(self) -> None:
        self._received = threading.Event()
        self._previous = None
        self._multi = jax.process_count() > 1  # JAX's sync manager owns SIGTERM there; do not replace its handler

    def __enter__(self) -> "PreemptionNotice":
        if not self._multi and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def __exit__(self, kind: type | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _on_signal(self, signum: int, frame) -> None:
        self._received.set()  # only a flag: the step in flight finishes, the loop saves and stops

    def reached(self, step: int) -> bool:
        """True when training must stop after ``step`` (the same step on every process); call it every step."""
        if self._multi:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._received.is_set()
