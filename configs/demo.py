"""The demo: a tiny Qwen2-VL-shaped encoder trained from scratch on GeoScenes, on a CPU, in minutes.

Every GeoScenes task kind is in the mixture, weighted towards those that learn slowest from scratch (region
captions above all, then cross-modal search, referring expressions and geolocation); scene classes and VQA
answers learn fast and get less. The learning rate, the region-caption weight and the step count were chosen
on the validation split (docs/demo.md): 1e-3 as the scaling study found for this width, region captions at 7
(3.5 read no box: 3 P@1 against 1 chance), and 800 steps, as many as fit the 15 minutes (region captions 10.0
P@1 at 500 steps, 21.0 at 800: the box is read only after some hundreds of steps). Images are resized to
112 x 112 (64 patches, 16 image tokens) and every prompt is padded to one length bucket, so training compiles
few step shapes (on a CPU a compile costs as much as dozens of steps); eight sub-batches of four make a step
whose targets are all text-only rare.

``vlm2geovec demo`` fills in ``data.pipeline.data_dir`` and ``tokenizer``; to train it by hand, build
GeoScenes and the demo tokenizer first and pass them:

    vlm2geovec train --config configs/demo.py --workdir OUT \
        --config.data.pipeline.data_dir=DATA --config.data.pipeline.tokenizer=TOK
"""
import ml_collections

from vlm2geovec_jax.models.presets import get_preset
from vlm2geovec_jax.train.config import default_config

DATASET = "geoscenes/demo"
IMAGE_SIZE = 112
# task kind -> mixture weight
MIXTURE = {
    "scene_classification": 0.75, "text_to_image": 1.5, "image_to_text": 1.5, "vqa": 0.75,
    "region_caption": 7.0, "referring_expression": 1.5, "semantic_geo_localization": 1.5,
    "geo_image_retrieval": 1.5, "composed_retrieval": 1.0,
}


def model():
    """The ``tiny`` preset (its special-token ids match the demo tokenizer), a little wider."""
    m = get_preset("tiny")
    m.text.hidden_size = 128
    m.text.intermediate_size = 256
    m.text.num_layers = 2
    m.text.num_heads = 4
    m.text.num_kv_heads = 2
    m.text.mrope_section = (4, 6, 6)
    m.vision.embed_dim = 64
    m.vision.depth = 2
    m.vision.num_heads = 4
    m.dtype = "float32"
    m.param_dtype = "float32"
    return m


def get_config():
    c = default_config()
    c.model = model()
    c.trainable = "full"
    c.loss.temperature = 0.05
    c.loss.learn_temperature = True
    c.loss.direction = "bidirectional"
    c.optimizer.lr = 1e-3
    c.optimizer.warmup_steps = 20
    c.optimizer.schedule = "cosine"
    c.optimizer.end_lr_fraction = 0.05
    c.optimizer.weight_decay = 0.01
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    c.batch_size = 32
    c.num_steps = 800
    c.data.kind = "pipeline"
    c.data.pipeline = ml_collections.ConfigDict(dict(
        data_dir="", tokenizer="",
        tasks=[dict(dataset=DATASET, task=kind, split="train", weight=w) for kind, w in MIXTURE.items()],
        sub_batch_size=4, num_negatives=1, length_buckets=(112,), fixed_size=(IMAGE_SIZE, IMAGE_SIZE),
        min_pixels=56 * 56, max_pixels=IMAGE_SIZE * IMAGE_SIZE, worker_count=0, on_bad_record="skip",
        interleave=True))
    c.checkpoint.every = 1000
    c.checkpoint.keep = 1
    c.log_every = 10
    return c
