"""Profiling and step-time accounting: ``profile.start_step`` / ``num_steps`` write a jax.profiler trace of exactly
those steps that jax's own reader (the one xprof and TensorBoard use) opens, and metrics.jsonl splits each logged
window into time waiting for data and time in the step, so an input-bound run shows as one."""
from __future__ import annotations

import time

import jax
import pytest

from vlm2geovec_jax.train import data as data_lib
from vlm2geovec_jax.train import trainer
from vlm2geovec_jax.train.config import load_config
from vlm2geovec_jax.train.metrics_log import read_metrics

TINY = "configs/tiny.py"
SMALL = ["model.text.num_layers=1", "model.vision.depth=1", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"]
DELAY = 0.3  # seconds the slow source sleeps per batch


def trace_steps(path) -> list[int]:
    """The step numbers of the trainer's step annotations in an .xplane.pb file."""
    data = jax.profiler.ProfileData.from_file(str(path))
    return sorted(dict(e.stats)["step_num"] for plane in data.planes for line in plane.lines for e in line.events
                  if e.name == "train")


def test_profile_window_writes_a_trace_of_exactly_those_steps(tmp_path):
    config = load_config(TINY, [*SMALL, "num_steps=8", "profile.start_step=2", "profile.num_steps=2"])
    trainer.train(config, tmp_path, progress=False)
    traces = list((tmp_path / "tensorboard" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0, traces
    assert trace_steps(traces[0]) == [2, 3]


def test_profile_settings_are_validated():
    with pytest.raises(ValueError, match=r"profile.num_steps=-1 must be a non-negative integer"):
        load_config(TINY, ["profile.num_steps=-1"])
    with pytest.raises(ValueError, match=r"profile.start_step=0 must be a positive integer"):
        load_config(TINY, ["profile.start_step=0"])


class SlowSource:
    """A source that takes ``DELAY`` seconds per batch: an input-bound run."""

    def __init__(self, source):
        self.source = source

    def __iter__(self):
        for batch in self.source:
            time.sleep(DELAY)
            yield batch

    def get_state(self) -> dict:
        return self.source.get_state()

    def set_state(self, state: dict) -> None:
        self.source.set_state(state)


def test_windows_split_into_data_wait_and_step_time_adding_up_to_the_wall_time(tmp_path, monkeypatch):
    make_source = data_lib.make_source
    monkeypatch.setattr(data_lib, "make_source", lambda *a, **k: SlowSource(make_source(*a, **k)))
    config = load_config(TINY, [*SMALL, "num_steps=8", "log_every=2", "checkpoint.every=100"])
    assert config.profile.num_steps == 0  # profiling is off by default
    ends = {}  # step -> when its iteration ended (after logging), measured outside the trainer
    hook = lambda step, state: ends.setdefault(step, time.perf_counter())
    trainer.train(config, tmp_path, progress=False, hooks=[hook])

    log = read_metrics(tmp_path)
    assert [m["step"] for m in log] == [2, 4, 6, 8]
    for m in log:
        assert m["data_wait_s"] >= 2 * DELAY and m["step_s"] >= 0, m
    assert all(m["data_wait_s"] > m["step_s"] for m in log[1:]), log  # input-bound, and the split shows it
    for m in log[1:-1]:  # whole windows between two hooks (the first holds compilation, the last a checkpoint)
        wall = ends[m["step"]] - ends[m["step"] - 2]
        assert m["data_wait_s"] + m["step_s"] == pytest.approx(wall, rel=0.1, abs=0.1), (m, wall)  # a shared CPU adds jitter
    assert not (tmp_path / "tensorboard" / "plugins").exists()  # no trace unless asked for
