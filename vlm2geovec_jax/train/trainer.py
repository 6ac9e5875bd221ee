"""The contrastive trainer: ``vlm2geovec train --config configs/<name>.py --workdir DIR``.

Sections, in the order they run: mesh, model, trainable split, optimizer, data, checkpoint and resume,
train step, loop. The step is a pure function of (trainable params, optimizer state, frozen params, batch),
jitted with explicit shardings and donated state; the contrastive loss sees the GLOBAL batch (see
train/loss.py), and GradCache (train/grad_cache.py) gives the exact large-batch gradient in chunks. The loop
stops on SIGTERM with a checkpoint (train/preemption.py) and can trace a window of steps (train/profiling.py).
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from vlm2geovec_jax import sharding as shard_lib
from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.models.encoder import Encoder
from vlm2geovec_jax.models.lora import LoRAParam, LoraConfig, apply_lora, merge_lora
from vlm2geovec_jax.train import data as data_lib
from vlm2geovec_jax.train import eval_hook
from vlm2geovec_jax.train import flops as flops_lib
from vlm2geovec_jax.train.grad_cache import grad_cache_value_and_grad
from vlm2geovec_jax.train.loss import content_id_words, info_nce, query_task_ids
from vlm2geovec_jax.train.metrics_log import MetricsLog, Window
from vlm2geovec_jax.train.optimizer import make_optimizer, nonfinite_count, total_nonfinite
from vlm2geovec_jax.train.preemption import PreemptionNotice, Preempted
from vlm2geovec_jax.train.profiling import ProfileWindow
from vlm2geovec_jax.weights import checkpoint as model_ckpt

BATCH_AXES = ("data", "fsdp")
TRAIN_KEYS = ("query", "target", "target_ids", "query_valid", "target_valid")  # what a step reads of a batch
Hook = Callable[[int, "TrainState"], None]


@dataclasses.dataclass
class TrainState:
    """Everything a step changes (params, opt_state) and what it reads (frozen), plus the graph to merge."""
    graphdef: Any
    params: dict            # {"model": trainable nnx.State, ["log_temperature": scalar]}
    frozen: nnx.State
    opt_state: Any
    step: int = 0


# ---- model and trainable split -----------------------------------------------------------------------------


def trainable_filter(kind: str):
    return {"lora": LoRAParam, "full": nnx.Param,
            "language": nnx.All(nnx.Param, nnx.PathContains("language"))}[kind]


def init_model(config: ml_collections.ConfigDict) -> Encoder:
    """A freshly initialised encoder (with LoRA adapters when trainable == "lora"); nnx.eval_shape it for shapes."""
    model = Encoder(ModelConfig.from_dict(config.model.to_dict()), rngs=nnx.Rngs(config.init.seed))
    if config.trainable == "lora":
        apply_lora(model, LoraConfig(**config.lora.to_dict()), rngs=nnx.Rngs(config.init.seed + 1))
    return model


def build_model(config: ml_collections.ConfigDict, mesh) -> Encoder:
    """The encoder on the mesh: initialised sharded (never whole on one device) or loaded from a checkpoint."""
    cfg = ModelConfig.from_dict(config.model.to_dict())
    lora = LoraConfig(**config.lora.to_dict()) if config.trainable == "lora" else None
    init = lambda: init_model(config)

    if not config.init.checkpoint:
        graphdef, abstract = nnx.split(nnx.eval_shape(init))
        state = jax.jit(lambda: nnx.state(init()), out_shardings=shard_lib.state_shardings(abstract, mesh))()
        return nnx.merge(graphdef, state)
    base = nnx.state(model_ckpt.abstract_model(cfg))
    model = model_ckpt.load_model(config.init.checkpoint, shardings=shard_lib.state_shardings(base, mesh),
                                  dtype=cfg.dtype, remat_policy=cfg.remat_policy, attention=cfg.attention)
    if model.cfg.param_dtype != cfg.param_dtype or model.cfg.text != cfg.text or model.cfg.vision != cfg.vision:
        raise ValueError(f"init.checkpoint {config.init.checkpoint}: its model config does not match config.model")
    if lora is not None:
        apply_lora(model, lora, rngs=nnx.Rngs(config.init.seed + 1))
        lora_state = nnx.state(model, LoRAParam)
        nnx.update(model, jax.device_put(lora_state, shard_lib.state_shardings(lora_state, mesh)))
    return model


def split_trainable(model: Encoder, config: ml_collections.ConfigDict) -> tuple[Any, dict, nnx.State]:
    graphdef, trainable, frozen = nnx.split(model, trainable_filter(config.trainable), ...)
    # Trainable weights are kept in float32 (the master copy) whatever param_dtype the frozen base uses;
    # layers cast weights to the compute dtype where they are used.
    trainable = jax.tree.map(_as_float32, trainable)
    params = {"model": trainable}
    if config.loss.learn_temperature:
        params["log_temperature"] = jnp.log(jnp.asarray(config.loss.temperature, jnp.float32))
    return graphdef, params, frozen


def _as_float32(x):
    """float32 copy of an array, or of an abstract one (``vlm2geovec plan`` splits an nnx.eval_shape model)."""
    if isinstance(x, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=x.sharding)
    return x.astype(jnp.float32)


# ---- the step ----------------------------------------------------------------------------------------------


def make_grad_fn(graphdef, config: ml_collections.ConfigDict, mesh):
    """(params, frozen, batch) -> (loss, metrics, grads): dense, or GradCache with the configured chunks."""
    loss_cfg, chunks = config.loss, config.grad_cache.num_chunks

    def grad_fn(params, frozen, batch):
        def embed(p, inputs):
            return nnx.merge(graphdef, p["model"], frozen)(inputs)

        def loss_fn(p, q, t):
            return info_nce(q, t, temperature=loss_cfg.temperature, log_temperature=p.get("log_temperature"),
                            direction=loss_cfg.direction, query_valid=batch["query_valid"],
                            target_valid=batch["target_valid"], target_ids=batch["target_ids"],
                            query_tasks=batch["query_tasks"] if loss_cfg.same_task_negatives else None)

        if chunks > 1:
            return grad_cache_value_and_grad(embed, loss_fn, params, batch["query"], batch["target"], chunks,
                                             mesh=mesh, batch_axis=BATCH_AXES)
        dense = lambda p: loss_fn(p, embed(p, batch["query"]), embed(p, batch["target"]))
        (loss, metrics), grads = jax.value_and_grad(dense, has_aux=True)(params)
        return loss, metrics, grads

    return grad_fn


def make_train_step(grad_fn, tx: optax.GradientTransformation, schedule: optax.Schedule):
    """One optimizer step; non-finite gradients are skipped (and counted) by the optimizer."""

    def step_fn(params, opt_state, frozen, batch, step):
        loss, metrics, grads = grad_fn(params, frozen, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads),
                   "param_norm": optax.tree.norm(params), "update_norm": optax.tree.norm(updates),
                   "learning_rate": schedule(step), "nonfinite_in_a_row": nonfinite_count(opt_state),
                   "nonfinite_total": total_nonfinite(opt_state)}
        return params, opt_state, metrics

    return step_fn


def jit_train_step(graphdef, config: ml_collections.ConfigDict, mesh, tx: optax.GradientTransformation,
                   schedule: optax.Schedule):
    """The jitted step ``(params, opt_state, frozen, batch, step) -> (params, opt_state, metrics)``, params and
    optimizer state donated. ``train`` runs it; ``vlm2geovec plan`` compiles it for a TPU topology."""
    return jax.jit(make_train_step(make_grad_fn(graphdef, config, mesh), tx, schedule), donate_argnums=(0, 1))


def batch_shardings(batch: dict, mesh) -> dict:
    """Every leaf sharded on its leading (batch) axis over (data, fsdp)."""
    return jax.tree.map(lambda _: NamedSharding(mesh, P(BATCH_AXES)), batch)


def to_global(batch: dict, mesh) -> dict:
    """This process's rows -> global arrays (jax.make_array_from_process_local_data; multi-host safe)."""
    tasks = query_task_ids(batch.get("tasks"), len(batch["query_valid"]))
    batch = {key: batch[key] for key in TRAIN_KEYS}
    batch["target_ids"] = content_id_words(batch["target_ids"])
    batch["query_tasks"] = tasks
    return jax.tree.map(lambda x, s: jax.make_array_from_process_local_data(s, np.asarray(x)), batch,
                        batch_shardings(batch, mesh))


# ---- checkpoints -------------------------------------------------------------------------------------------


def checkpoint_manager(workdir: Path, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=config.checkpoint.keep, create=True,
                                           enable_async_checkpointing=True)
    return ocp.CheckpointManager(workdir.absolute() / "checkpoints", options=options)


def save(manager: ocp.CheckpointManager, state: TrainState, source: data_lib.TrainSource) -> None:
    manager.save(state.step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params), opt_state=ocp.args.StandardSave(state.opt_state),
        meta=ocp.args.JsonSave({"step": state.step, "data": source.get_state()})))


def restore(manager: ocp.CheckpointManager, state: TrainState, source: data_lib.TrainSource) -> TrainState:
    """Restores the latest complete checkpoint onto the current state's shardings (a no-op if none)."""
    step = manager.latest_step()
    if step is None:
        return state
    abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
    restored = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract(state.params)),
        opt_state=ocp.args.StandardRestore(abstract(state.opt_state)), meta=ocp.args.JsonRestore()))
    source.set_state(restored["meta"]["data"])
    return dataclasses.replace(state, params=restored["params"], opt_state=restored["opt_state"],
                               step=int(restored["meta"]["step"]))


def export_model(state: TrainState, workdir: Path, config: ml_collections.ConfigDict) -> Path:
    """The run's model artifact: ``model/`` (LoRA merged, with tokenizer and processing) and, for LoRA runs,
    ``adapter/`` in PEFT's format naming its base (``base/`` too when the base came from no transformers
    directory)."""
    tokenizer_dir, processing = data_lib.artifact_parts(config)
    # Fresh variables (tree.map rebuilds them): merging LoRA must not touch the training state.
    model = nnx.merge(state.graphdef, jax.tree.map(lambda x: x, state.params["model"]),
                      jax.tree.map(lambda x: x, state.frozen))
    if config.trainable == "lora":
        export_lora(model, workdir, config, tokenizer_dir)
    merge_lora(model)
    dtype = jnp.dtype(model.cfg.param_dtype)  # float32 master weights back to the model's storage dtype
    nnx.update(model, jax.tree.map(lambda x: x.astype(dtype), nnx.state(model, nnx.Param)))
    return model_ckpt.save_model(workdir / "model", model, assets_from=tokenizer_dir, processing=processing,
                                 overwrite=True)


def export_lora(model: Encoder, workdir: Path, config: ml_collections.ConfigDict, tokenizer_dir: Path | None
                ) -> Path:
    """``workdir/adapter`` for PEFT; its base is the transformers directory init.checkpoint was imported from,
    else ``workdir/base`` (the frozen base weights, exported here)."""
    from vlm2geovec_jax.weights.convert import export_hf  # noqa: PLC0415
    from vlm2geovec_jax.weights.peft import export_adapter  # noqa: PLC0415

    init = config.init.checkpoint
    base = model_ckpt.read_meta(init).get("source") if init else None
    if base is None and jax.process_count() > 1:
        base = "(base not exported: a multi-process run from random weights; export it with export-hf)"
    elif base is None:
        base = str(export_hf(model, workdir / "base", assets_from=tokenizer_dir, overwrite=True, progress=False))
    return export_adapter(model, LoraConfig(**config.lora.to_dict()), workdir / "adapter", base=base)


# ---- the loop ----------------------------------------------------------------------------------------------


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *, hooks: Sequence[Hook] = (),
          progress: bool = True) -> TrainState:
    """Trains to ``config.num_steps``, resuming from ``workdir`` if it holds checkpoints.

    On SIGTERM it finishes the step in flight, saves a checkpoint and raises ``Preempted`` (train/preemption.py).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = shard_lib.make_mesh(config.mesh.to_dict())
    with jax.set_mesh(mesh), PreemptionNotice() as notice:
        model = build_model(config, mesh)
        graphdef, params, frozen = split_trainable(model, config)
        del model
        tx, schedule = make_optimizer(config.optimizer, config.num_steps)
        opt_state = jax.jit(tx.init)(params)
        state = TrainState(graphdef, params, frozen, opt_state)

        cfg = ModelConfig.from_dict(config.model.to_dict())  # build_model checked a loaded model against it
        source = data_lib.make_source(cfg, config, process_index=jax.process_index(),
                                      process_count=jax.process_count())
        manager = checkpoint_manager(workdir, config)
        state = restore(manager, state, source)

        step_fn = jit_train_step(graphdef, config, mesh, tx, schedule)
        log = MetricsLog(workdir)
        evaluator = eval_hook.from_config(config, cfg, graphdef, mesh, to_global)
        peak = flops_lib.peak_flops_per_device(override=config.peak_flops_per_device)
        profile = ProfileWindow(config.profile, workdir / "tensorboard")
        batches = iter(source)
        bar = tqdm(total=config.num_steps, initial=state.step, desc="train", disable=not progress)
        window = Window()
        previous = None  # the last step's metrics: read after the next step is dispatched (no per-step sync)
        while state.step < config.num_steps:
            profile.before(state.step + 1)
            fetch = time.perf_counter()
            host = next(batches)
            begin = time.perf_counter()
            with profile.annotate(state.step + 1):
                params, opt_state, metrics = step_fn(state.params, state.opt_state, state.frozen,
                                                     to_global(host, mesh), jnp.int32(state.step))
            state = dataclasses.replace(state, params=params, opt_state=opt_state, step=state.step + 1)
            _check_finite(previous, state.step - 1, config.optimizer.max_nonfinite_steps)
            previous = metrics
            window.add(begin - fetch, *_work(cfg, host))
            profile.after(state.step, state.params)
            stop = notice.reached(state.step)  # a pre-emption notice: save this step and stop (all processes)
            if state.step % config.log_every == 0 or state.step == config.num_steps or stop:
                scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
                scalars.update(window.close(peak, jax.device_count()))
                log.write(state.step, scalars)
                bar.set_postfix(loss=f"{scalars['loss']:.4f}", acc=f"{scalars['accuracy']:.3f}")
            if evaluator is not None and evaluator.due(state.step):
                pause = time.perf_counter()
                log.write(state.step, evaluator(state.params, state.frozen))
                window.exclude(time.perf_counter() - pause)  # evaluating is not training throughput
            if state.step % config.checkpoint.every == 0 or state.step == config.num_steps or stop:
                pause = time.perf_counter()
                save(manager, state, source)
                window.exclude(time.perf_counter() - pause)  # saving is not training throughput
            bar.update(1)
            if stop:
                break  # no hooks: an evaluation, say, would delay the exit past the notice's grace period
            for hook in hooks:
                hook(state.step, state)
        profile.close()
        _check_finite(previous, state.step, config.optimizer.max_nonfinite_steps)
        bar.close()
        manager.wait_until_finished()
        log.close()
        if state.step < config.num_steps:
            raise Preempted(state.step, str(workdir / "checkpoints"))
        final = export_model(state, workdir, config)
    adapter = f", PEFT adapter in {workdir / 'adapter'}" if config.trainable == "lora" else ""
    print(f"trained {state.step} steps; checkpoints in {workdir / 'checkpoints'}, metrics in "
          f"{workdir / 'metrics.jsonl'}, model (LoRA merged) in {final}{adapter}")
    return state


def _check_finite(metrics: dict | None, step: int, limit: int) -> None:
    """Stops the run once ``limit`` steps in a row had a non-finite loss or gradient (the optimizer skipped them)."""
    if metrics is not None and int(metrics["nonfinite_in_a_row"]) >= limit:
        raise FloatingPointError(f"step {step}: {limit} steps in a row had a non-finite loss or gradient; stopping")


def _work(cfg: ModelConfig, host: dict) -> tuple[int, int, float]:
    """(examples, real tokens, model FLOPs) of this process's rows, scaled to all processes."""
    tokens, flops = 0, 0.0
    for side in ("query", "target"):
        inputs = host[side]
        lengths = np.asarray(inputs.attention_mask).sum(-1)
        patches = np.asarray(inputs.vision_frame_ids > 0).sum(-1)  # [rows, slots]
        tokens += int(lengths.sum())
        flops += sum(flops_lib.train_flops(cfg, int(n), [int(p) for p in row if p])
                     for n, row in zip(lengths, patches))
    scale = jax.process_count()
    return int(np.sum(host["query_valid"])) * scale, tokens * scale, flops * scale
