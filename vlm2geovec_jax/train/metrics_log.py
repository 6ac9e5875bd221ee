"""Training metrics to the workdir: a JSONL log (one object per logged step) and TensorBoard event files.

Only process 0 writes; tensorboardX writes event files without TensorFlow.
"""
from __future__ import annotations

import json
import os
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


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    path = Path(workdir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
