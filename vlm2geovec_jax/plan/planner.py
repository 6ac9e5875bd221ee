"""``vlm2geovec plan``: compile the exact train and eval steps of a config for a topology, and report per chip.

The result is one dict (what ``--json`` writes); report.py prints it. Sizes are bytes, times seconds.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.plan import estimate, fit as fit_lib, steps
from vlm2geovec_jax.plan.memory import Measure, compile_step
from vlm2geovec_jax.plan.shapes import Shapes, config_shapes
from vlm2geovec_jax.plan.topology import Topology, usable_hbm_bytes
from vlm2geovec_jax.train.config import apply_override, validate

GIB = 2 ** 30


def describer(cfg: ModelConfig, shapes: Shapes, backward: bool = True) -> Callable[[str, str], str]:
    """Names a compiled buffer by its shape: attention logits, layers' saved activations (only a step with a
    backward pass saves them: [layers, ...] stacks), or its op."""
    text_lengths = {shapes.length, shapes.eval_length}
    patches = {shapes.patches, shapes.eval_patches} - {cfg.vision.spatial_merge_size ** 2}

    def describe(shape: str, op_name: str) -> str:
        dims = [int(d) for d in re.findall(r"\d+", shape.partition("[")[2])]
        if len(dims) >= 2 and shape.startswith("f32") and dims[-1] in patches and dims[-2] == dims[-1]:
            return "vision attention logits (float32)"
        if len(dims) >= 2 and shape.startswith("f32") and dims[-1] in text_lengths and dims[-2] % dims[-1] == 0:
            return "text attention logits (float32)"
        if backward and len(dims) >= 3 and dims[0] == cfg.text.num_layers and text_lengths & set(dims[1:]):
            return f"saved activations of the {dims[0]} text layers"
        if backward and len(dims) >= 3 and dims[0] == cfg.vision.depth and patches & set(dims[1:]):
            return f"saved activations of the {dims[0]} vision layers"
        if op_name and not op_name.startswith("jit("):
            return f"a copy of argument {op_name.removesuffix('.value')}"
        where = [p for p in op_name.split("/") if p and not p.startswith("jit(")]
        return "/".join(where[-2:]) or "temporary"
    return describe


def _with(config: ml_collections.ConfigDict, **changes) -> ml_collections.ConfigDict:
    config = copy.deepcopy(config)
    for key, value in changes.items():
        apply_override(config, f"{key}={value}")
    validate(config)
    return config


def _weight_count(step: steps.Step) -> int:
    params, _, frozen = step.args[:3]
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves((params, frozen))))


def measure_train(config, topology: Topology, shapes: Shapes) -> tuple[Measure, int]:
    step = steps.train_step(config, topology.devices, shapes)
    cfg = ModelConfig.from_dict(config.model.to_dict())
    return compile_step(step, describer(cfg, shapes)), _weight_count(step)


def measure_eval(config, topology: Topology, shapes: Shapes, rows: int) -> Measure:
    cfg = ModelConfig.from_dict(config.model.to_dict())
    return compile_step(steps.eval_step(config, topology.devices[0], shapes, rows),
                        describer(cfg, shapes, backward=False))


def _train_section(config, shapes: Shapes, m: Measure | None, weights: int, topology: Topology) -> dict:
    cfg = ModelConfig.from_dict(config.model.to_dict())
    chunks, policy = config.grad_cache.num_chunks, cfg.remat_policy
    est = estimate.train_estimate(cfg, shapes, chunks=chunks, policy=policy, weight_count=weights,
                                  chips=topology.num_chips, chip=topology.chip)
    cheapest = estimate.train_estimate(cfg, shapes, chunks=chunks, policy="none", weight_count=weights,
                                       chips=topology.num_chips, chip=topology.chip)
    out = dict(grad_cache_chunks=chunks, remat_policy=policy, step_flops=est.model_flops,
               hardware_flops=est.hardware_flops, recompute_flops_vs_none=est.hardware_flops - cheapest.hardware_flops,
               est_step_s=est.step_s, est_mfu=est.mfu, est_bound=est.bound)
    if m is not None:
        out.update(_memory(m))
    return out


def _memory(m: Measure) -> dict:
    return dict(fits=m.compiled, hbm_per_chip_gib=m.total / GIB, breakdown={k: v / GIB for k, v in m.breakdown.items()},
                largest_buffers=[{**b, "gib": b["bytes"] / GIB} for b in m.largest], collectives=m.collectives,
                compile_s=m.compile_s, compiler_error=m.error)


def make_plan(config: ml_collections.ConfigDict, topology: Topology, *, eval_batch_size: int = 32,
              fit: bool = False, headroom: float = 0.1, with_eval: bool = True,
              log: Callable[[str], None] = print) -> dict:
    """The plan of ``config`` on ``topology`` (module doc); with ``fit``, of the configuration --fit chose."""
    shapes = config_shapes(config, eval_batch_size)
    capacity = usable_hbm_bytes(topology)
    plan = dict(topology=topology.name, chips=topology.num_chips, device_kind=topology.device_kind,
                hbm_capacity_gib=capacity / GIB, published_hbm_gib=topology.chip.hbm_bytes / GIB,
                peak_bf16_tflops=topology.chip.peak_bf16_flops / 1e12,
                hbm_tb_per_s=topology.chip.hbm_bytes_per_s / 1e12, chip_source=topology.chip.source,
                headroom=headroom, assumptions=shapes.describe(), compiled=topology.is_tpu)
    if not topology.is_tpu:
        plan["train"] = _train_section(config, shapes, None, _count_weights(config), topology)
        plan["assumptions"].append(f"{topology.chip.name}: no compile without the GPU; FLOPs and the roofline "
                                   "estimate only, memory not checked")
        plan.update(plan["train"], fits=None)
        return plan
    limit = int(capacity * (1 - headroom)) if fit else capacity
    if fit:
        config, m, weight_count = _fit_train(config, topology, shapes, limit, plan, log)
        compile_s = sum(t["compile_s"] for t in plan["fit_trials"])
    else:
        log(f"compiling the train step for {topology.name} ...")
        m, weight_count = measure_train(config, topology, shapes)
        compile_s = m.compile_s
    plan["train"] = _train_section(config, shapes, m, weight_count, topology)
    plan["train"]["fits"] = m.compiled and m.total <= limit
    if with_eval:
        plan["eval"] = _eval_section(config, topology, shapes, eval_batch_size, limit, fit, log)
    plan.update({k: plan["train"][k] for k in ("fits", "hbm_per_chip_gib", "breakdown", "largest_buffers",
                                                 "grad_cache_chunks", "remat_policy", "step_flops", "est_step_s",
                                                 "est_mfu", "collectives")})
    plan["compile_s"] = compile_s + plan.get("eval", {}).get("compile_s", 0.0)
    return plan


def _fit_train(config, topology: Topology, shapes: Shapes, limit: int, plan: dict, log):
    """--fit for the train step: (the chosen config, its measure, weight count); trials and overrides go in
    ``plan``. When nothing fits, the last trial (most chunks, most recomputation) is reported."""
    log(f"fitting the train step into {limit / GIB:.2f} GiB a chip ({plan['headroom']:.0%} headroom):")
    shards = int(np.prod(_mesh_sizes(config, topology)[:2]))  # (data, fsdp): the batch axes
    counts = fit_lib.chunk_counts((shapes.query_rows, shapes.target_rows), shards)
    weights = [0]

    def measure(chunks: int, policy: str) -> Measure:
        m, weights[0] = measure_train(_with(config, **{"grad_cache.num_chunks": chunks,
                                                       "model.remat_policy": policy}), topology, shapes)
        return m
    chosen, trials = fit_lib.fit_train(measure, counts, limit, log)
    plan["fit_trials"] = [dict(grad_cache_chunks=c, remat_policy=p, hbm_per_chip_gib=m.total / GIB,
                               fits=m.compiled and m.total <= limit, compile_s=m.compile_s) for c, p, m in trials]
    chunks, policy, m = chosen if chosen is not None else trials[-1]
    if chosen is not None:
        plan["overrides"] = [f"--config.grad_cache.num_chunks={chunks}", f"--config.model.remat_policy={policy}"]
    return _with(config, **{"grad_cache.num_chunks": chunks, "model.remat_policy": policy}), m, weights[0]


def _eval_section(config, topology: Topology, shapes: Shapes, rows: int, limit: int, fit: bool, log) -> dict:
    if fit:
        log("fitting the eval batch (one chip):")
        rows, m = fit_lib.fit_eval(lambda r: measure_eval(config, topology, shapes, r), rows, limit, log=log)
        if m is None:
            rows, m = 1, measure_eval(config, topology, shapes, 1)
    else:
        log(f"compiling the eval embed step ({rows} items on one chip) ...")
        m = measure_eval(config, topology, shapes, rows)
    cfg = ModelConfig.from_dict(config.model.to_dict())
    est = estimate.eval_estimate(cfg, shapes, rows=rows, weight_count=_count_weights(config, merged=True),
                                 chip=topology.chip)
    return dict(batch_size=rows, **_memory(m), step_flops=est.model_flops, est_step_s=est.step_s,
                est_items_per_s=rows / est.step_s, est_bound=est.bound)


def _mesh_sizes(config, topology: Topology) -> tuple[int, ...]:
    from vlm2geovec_jax.sharding import make_mesh
    return tuple(make_mesh(config.mesh.to_dict(), devices=list(topology.devices)).devices.shape)


def _count_weights(config, merged: bool = False) -> int:
    """Parameters of the encoder (LoRA adapters included unless ``merged``), counted from abstract shapes."""
    from flax import nnx
    from vlm2geovec_jax.models.encoder import Encoder
    from vlm2geovec_jax.train.trainer import init_model
    cfg = ModelConfig.from_dict(config.model.to_dict())
    model = nnx.eval_shape(lambda: Encoder(cfg, rngs=nnx.Rngs(0)) if merged else init_model(config))
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
