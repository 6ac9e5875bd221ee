"""Training-pipeline throughput, in examples (pairs) per second per worker, on generated images.

    python -m vlm2geovec_jax.bench.pipeline             # 12 steps of 16 pairs per mode
    python -m vlm2geovec_jax.bench.pipeline --quick     # 4 steps

The source is a caption dataset shaped like rs_captions (JPEG bytes of 512x512 and 640x480 images with five
captions each), mixed 50/50 as image_to_text and text_to_image, so every pair has one image. Two modes:
dynamic resolution capped at 448x448 pixels (ImageConfig(max_pixels=448*448), aspect kept) and fixed
resolution (ImageConfig(fixed_size=(448, 448))). A step is built in the calling thread (``Pipeline[i]``:
adapt, decode, resize, patchify, tokenise, pad, M-RoPE positions), so the figure is what one grain worker
delivers. The reference, measured in the same run on the same images and prompts, is transformers'
Qwen2VLProcessor (PIL backend) preparing the same pairs one at a time, without padding or positions.
"""
from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time

import numpy as np
from PIL import Image

from vlm2geovec_jax.inputs.adapters import SourceInfo, image_to_text, text_to_image
from vlm2geovec_jax.inputs.image import ImageConfig
from vlm2geovec_jax.inputs.pipeline import Pipeline, PipelineConfig, Task
from vlm2geovec_jax.inputs.templates import render_prompt
from vlm2geovec_jax.inputs.tokenizer import Tokenizer, build_demo_tokenizer
from vlm2geovec_jax.models.presets import model_config

SIZES = ((512, 512), (640, 480))
MODES = {"dynamic 448x448": ImageConfig(max_pixels=448 * 448), "fixed 448x448": ImageConfig(fixed_size=(448, 448))}


def make_source(n: int, seed: int = 0) -> list[dict]:
    """n rs_captions-like examples with smooth random JPEG images (compressible like real tiles)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        coarse = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        out.append({"image": buf.getvalue(), "image_id": f"{i}.jpg".encode(), "image_size": np.array([w, h]),
                    "captions": [f"an aerial photo showing a white airport near the coast number {i} {j}".encode()
                                 for j in range(5)]})
    return out


def time_pipeline(pipeline: Pipeline, steps: int) -> list[float]:
    """Seconds per step, each step built in this thread (step 0 is a warm-up and not counted)."""
    pipeline[0]
    times = []
    for step in range(1, steps + 1):
        start = time.perf_counter()
        pipeline[step]
        times.append(time.perf_counter() - start)
    return times


def time_reference(source: list[dict], image_config: ImageConfig, tok_dir: str, pairs: int) -> float | None:
    """Seconds per pair for transformers' Qwen2VLProcessor on the same pairs (None without transformers)."""
    try:
        import transformers
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    except ImportError:
        return None

    class NoVideoProcessor(transformers.Qwen2VLProcessor):
        def check_argument_for_proper_class(self, name, arg):  # the video processor needs torchvision
            return None if arg is None else super().check_argument_for_proper_class(name, arg)

    fixed = image_config.fixed_size
    if fixed is not None:  # resize to H x W first (what fixed_size does); the processor then keeps the size
        kwargs = dict(min_pixels=fixed[0] * fixed[1], max_pixels=fixed[0] * fixed[1])
    else:
        kwargs = dict(min_pixels=image_config.min_pixels, max_pixels=image_config.max_pixels)
    processor = NoVideoProcessor(image_processor=Qwen2VLImageProcessorPil(**kwargs),
                                 tokenizer=transformers.AutoTokenizer.from_pretrained(tok_dir), video_processor=None)
    info = SourceInfo("bench", "train")
    examples = [(p.query, p.positive) for ex in source for p in image_to_text(ex, info)[:1]]
    start = time.perf_counter()
    for i in range(pairs):
        query, positive = examples[i % len(examples)]
        image = Image.open(io.BytesIO(query.image)).convert("RGB")
        if fixed is not None:
            image = image.resize((fixed[1], fixed[0]), Image.Resampling.BICUBIC)
        processor(text=[render_prompt(query)], images=[image], return_tensors="np")
        processor(text=[render_prompt(positive)], return_tensors="np")
    return (time.perf_counter() - start) / pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--sub-batch-size", type=int, default=8)
    parser.add_argument("--sub-batches", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="4 steps")
    args = parser.parse_args(argv)
    steps = 4 if args.quick else args.steps
    pairs = args.sub_batch_size * args.sub_batches
    source = make_source(32)
    info = SourceInfo("bench", "train")
    tasks = [Task("image_to_text", source, image_to_text, info), Task("text_to_image", source, text_to_image, info)]
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = str(build_demo_tokenizer(tmp))
        tok = Tokenizer.from_dir(tok_dir)
        print(f"pipeline throughput, {pairs} pairs a step (one image per pair), {steps} timed steps, one worker")
        for mode, image_config in MODES.items():
            p = Pipeline(tasks, tokenizer=tok, image_config=image_config, model_cfg=model_config("tiny"),
                         config=PipelineConfig(sub_batch_size=args.sub_batch_size, sub_batches=args.sub_batches,
                                               length_buckets=(128, 256, 512)))
            per_step = statistics.median(time_pipeline(p, steps))
            ref = time_reference(source, image_config, tok_dir, pairs)
            step = p[0]
            mib = (step["query"].pixel_values.nbytes + step["target"].pixel_values.nbytes) / 2 ** 20
            line = (f"  {mode:16s} {pairs / per_step:7.1f} pairs/s per worker ({per_step * 1e3:6.1f} ms/step, "
                    f"{mib:.0f} MiB of pixels a step)")
            if ref is not None:
                line += f"; transformers processor {1 / ref:6.1f} pairs/s, ratio {ref * pairs / per_step:.2f}x"
            print(line)


if __name__ == "__main__":
    main()
