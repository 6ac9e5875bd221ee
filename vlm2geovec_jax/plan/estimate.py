"""Roofline estimates of step time and MFU from model FLOPs (train/flops.py) and a chip's published figures.

XLA's cost analysis counts a scanned layer once, so FLOPs are counted from the config. Step time is the larger
of compute time (hardware FLOPs at the bf16 peak of every chip) and weight-read time (every pass over a chunk
reads all weights, all-gathered, at the chip's HBM bandwidth). Activation traffic and the collectives' time on
the interconnect are not modelled: the estimate is a lower bound on step time, an upper bound on MFU.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.plan.shapes import Shapes
from vlm2geovec_jax.plan.topology import Chip
from vlm2geovec_jax.train import flops as flops_lib

POLICIES = ("none", "save_dots", "save_dots_no_batch", "save_attn_out", "full")  # least recomputation first


@dataclasses.dataclass(frozen=True)
class Estimate:
    model_flops: float      # per step, all chips: 3 x forward (what MFU counts)
    hardware_flops: float   # plus GradCache's extra forward and remat's recomputation
    step_s: float
    mfu: float
    bound: str              # "compute" or "HBM bandwidth"


def _rows_patches(shapes: Shapes, cfg: ModelConfig) -> list[int]:
    window = cfg.vision.spatial_merge_size ** 2
    return [shapes.patches] if shapes.patches > window else []


def train_estimate(cfg: ModelConfig, shapes: Shapes, *, chunks: int, policy: str, weight_count: int,
                   chips: int, chip: Chip) -> Estimate:
    """One train step of ``shapes`` (every token and patch counted as real) on ``chips`` chips."""
    rows = shapes.query_rows + shapes.target_rows
    patches = _rows_patches(shapes, cfg)
    forward = flops_lib.train_flops(cfg, shapes.length, patches) / 3
    model = rows * 3 * forward
    extra_forward = forward if chunks > 1 else 0.0  # GradCache embeds every chunk once without gradients first
    hardware = model + rows * (extra_forward + flops_lib.recompute_flops(cfg, policy, shapes.length, patches))
    passes = (2 if chunks > 1 else 1) + 1 + (policy not in ("none", "save_dots"))  # forwards, backward, recompute
    weight_bytes = weight_count * np.dtype(cfg.dtype).itemsize * passes * chunks * 2  # two sides
    return _roofline(model, hardware, weight_bytes, chips, chip)


def eval_estimate(cfg: ModelConfig, shapes: Shapes, *, rows: int, weight_count: int, chip: Chip) -> Estimate:
    """One forward of ``rows`` eval items on one chip."""
    forward = flops_lib.train_flops(cfg, shapes.eval_length, _rows_patches(shapes, cfg)[:1] and
                                    [shapes.eval_patches]) / 3
    flops = rows * forward
    return _roofline(flops, flops, weight_count * np.dtype(cfg.param_dtype).itemsize, 1, chip)


def _roofline(model: float, hardware: float, weight_bytes: float, chips: int, chip: Chip) -> Estimate:
    compute_s = hardware / (chips * chip.peak_bf16_flops)
    memory_s = weight_bytes / chip.hbm_bytes_per_s
    step_s = max(compute_s, memory_s)
    return Estimate(model, hardware, step_s, model / (step_s * chips * chip.peak_bf16_flops),
                    "compute" if compute_s >= memory_s else "HBM bandwidth")
