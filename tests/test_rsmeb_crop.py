"""Crop baseline: crops are exactly the box's pixels, boxes are dropped, rows keep order, positives and text."""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlm2geovec_jax.geoscenes.vocabulary import SCENES
from vlm2geovec_jax.geoscenes.world import World
from vlm2geovec_jax.inputs.adapters import SourceInfo
from vlm2geovec_jax.inputs.records import Box, EvalRow, Item
from vlm2geovec_jax.inputs.templates import render_prompt
from vlm2geovec_jax.inputs.regions import box_envelope
from vlm2geovec_jax.rsmeb.crop import crop_item, crop_row, crop_rows, with_crop_baseline
from vlm2geovec_jax.rsmeb.rows import SplitSource, build_rows
from vlm2geovec_jax.rsmeb.suite import load_suite, suite_from_config

REPO = Path(__file__).resolve().parents[1]


def _image(w=40, h=30, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return pixels, buf.getvalue()


def _pixels(item):
    return np.asarray(Image.open(io.BytesIO(item.image)).convert("RGB"))


def test_crop_pixels_equal_the_box_region():
    pixels, data = _image()
    item = Item(text="the red car", image=data, image_size=(40, 30), boxes=(Box((5.2, 3.7, 20.1, 18.0)),),
                instruction="Describe:")
    out = crop_item(item)
    assert out.boxes == () and out.image_size == (16, 15)
    assert out.text == "the red car" and out.instruction == "Describe:"
    np.testing.assert_array_equal(_pixels(out), pixels[3:18, 5:21])


def test_crop_from_a_path_and_several_boxes(tmp_path):
    pixels, data = _image(seed=1)
    (tmp_path / "a.png").write_bytes(data)
    item = Item(image=str(tmp_path / "a.png"), image_size=(40, 30),
                boxes=(Box((1, 2, 5, 6)), Box((10, 12, 40, 30))))
    np.testing.assert_array_equal(_pixels(crop_item(item)), pixels[2:30, 1:40])


def test_rotated_box_envelope_and_clipping():
    assert box_envelope([Box((10, 18, 20, 22), angle=90.0)], (100, 100)) == (13, 15, 17, 25)
    assert box_envelope([Box((0, 0, 10, 10), angle=45.0)], (100, 100)) == (0, 0, 13, 13)


def test_size_mismatch_is_an_error():
    _, data = _image()
    with pytest.raises(ValueError, match=r"\[50, 30\] disagrees with the image .*, which is 40x30 pixels"):
        crop_item(Item(image=data, image_size=(50, 30), boxes=(Box((1, 1, 5, 5)),)))


def test_crop_rows_keep_order_positives_and_sharing():
    pixels, data = _image()
    cands = tuple(Item(image=data, image_size=(40, 30), boxes=(Box((i, i, i + 10, i + 8)),)) for i in range(3))
    text_only = Item(text="no box")
    shared = cands + (text_only,)
    rows = [EvalRow(f"q{i}", "ref", Item(text=f"expr {i}", image=data), shared, (i,)) for i in range(3)]
    out = crop_rows(rows, task="ref_crop")
    assert [r.positives for r in out] == [(0,), (1,), (2,)] and {r.task for r in out} == {"ref_crop"}
    assert out[0].candidates is out[1].candidates  # shared candidates cropped once
    assert out[0].query == rows[0].query and out[0].candidates[3] is text_only
    for i in range(3):
        np.testing.assert_array_equal(_pixels(out[0].candidates[i]), pixels[i:i + 8, i:i + 10])
    assert crop_row(rows[1]).candidates == out[1].candidates


def test_with_crop_baseline_adds_region_tasks_only():
    suite = suite_from_config({"name": "s", "tasks": {
        "ref": dict(group="grounding_region", dataset="vrsbench", split="validation", kind="referring_expression",
                    candidate_policy="sampled", paper_p1=32.5),
        "cls": dict(group="scene_classification", dataset="rs_scenes/aid", split="test",
                    kind="scene_classification", candidate_policy="all_classes")}})
    _, data = _image()
    row = EvalRow("q", "ref", Item(text="x", image=data), (Item(image=data, image_size=(40, 30),
                                                                 boxes=(Box((0, 0, 4, 4)),)),))
    suite2, rows2 = with_crop_baseline(suite, {"ref": [row], "cls": []})
    crop_task = suite2.task("ref_crop")
    assert crop_task.baseline_of == "ref" and crop_task.paper_p1 is None
    assert [t.name for t in suite2.main_tasks] == ["cls", "ref"] and suite2.groups == suite.groups
    assert rows2["ref_crop"][0].candidates[0].boxes == () and "cls_crop" not in rows2


# ------------------------------------------------------------------ fairness: the same words on both sides
_IMAGE_BLOCK = re.compile(r"<\|vision_start\|><\|image_pad\|><\|vision_end\|>\n?")
_BOX = re.compile(r"<\|box_start\|>.*?<\|box_end\|>")
_REF = re.compile(r"<\|object_ref_start\|>(.*?)<\|object_ref_end\|>")


def _words_without_box_tokens(prompt: str) -> str:
    """The prompt's words once the image block, coordinates and box markers are removed (regex reference)."""
    text = _BOX.sub(" ", _REF.sub(r" \1 ", _IMAGE_BLOCK.sub("", prompt)))
    return " ".join(text.split())


def test_crop_rows_and_box_rows_carry_the_same_text():
    """GeoScenes region rows built as the suite builds them: every word of a box row is in its crop row."""
    suite = load_suite(REPO / "eval" / "geoscenes.py")
    suite = suite.subset(["region_caption_retrieval", "referring_expression_retrieval"])
    world = World(0, 112)
    examples = [world.example("test", i) for i in range(12)]
    info = SourceInfo(suite.tasks[0].dataset, "test", tuple(SCENES))
    rows = build_rows(suite, loader=lambda dataset, split: SplitSource(examples, info))
    suite2, rows2 = with_crop_baseline(suite, rows)
    for task in ("region_caption_retrieval", "referring_expression_retrieval"):
        assert rows[task] and len(rows2[task + "_crop"]) == len(rows[task])
        for box_row, crop_row_ in zip(rows[task], rows2[task + "_crop"]):
            for box_item, crop in zip((box_row.query, *box_row.candidates), (crop_row_.query, *crop_row_.candidates)):
                assert not crop.boxes
                assert (crop.image is None) == (box_item.image is None)
                box_prompt, crop_prompt = render_prompt(box_item), render_prompt(crop)
                assert _words_without_box_tokens(box_prompt) == _words_without_box_tokens(crop_prompt)
                assert "<|object_ref_start|>" not in box_prompt  # a region is the box alone, never its class name


def test_a_labelled_box_puts_its_label_after_the_text():
    _, data = _image()
    item = Item(text="near the coast", image=data, image_size=(40, 30),
                boxes=(Box((1, 1, 9, 9), label="ship"), Box((20, 5, 30, 15))), instruction="Represent:")
    assert crop_item(item).text == "near the coast ship"
    assert crop_item(Item(image=data, image_size=(40, 30), boxes=(Box((1, 1, 9, 9)),))).text is None
