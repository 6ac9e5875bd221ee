"""A jax.profiler trace of a window of training steps, for TensorBoard's profile plugin or xprof.

``--config.profile.start_step=S --config.profile.num_steps=N`` traces steps S .. S+N-1 (numbered as in
metrics.jsonl, from 1) into WORKDIR/tensorboard/plugins/profile/<run>/<host>.xplane.pb, beside the scalars, so
``tensorboard --logdir WORKDIR/tensorboard`` shows both. Start after the first steps (compilation is not a step
worth tracing). Every process writes its own host's trace. Each step is marked with a StepTraceAnnotation, so
the profiler's step-time view splits the trace per step.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import ml_collections


class ProfileWindow:
    """Starts the trace before the window's first step and stops it once its last step has run on the device."""

    def __init__(self, config: ml_collections.ConfigDict, log_dir: str | os.PathLike):
        self.first, self.last = config.start_step, config.start_step + config.num_steps - 1
        self.enabled = config.num_steps > 0
        self.log_dir = Path(log_dir)
        self.active = False

    def before(self, step: int) -> None:
        """Called before step ``step`` runs (a resumed run starts the window late, or not at all)."""
        if self.enabled and not self.active and self.first <= step <= self.last:
            jax.profiler.start_trace(str(self.log_dir))
            self.active = True

    def annotate(self, step: int) -> jax.profiler.StepTraceAnnotation:
        """Marks the host work of one step (a no-op outside a trace)."""
        return jax.profiler.StepTraceAnnotation("train", step_num=step)

    def after(self, step: int, outputs: Any) -> None:
        """Called after step ``step`` is dispatched; ends the trace once the window's last step has finished."""
        if self.active and step >= self.last:
            jax.block_until_ready(outputs)  # dispatch is asynchronous: wait for the device work to be in the trace
            self.close()

    def close(self) -> None:
        """Writes the trace if one is open (the run ended or was pre-empted inside the window)."""
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
