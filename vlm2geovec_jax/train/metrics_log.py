"""Training metrics to the workdir: a JSONL log (one object per logged step) and TensorBoard event files, and the
accounting of each logged window's wall time and work.

Only process 0 writes; tensorboardX writes event files without TensorFlow.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jax


class MetricsLog:
    def __init__(self, workdir: str | os.PathLike):
        self.enabled = jax.process_index() == 0
        self.path = Path(workdir) / "metrics.jsonl"
        self._tb = None
        if self.enabled:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **clean}) + "\n")
        for name, value in clean.items():
            self._tb.add_scalar(name, value, step)
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class Window:
    """One logged window: its wall time split into waiting for data and the step, and the work done in it.

    ``data_wait_s`` is the time spent waiting for the next batch; ``step_s`` the rest of the wall time: global
    arrays, dispatch, the device (dispatch is asynchronous, so device time shows up as the wait for a step's
    results) and logging. Checkpoint saves and evaluations are left out. Each window starts the instant the
    last one was measured, so the windows tile the run's wall time (writing one window's log counts in the
    next). data_wait_s above step_s: the run is input-bound (more ``data.pipeline.worker_count``).
    """

    def __init__(self) -> None:
        self._start_at(time.perf_counter())

    def _start_at(self, start: float) -> None:
        self.start = start
        self.data_wait = self.flops = 0.0
        self.examples = self.tokens = 0

    def add(self, data_wait: float, examples: int, tokens: int, flops: float) -> None:
        self.data_wait += data_wait
        self.examples, self.tokens, self.flops = self.examples + examples, self.tokens + tokens, self.flops + flops

    def exclude(self, seconds: float) -> None:
        """Leaves ``seconds`` (a checkpoint save, an evaluation) out of the window's wall time."""
        self.start += seconds

    def close(self, peak_flops: float, devices: int) -> dict[str, float]:
        """Throughput over the window's wall time, its split, and MFU when the device's peak is known; the next
        window starts now."""
        now = time.perf_counter()
        elapsed = now - self.start
        out = dict(examples_per_s=self.examples / elapsed, tokens_per_s=self.tokens / elapsed,
                   data_wait_s=self.data_wait, step_s=elapsed - self.data_wait)
        if peak_flops:
            out["mfu"] = self.flops / elapsed / (peak_flops * devices)
        self._start_at(now)
        return out


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    path = Path(workdir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
