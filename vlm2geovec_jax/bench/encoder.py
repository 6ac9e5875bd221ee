"""Encoder throughput against transformers' PyTorch Qwen2-VL, and the peak memory of ``import-hf``.

    python -m vlm2geovec_jax.bench.encoder [--presets tiny,small_100m] [--batch 8] [--iters 10]
                                           [--dtype float32|bfloat16] [--attention auto,xla,cudnn]

Both sides run the same random weights on the same inputs on this machine: ours jitted (XLA), PyTorch in
eager mode under ``inference_mode`` (its default attention, SDPA), on the GPU when there is one, in ``--dtype``.
Ours runs once per ``--attention`` kernel. Our inputs are padded to the embedder's power-of-two buckets,
PyTorch's are not, so the comparison slightly favours PyTorch. Needs the ``torch`` extra.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vlm2geovec_jax import load
from vlm2geovec_jax.models.attention import check
from vlm2geovec_jax.models.config import ModelConfig, TextConfig, VisionConfig
from vlm2geovec_jax.models.presets import model_config

# ~500M parameters in float32 (~2 GB): big enough that import memory is dominated by the weights.
IMPORT_CONFIG = ModelConfig(
    text=TextConfig(vocab_size=32000, hidden_size=1024, intermediate_size=4096, num_layers=24, num_heads=16,
                    num_kv_heads=4, mrope_section=(8, 12, 12)),
    vision=VisionConfig(depth=12, embed_dim=768, num_heads=12),
    image_token_id=31998, video_token_id=31999, vision_start_token_id=31995, vision_end_token_id=31996)


def _hf_model(cfg: ModelConfig, seed: int = 0):
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    torch.manual_seed(seed)
    return Qwen2VLForConditionalGeneration(Qwen2VLConfig(**cfg.to_hf(torch_dtype="float32"))).eval()


def _inputs(cfg: ModelConfig, batch: int, with_image: bool, rng: np.random.Generator):
    """(input_ids, attention_mask, pixel_values, image_grid_thw): 128 text tokens, or a 224x224 image + 32."""
    text = rng.integers(0, cfg.vision_start_token_id - 10, (batch, 128 if not with_image else 32))
    if not with_image:
        return text, np.ones_like(text), None, None
    grid = (1, 16, 16)  # 224 x 224 pixels in 14-pixel patches
    n_tokens = int(np.prod(grid)) // cfg.vision.spatial_merge_size ** 2
    block = [cfg.vision_start_token_id] + [cfg.image_token_id] * n_tokens + [cfg.vision_end_token_id]
    ids = np.concatenate([np.tile(block, (batch, 1)), text], axis=1)
    pixels = rng.standard_normal((batch * int(np.prod(grid)), cfg.vision.patch_dim)).astype(np.float32)
    return ids, np.ones_like(ids), pixels, np.array([grid] * batch)


def _time(fn, iters: int) -> float:
    fn()  # warm-up (compilation for ours)
    fn()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def _torch_embed(model, ids, mask, pixels, grids):
    """Embeddings as numpy (so a GPU run is finished when it returns)."""
    import torch
    ids_t = torch.as_tensor(ids, device=model.device)
    kwargs = {}
    if pixels is not None:
        kwargs = dict(pixel_values=torch.as_tensor(pixels, device=model.device).to(model.dtype),
                      image_grid_thw=torch.as_tensor(grids, device=model.device),
                      mm_token_type_ids=(ids_t == model.config.image_token_id).long())
    with torch.inference_mode():
        hidden = model.model(input_ids=ids_t, attention_mask=torch.as_tensor(mask, device=model.device),
                             **kwargs).last_hidden_state
        return torch.nn.functional.normalize(hidden[:, -1].float(), dim=-1).cpu().numpy()


def bench_preset(preset: str, batch: int, iters: int, dtype: str = "float32",
                 attentions: tuple[str, ...] = ("auto",)) -> list[dict]:
    import torch
    cfg = model_config(preset)
    hf = _hf_model(cfg)
    n_params = sum(p.numel() for p in hf.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = {a: load(tmp, dtype=dtype, param_dtype=dtype, attention=a) for a in attentions}
    hf = hf.to("cuda" if torch.cuda.is_available() else "cpu", getattr(torch, dtype))
    rows = []
    rng = np.random.default_rng(0)
    for kind in ("text", "image"):
        ids, mask, pixels, grids = _inputs(cfg, batch, kind == "image", rng)
        torch_s = _time(lambda: _torch_embed(hf, ids, mask, pixels, grids), iters)
        expected = _torch_embed(hf, ids, mask, pixels, grids)
        for attention, embedder in ours.items():
            jax_s = _time(lambda: embedder.embed_tokens(ids, mask, pixels, grids), iters)
            diff = np.max(np.abs(embedder.embed_tokens(ids, mask, pixels, grids) - expected))
            rows.append(dict(preset=preset, params_m=round(n_params / 1e6, 1), inputs=kind, tokens=ids.shape[1],
                             attention=check(embedder.config), dtype=dtype, jax_emb_per_s=round(batch / jax_s, 1),
                             torch_emb_per_s=round(batch / torch_s, 1), ratio=round(torch_s / jax_s, 2),
                             max_abs_diff=float(diff)))
            print(_format(rows[-1]), flush=True)
    return rows


def _format(row: dict) -> str:
    return (f"{row['preset']:>11} ({row['params_m']:>6.1f}M) {row['inputs']:>5} L={row['tokens']:<4} "
            f"{row['dtype']} {row['attention']:>6}: jax {row['jax_emb_per_s']:>8.1f} emb/s   torch "
            f"{row['torch_emb_per_s']:>8.1f} emb/s   ratio {row['ratio']:>5.2f}x   max|diff| {row['max_abs_diff']:.1e}")


# Peak RSS from /proc/self/status VmHWM: getrusage's ru_maxrss survives exec, so a child would report the
# (large) parent's peak.
_PEAK = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) * 1024"

# The import child also samples RssAnon (heap: our arrays) and RssFile (mapped file pages, e.g. an mmap of the
# checkpoint) every 5 ms, to tell which of the two a peak comes from (VmHWM counts both).
_IMPORT_CHILD = f"""
import json, sys, threading, time
peaks = {{"RssAnon": 0, "RssFile": 0}}
def sample():
    while True:
        for line in open('/proc/self/status'):
            key = line.split(':')[0]
            if key in peaks:
                peaks[key] = max(peaks[key], int(line.split()[1]) * 1024)
        time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
from vlm2geovec_jax.weights.convert import import_hf
start = time.perf_counter()
import_hf(sys.argv[1], sys.argv[2], progress=False)
seconds = time.perf_counter() - start
time.sleep(0.02)
print(json.dumps({{"seconds": seconds, "peak_rss_bytes": {_PEAK}, "peak_anon_bytes": peaks["RssAnon"],
                  "peak_file_bytes": peaks["RssFile"]}}))
"""

_BASELINE_CHILD = f"""
import json
import jax, jax.numpy as jnp, orbax.checkpoint, flax.nnx
jnp.zeros(1).block_until_ready()
print(json.dumps({{"peak_rss_bytes": {_PEAK}}}))
"""


def import_memory() -> dict:
    """Peak RSS of import-hf in a fresh process, against the checkpoint's size and the bare runtime's RSS.

    Target (issue 2): peak <= ~1.3x the checkpoint plus the bare runtime, i.e. the weights once plus transients.
    """
    hf = _hf_model(IMPORT_CONFIG)
    n_params = sum(p.numel() for p in hf.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(Path(tmp) / "hf")
        del hf
        size = sum(f.stat().st_size for f in (Path(tmp) / "hf").glob("*.safetensors"))
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        run = lambda code, *a: json.loads(subprocess.run([sys.executable, "-c", code, *a], env=env, check=True,
                                                         capture_output=True, text=True).stdout.splitlines()[-1])
        child = run(_IMPORT_CHILD, str(Path(tmp) / "hf"), str(Path(tmp) / "ckpt"))
        base = run(_BASELINE_CHILD)
    gb = lambda b: round(b / 1e9, 3)
    out = dict(params_m=round(n_params / 1e6, 1), checkpoint_gb=gb(size), peak_rss_gb=gb(child["peak_rss_bytes"]),
               peak_anon_gb=gb(child["peak_anon_bytes"]), peak_file_gb=gb(child["peak_file_bytes"]),
               runtime_rss_gb=gb(base["peak_rss_bytes"]), seconds=round(child["seconds"], 1))
    out["peak_over_checkpoint"] = round(child["peak_rss_bytes"] / size, 2)
    out["peak_minus_runtime_over_checkpoint"] = round((child["peak_rss_bytes"] - base["peak_rss_bytes"]) / size, 2)
    print(f"import-hf {out['params_m']}M params: checkpoint {out['checkpoint_gb']} GB, peak RSS "
          f"{out['peak_rss_gb']} GB ({out['peak_over_checkpoint']}x; {out['peak_minus_runtime_over_checkpoint']}x "
          f"above the {out['runtime_rss_gb']} GB bare runtime; peak RssAnon {out['peak_anon_gb']} GB, "
          f"RssFile {out['peak_file_gb']} GB), {out['seconds']} s", flush=True)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,small_100m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--skip-import-memory", action="store_true")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--attention", default="auto", help="comma-separated kernels for ours (auto, xla, cudnn, "
                        "splash)")
    args = parser.parse_args(argv)
    import jax
    import torch
    where = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} x{jax.device_count()}, "
          f"torch {torch.__version__} on {where}, batch {args.batch}", flush=True)
    for preset in args.presets.split(","):
        bench_preset(preset, args.batch, args.iters, args.dtype, tuple(args.attention.split(",")))
    if not args.skip_import_memory:
        import_memory()


if __name__ == "__main__":
    main()
