"""Train-step throughput and MFU, against a PyTorch training step on the same inputs.

    python -m vlm2geovec_jax.bench.train [--presets tiny,small_100m] [--batch 16] [--steps 5] [--length 32]
                                         [--dtype float32|bfloat16]

Both sides: full fine-tuning, the same InfoNCE (temperature 0.02, last-token L2 embeddings, in-batch
negatives) and AdamW, on the same synthetic token pairs of ``--length`` tokens. Ours is the trainer's jitted
step (one device; ``model.attention=auto``, so cuDNN on a GPU in bf16); PyTorch is transformers' Qwen2-VL in
eager mode, on the GPU when there is one. ``--dtype bfloat16`` is mixed precision on both sides: float32
weights and optimizer, bf16 compute (``model.dtype`` for ours, autocast for PyTorch). MFU counts model FLOPs
(train/flops.py) against the device's bf16 peak where it is known; on a CPU the peak is unknown, so the
script measures this machine's sustained float32 matmul FLOP/s with XLA and reports MFU against that
(labelled as such). Needs the ``bench`` extra.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from vlm2geovec_jax import sharding
from vlm2geovec_jax.inputs.tokenizer import build_demo_tokenizer
from vlm2geovec_jax.models.presets import get_preset, model_config
from vlm2geovec_jax.train import data as data_lib
from vlm2geovec_jax.train import flops as flops_lib
from vlm2geovec_jax.train import trainer
from vlm2geovec_jax.train.config import default_config
from vlm2geovec_jax.train.optimizer import make_optimizer
from vlm2geovec_jax.weights.convert import import_hf


def _config(preset: str, batch: int, query_length: int, target_length: int, dtype: str = "float32"):
    c = default_config()
    c.model = get_preset(preset)
    c.model.dtype, c.model.param_dtype = dtype, "float32"
    c.trainable = "full"
    c.batch_size = batch
    c.mesh.data = 1
    c.optimizer.warmup_steps = 0
    c.optimizer.schedule = "constant"
    c.optimizer.lr = 1e-5
    c.data.query_length, c.data.target_length = query_length, target_length
    return c


def measured_matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Sustained float32 matmul FLOP/s of XLA on the default device (a stand-in for an unknown peak)."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        f(a).block_until_ready()
    return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def jax_step_seconds(config, steps: int) -> tuple[float, list[float], dict]:
    mesh = sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    with jax.set_mesh(mesh):
        model = trainer.build_model(config, mesh)
        graphdef, params, frozen = trainer.split_trainable(model, config)
        tx, schedule = make_optimizer(config.optimizer, config.num_steps)
        opt_state = jax.jit(tx.init)(params)
        step_fn = jax.jit(trainer.make_train_step(trainer.make_grad_fn(graphdef, config, mesh), tx, schedule),
                          donate_argnums=(0, 1))
        source = data_lib.make_source(model.cfg, config, process_index=0, process_count=1)
        host = [source.batch(i) for i in range(steps + 1)]
        batches = [trainer.to_global(b, mesh) for b in host]
        losses = []
        params, opt_state, metrics = step_fn(params, opt_state, frozen, batches[0], jnp.int32(0))  # compile
        jax.block_until_ready(params)
        start = time.perf_counter()
        for i in range(1, steps + 1):
            params, opt_state, metrics = step_fn(params, opt_state, frozen, batches[i], jnp.int32(i))
            losses.append(metrics["loss"])
        jax.block_until_ready(params)
        return (time.perf_counter() - start) / steps, [float(x) for x in losses], host[0]


def torch_model(config):
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    cfg = model_config(config.model.to_dict())
    return Qwen2VLForConditionalGeneration(Qwen2VLConfig(**cfg.to_hf(torch_dtype="float32")))


def torch_step_seconds(model, config, host_batches: list[dict], steps: int) -> tuple[float, list[float]]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    body = model.to(device).train().model
    autocast = torch.autocast(device, torch.bfloat16, enabled=config.model.dtype == "bfloat16")
    opt = torch.optim.AdamW([p for p in body.parameters()], lr=config.optimizer.lr, betas=(0.9, 0.999),
                            eps=1e-8, weight_decay=0.0)
    temperature = config.loss.temperature

    def embed(inputs):
        ids = torch.as_tensor(np.asarray(inputs.input_ids), dtype=torch.long, device=device)
        mask = torch.as_tensor(np.asarray(inputs.attention_mask), dtype=torch.long, device=device)
        with autocast:
            hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
        last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)
        return torch.nn.functional.normalize(hidden[torch.arange(len(last)), last].float(), dim=-1)

    def step(batch):
        q, t = embed(batch["query"]), embed(batch["target"])
        logits = q @ t.T / temperature
        ids = torch.as_tensor(batch["target_ids"], device=device)
        same = (ids[:, None] == ids[None, :]) & ~torch.eye(len(ids), dtype=torch.bool, device=device)
        loss = torch.nn.functional.cross_entropy(logits.masked_fill(same, torch.finfo(logits.dtype).min),
                                                 torch.arange(len(q), device=device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(body.parameters(), config.optimizer.grad_clip)
        opt.step()
        return loss.detach()

    step(host_batches[0])  # warm-up
    start = time.perf_counter()
    losses = [step(host_batches[i % len(host_batches)]) for i in range(1, steps + 1)]
    losses = [float(x) for x in losses]  # waits for the device, like jax.block_until_ready
    return (time.perf_counter() - start) / steps, losses


def bench(preset: str, batch: int, steps: int, peak: float, peak_label: str, length: int = 32,
          dtype: str = "float32") -> dict:
    config = _config(preset, batch, query_length=length, target_length=length, dtype=dtype)
    hf = torch_model(config)
    with tempfile.TemporaryDirectory() as tmp:  # the same weights on both sides
        hf.save_pretrained(f"{tmp}/hf")
        build_demo_tokenizer(f"{tmp}/hf")  # a model checkpoint carries a tokenizer; synthetic pairs use none
        config.init.checkpoint = str(import_hf(f"{tmp}/hf", f"{tmp}/ckpt", progress=False))
        jax_s, jax_losses, first = jax_step_seconds(config, steps)
    source = data_lib.make_source(model_config(config.model.to_dict()), config, process_index=0, process_count=1)
    torch_s, torch_losses = torch_step_seconds(hf, config, [source.batch(i) for i in range(steps + 1)], steps)
    cfg = model_config(config.model.to_dict())
    step_flops = sum(flops_lib.train_flops(cfg, int(n)) for side in ("query", "target")
                     for n in np.asarray(first[side].attention_mask).sum(-1))
    row = dict(preset=preset, batch=batch, jax_ex_per_s=batch / jax_s, torch_ex_per_s=batch / torch_s,
               ratio=torch_s / jax_s, jax_mfu=step_flops / jax_s / peak, torch_mfu=step_flops / torch_s / peak,
               first_loss_jax=jax_losses[0], first_loss_torch=torch_losses[0])
    print(f"{preset:>11} batch {batch} L{length} {dtype}: jax {row['jax_ex_per_s']:8.1f} ex/s "
          f"(MFU {100 * row['jax_mfu']:5.1f}%)   "
          f"torch {row['torch_ex_per_s']:8.1f} ex/s (MFU {100 * row['torch_mfu']:5.1f}%)   ratio "
          f"{row['ratio']:.2f}x   [MFU vs {peak_label}]; first-step loss jax {jax_losses[0]:.4f} torch "
          f"{torch_losses[0]:.4f}", flush=True)
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,small_100m")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--length", type=int, default=32, help="tokens per query and per target")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args(argv)
    import torch
    peak = flops_lib.peak_flops_per_device()
    label = f"{jax.devices()[0].device_kind} bf16 peak"
    if peak is None:
        peak, label = measured_matmul_peak(), "measured XLA f32 matmul peak"
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); {label}: {peak / 1e9:.1f} GFLOP/s", flush=True)
    for preset in args.presets.split(","):
        bench(preset, args.batch, args.steps, peak, label, args.length, args.dtype)


if __name__ == "__main__":
    main()
