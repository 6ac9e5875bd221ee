"""Study files: which rungs, which budgets, which learning-rate rule, and the runs they expand to.

A study is an ml_collections file under configs/scaling/ whose ``get_config()`` returns::

    name            str
    base            a training config (configs/*.py style): data, loss, mesh, batch size, schedule shape
    rungs           ladder rung names (scaling/ladder.py)
    tokens          preset whose vocabulary the rungs use ("": the rung's own, Qwen2-VL's)
    dtype           compute and storage dtype of every rung (float32 on a CPU, bfloat16 on a pod)
    budgets         kind: steps | examples | flops; amounts: one budget each (FLOPs: steps solved per rung)
    lr              base, base_width, exponent: lr = base * (base_width / width) ** exponent (width-scaled)
    warmup_fraction warmup steps as a fraction of the run's steps
    seeds           one run per seed
    eval            the trainer's eval section (train/eval_hook.py): the same fixed set for every run
    flops           prompt_tokens, image_size: what FLOPs per example are counted for (train/flops.py)
    checkpoint_every
    geoscenes       optional GeoScenes world to build into WORKDIR/data (with the demo tokenizer)

A run is one (rung, budget, seed); its name is stable, so a study resumes by name.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os

import ml_collections

from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.scaling import ladder as ladder_lib
from vlm2geovec_jax.train import flops as flops_lib
from vlm2geovec_jax.train.config import validate

BUDGET_KINDS = ("steps", "examples", "flops")
REQUIRED = ("name", "base", "rungs", "tokens", "dtype", "budgets", "lr", "warmup_fraction", "seeds", "eval", "flops",
            "checkpoint_every")


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    rung: str
    budget: float
    budget_kind: str
    seed: int
    params: int
    non_embedding_params: int
    flops_per_example: float
    config: ml_collections.ConfigDict

    @property
    def steps(self) -> int:
        return self.config.num_steps

    @property
    def examples(self) -> int:
        return self.config.num_steps * self.config.batch_size

    @property
    def flops(self) -> float:
        return self.flops_per_example * self.examples


def load_study(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """Runs ``get_config()`` of the study file and checks that every section is there."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"study file {path} not found")
    spec = importlib.util.spec_from_file_location("_vlm2geovec_study", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path}: defines no get_config()")
    study = module.get_config()
    missing = [k for k in REQUIRED if k not in study]
    if missing:
        raise ValueError(f"{path}: study is missing {missing}; see vlm2geovec_jax/scaling/study.py")
    if study.budgets.kind not in BUDGET_KINDS or not study.budgets.amounts:
        raise ValueError(f"{path}: budgets.kind={study.budgets.kind!r} must be one of {BUDGET_KINDS} with at least "
                         "one value")
    for rung in study.rungs:
        ladder_lib.get_rung(rung)
    return study


def rung_config(study: ml_collections.ConfigDict, rung: str) -> ModelConfig:
    cfg = ladder_lib.get_rung(rung).config
    if study.tokens:
        cfg = ladder_lib.with_tokens(cfg, study.tokens)
    return cfg.replace(dtype=study.dtype, param_dtype=study.dtype)


def _steps(study: ml_collections.ConfigDict, budget: float, flops_per_example: float) -> int:
    batch, kind = study.base.batch_size, study.budgets.kind
    steps = {"steps": budget, "examples": budget / batch, "flops": budget / (flops_per_example * batch)}[kind]
    return max(1, round(steps))


def plan(study: ml_collections.ConfigDict) -> list[Run]:
    """Every (rung, budget, seed) with its full training config, in the order they run (small first)."""
    runs = []
    for rung in study.rungs:
        cfg = rung_config(study, rung)
        per_example = flops_lib.example_train_flops(cfg, study.flops.prompt_tokens, study.flops.image_size)
        for budget in study.budgets.amounts:
            for seed in study.seeds:
                steps = _steps(study, budget, per_example)
                config = copy.deepcopy(study.base)
                config.model = ml_collections.ConfigDict(cfg.to_dict())
                config.num_steps = steps
                config.init.seed = seed
                config.optimizer.lr = study.lr.base * (study.lr.base_width / cfg.hidden_size) ** study.lr.exponent
                config.optimizer.warmup_steps = max(1, round(study.warmup_fraction * steps))
                config.checkpoint.every = min(study.checkpoint_every, steps)
                config.eval = copy.deepcopy(study.eval)
                validate(config)
                runs.append(Run(f"{rung}_{study.budgets.kind}{budget:g}_seed{seed}", rung, float(budget),
                                study.budgets.kind, seed,
                                ladder_lib.count_params(cfg),
                                ladder_lib.count_params(cfg) - ladder_lib.embedding_params(cfg), per_example, config))
    return runs
