"""Training configs: ml_collections files loaded by path, overridden from the command line, validated once.

An experiment is one file under configs/ whose ``get_config()`` starts from ``default_config()`` and changes
what it needs (the big_vision convention). ``--config.optimizer.lr=1e-4`` style overrides are parsed with the
type of the value they replace; an unknown key or an ill-typed value is an error that names it.
"""
from __future__ import annotations

import ast
import importlib.util
import os
from collections.abc import Sequence

import ml_collections

from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.models.lora import DEFAULT_TARGETS
from vlm2geovec_jax.models.presets import get_preset

TRAINABLE = ("lora", "full", "language")
SCHEDULES = ("linear", "cosine", "constant")
DIRECTIONS = ("q2t", "bidirectional")
DATA_KINDS = ("synthetic", "pipeline")


def default_config() -> ml_collections.ConfigDict:
    """Every key a training config may set, with VLM2Vec's recipe as defaults (paper.md section 3)."""
    c = ml_collections.ConfigDict()
    c.model = get_preset("qwen2vl_2b")
    c.init = ml_collections.ConfigDict(dict(checkpoint="", seed=0))
    c.trainable = "lora"  # lora | full | language (full fine-tuning of the language model, vision frozen)
    c.lora = ml_collections.ConfigDict(dict(rank=8, alpha=64.0, targets=DEFAULT_TARGETS, dora=False))
    # same_task_negatives: a query's in-batch negatives come from its own task only (train/loss.py)
    c.loss = ml_collections.ConfigDict(dict(temperature=0.02, learn_temperature=False, direction="q2t",
                                            same_task_negatives=False))
    c.grad_cache = ml_collections.ConfigDict(dict(num_chunks=1))  # 1: one dense forward/backward
    c.optimizer = ml_collections.ConfigDict(dict(
        lr=5e-5, schedule="linear", warmup_steps=100, end_lr_fraction=0.0, weight_decay=0.0,
        b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0, max_nonfinite_steps=10))
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    c.batch_size = 1024   # global: queries per step over all devices and hosts
    c.num_steps = 2000
    c.data = ml_collections.ConfigDict(dict(
        kind="synthetic",
        # synthetic: learnable token-level pairs (tests, smoke runs)
        num_concepts=256, query_length=12, target_length=8, image_fraction=0.0,
        # pipeline: the grain mixture of inputs/pipeline.py
        pipeline=ml_collections.ConfigDict()))
    c.checkpoint = ml_collections.ConfigDict(dict(every=500, keep=3))
    # held-out InfoNCE and P@1 on fixed batches (train/eval_hook.py); every=0: off. batch_size 0: the training
    # one; temperature 0: loss.temperature. Same split/seed/batches in every run: losses compare across runs.
    c.eval = ml_collections.ConfigDict(dict(every=0, num_batches=4, batch_size=0, split="test", seed=1234,
                                            temperature=0.0))
    c.log_every = 10
    # A jax.profiler trace of steps start_step .. start_step + num_steps - 1 (train/profiling.py); 0 steps: off
    c.profile = ml_collections.ConfigDict(dict(start_step=10, num_steps=0))
    c.peak_flops_per_device = 0.0  # 0: look the device kind up (train/flops.py); set it for unknown devices
    return c


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Runs ``get_config()`` of the file at ``path``, applies ``key.sub=value`` overrides, validates."""
    spec = importlib.util.spec_from_file_location("_vlm2geovec_config", path)
    if spec is None or not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path}: defines no get_config()")
    config = module.get_config()
    for override in overrides:
        apply_override(config, override)
    validate(config)
    return config


def apply_override(config: ml_collections.ConfigDict, override: str) -> None:
    """Sets one ``a.b.c=value`` override, parsing value with the type of the current value."""
    key, sep, text = override.removeprefix("--config.").removeprefix("config.").partition("=")
    if not sep:
        raise ValueError(f"config override {override!r}: expected key=value")
    *parents, leaf = key.split(".")
    node = config
    for i, part in enumerate(parents):
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            raise ValueError(f"config override {override!r}: unknown key {'.'.join(parents[:i + 1])!r}")
        node = node[part]
    if leaf not in node:
        raise ValueError(f"config override {override!r}: unknown key {key!r}; known here: {sorted(node.keys())}")
    node[leaf] = _parse_like(node[leaf], text, key)


def _parse_like(current, text: str, key: str):
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, str):
            return text
        value = ast.literal_eval(text)
        return type(current)(value) if isinstance(current, (tuple, list)) else value
    except (ValueError, SyntaxError):
        raise ValueError(f"config key {key!r}: {text!r} is not a valid {type(current).__name__}") from None


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks keys against default_config() and values against their allowed sets; errors name the key."""
    _check_keys(config, default_config(), "config")
    problems = []

    def one_of(key, value, allowed):
        if value not in allowed:
            problems.append(f"{key}={value!r} not in {allowed}")

    one_of("trainable", config.trainable, TRAINABLE)
    one_of("optimizer.schedule", config.optimizer.schedule, SCHEDULES)
    one_of("loss.direction", config.loss.direction, DIRECTIONS)
    one_of("data.kind", config.data.kind, DATA_KINDS)
    for key in ("batch_size", "num_steps", "grad_cache.num_chunks", "checkpoint.every", "checkpoint.keep",
                "log_every", "lora.rank", "profile.start_step"):
        node = config
        for part in key.split("."):
            node = node[part]
        if not isinstance(node, int) or node < 1:
            problems.append(f"{key}={node!r} must be a positive integer")
    if not isinstance(config.profile.num_steps, int) or config.profile.num_steps < 0:
        problems.append(f"profile.num_steps={config.profile.num_steps!r} must be a non-negative integer")
    if not isinstance(config.eval.every, int) or config.eval.every < 0 or config.eval.num_batches < 1:
        problems.append(f"eval.every={config.eval.every!r} must be >= 0 and eval.num_batches="
                        f"{config.eval.num_batches!r} >= 1")
    if config.batch_size % config.grad_cache.num_chunks:
        problems.append(f"batch_size {config.batch_size} is not divisible by grad_cache.num_chunks "
                        f"{config.grad_cache.num_chunks}")
    if config.loss.temperature <= 0:
        problems.append(f"loss.temperature={config.loss.temperature} must be > 0")
    try:
        ModelConfig.from_dict(config.model.to_dict())
    except (ValueError, TypeError) as e:
        problems.append(f"model: {e}")
    if problems:
        raise ValueError("invalid training config: " + "; ".join(problems))


def _check_keys(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict, where: str) -> None:
    open_sections = {"config.data.pipeline"}  # free-form: validated by the pipeline itself
    for key in config.keys():
        if key not in reference:
            raise ValueError(f"{where}.{key}: unknown key; known: {sorted(reference.keys())}")
        child, ref = config[key], reference[key]
        if (isinstance(child, ml_collections.ConfigDict) and isinstance(ref, ml_collections.ConfigDict)
                and f"{where}.{key}" not in open_sections):
            _check_keys(child, ref, f"{where}.{key}")
