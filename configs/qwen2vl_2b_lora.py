"""VLM2Vec's recipe on Qwen2-VL-2B: LoRA r=8 on the language model, global batch 1024 through GradCache,
temperature 0.02, AdamW 5e-5 with linear decay (paper.md section 3; VLM2GeoVec's own values are unpublished).

    vlm2geovec import-hf --hf-dir Qwen2-VL-2B-Instruct --out ckpt/qwen2vl_2b
    vlm2geovec train --config configs/qwen2vl_2b_lora.py --workdir runs/2b \\
        --config.init.checkpoint=ckpt/qwen2vl_2b --config.data.pipeline.data_dir=$TFDS_DATA_DIR

On a pod, run the same command on every host with --distributed.
"""
import ml_collections

from vlm2geovec_jax.models.presets import get_preset
from vlm2geovec_jax.train.config import default_config

# The RS training mixture (datasets built with `python -m vlm2geovec_jax.inputs.tfds_common data/<name>`).
MIXTURE = (
    ("rs_captions/rsicd", "text_to_image", 1.0), ("rs_captions/rsicd", "image_to_text", 1.0),
    ("rs_captions/rsitmd", "text_to_image", 1.0), ("rs_scenes/aid", "scene_classification", 0.5),
    ("rsvqa/lr", "vqa", 0.5), ("dior_rsvg", "referring_expression", 1.0),
    ("vrsbench", "region_caption", 1.0), ("fmow", "semantic_geo_localization", 1.0),
)


def get_config():
    c = default_config()
    c.model = get_preset("qwen2vl_2b")       # bf16 weights and compute; LoRA adapters in float32
    c.model.remat_policy = "save_dots_no_batch"
    c.trainable = "lora"
    c.lora.rank, c.lora.alpha = 8, 64.0
    c.batch_size = 1024
    c.grad_cache.num_chunks = 16
    c.num_steps = 2000
    c.optimizer.lr, c.optimizer.warmup_steps, c.optimizer.schedule = 5e-5, 100, "linear"
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    c.data.kind = "pipeline"
    c.data.pipeline = ml_collections.ConfigDict(dict(
        data_dir="", tokenizer="", sub_batch_size=64, num_negatives=0, fixed_size=None,
        min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 256, worker_count=8, on_bad_record="skip",
        length_buckets=(256, 512, 1024),
        tasks=[dict(dataset=d, task=t, split="train", weight=w) for d, t, w in MIXTURE]))
    c.checkpoint.every, c.checkpoint.keep = 250, 3
    return c
