"""Dual-encoder mode: no item ever holds an image together with text, a box or coordinates."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlm2geovec_jax.geoscenes.vocabulary import SCENES
from vlm2geovec_jax.geoscenes.world import World
from vlm2geovec_jax.inputs.adapters import ADAPTERS, SourceInfo
from vlm2geovec_jax.inputs.dual import dual_item
from vlm2geovec_jax.inputs.image import ImageConfig
from vlm2geovec_jax.inputs.pipeline import Pipeline, PipelineConfig, Task
from vlm2geovec_jax.inputs.records import Box, Geo, Item
from vlm2geovec_jax.inputs.templates import TASK_KINDS
from vlm2geovec_jax.inputs.tokenizer import Tokenizer, build_demo_tokenizer
from vlm2geovec_jax.models.presets import model_config
from vlm2geovec_jax.rsmeb.crop import with_crop_baseline
from vlm2geovec_jax.rsmeb.dual import dual_suite
from vlm2geovec_jax.rsmeb.rows import SplitSource, build_rows
from vlm2geovec_jax.rsmeb.suite import load_suite

REPO = Path(__file__).resolve().parents[1]
CFG = model_config("tiny")
IMAGES = ImageConfig(fixed_size=(112, 112), min_pixels=56 * 56, max_pixels=112 * 112)


def _png(w=40, h=30):
    buf = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (h, w, 3), np.uint8)
    Image.fromarray(pixels).save(buf, format="PNG")
    return pixels, buf.getvalue()


def _examples(split: str, n: int) -> list[dict]:
    """GeoScenes examples as TFDS stores them (the scene as its ClassLabel index, qa as a dict of lists)."""
    world = World(0, 112)
    out = []
    for ex in (world.example(split, i) for i in range(n)):
        qa = {k: [q[k] for q in ex["qa"]] for k in ("question", "answer", "question_type")}
        out.append(dict(ex, label=SCENES.index(ex["label"]), qa=qa))
    return out


def _only_image_or_text(item: Item) -> bool:
    if item.image is None:
        return not item.boxes
    return not (item.text or item.boxes or item.geo is not None or item.instruction)


def test_the_rule_item_by_item():
    pixels, data = _png()
    geo = Geo(lat=10.0, lon=20.0)
    region = dual_item(Item(image=data, image_size=(40, 30), boxes=(Box((2, 3, 12, 9), label="ship"),),
                            instruction="Represent the region:"))
    assert (region.text, region.boxes, region.instruction, region.image_size) == (None, (), None, (10, 6))
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(region.image)).convert("RGB")), pixels[3:9, 2:12])
    edit = dual_item(Item(text="paint the ship red", image=data, instruction="Find:"))
    assert edit == Item(text="paint the ship red", instruction="Find:")
    assert dual_item(Item(image=data, geo=geo)) == Item(geo=geo)
    assert dual_item(Item(image=data, instruction="Represent:")) == Item(image=data)
    text = Item(text="a place", geo=geo, instruction="Locate:")
    assert dual_item(text) is text


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return Tokenizer.from_dir(build_demo_tokenizer(tmp_path_factory.mktemp("tok")))


def _pipeline(tok, interleave: bool) -> Pipeline:
    examples = _examples("train", 10)
    info = SourceInfo("geoscenes/x", "train", tuple(SCENES))
    tasks = [Task(kind, examples, ADAPTERS[("geoscenes", kind)], info) for kind in TASK_KINDS]
    config = PipelineConfig(sub_batch_size=2, sub_batches=9, num_negatives=1, length_buckets=(128,),
                            on_bad_record="skip", interleave=interleave)
    return Pipeline(tasks, tokenizer=tok, image_config=IMAGES, model_cfg=CFG, config=config)


def _mixed_rows(step) -> int:
    """Valid rows holding image tokens and any token outside the image block (text, box, coordinates)."""
    block = {CFG.vision_start_token_id, CFG.image_token_id, CFG.vision_end_token_id}
    mixed = 0
    for side in ("query", "target"):
        inputs, valid = step[side], step[f"{side}_valid"]
        for ids, mask, ok in zip(inputs.input_ids, inputs.attention_mask, valid):
            tokens = set(ids[mask > 0].tolist())
            mixed += bool(ok and CFG.image_token_id in tokens and tokens - block)
    return mixed


def test_dual_steps_never_mix_an_image_with_text(tok):
    dual, single = _pipeline(tok, False), _pipeline(tok, True)
    seen = set()
    for step in range(6):
        batch = dual[step]
        seen |= set(batch["tasks"].tolist())
        assert batch["query_valid"].any()
        assert _mixed_rows(batch) == 0, f"step {step}"
    assert seen == set(TASK_KINDS)  # every kind was drawn, so every adapter went through the rule
    assert sum(_mixed_rows(single[step]) for step in range(6)) > 0  # the check can see a mixed row


def test_dual_eval_rows_are_image_only_or_text_only():
    suite = load_suite(f"{REPO / 'eval' / 'geoscenes.py'}")
    examples = _examples("test", 12)
    info = SourceInfo(suite.tasks[0].dataset, "test", tuple(SCENES))
    rows = build_rows(suite, loader=lambda dataset, split: SplitSource(examples, info))
    suite, rows = with_crop_baseline(suite, rows)
    dual, dual_rows = dual_suite(suite, rows)
    assert [t.name for t in dual.tasks] == [t.name for t in suite.main_tasks] and not dual.crop_baseline
    for task in dual.tasks:
        assert len(dual_rows[task.name]) == len(rows[task.name])
        for row, original in zip(dual_rows[task.name], rows[task.name]):
            assert row.positives == original.positives and row.qid == original.qid
            assert all(_only_image_or_text(item) for item in (row.query, *row.candidates)), row.qid
