"""Templates: the v1 wording is frozen, and render_prompt lays items out exactly as documented."""
import re

import pytest

from vlm2geovec_jax.inputs.records import Box, Geo, Item
from vlm2geovec_jax.inputs.templates import (IMAGE_BLOCK, TASK_KINDS, TEMPLATES, TEMPLATES_VERSION, instruction,
                                             render_prompt, with_instruction)
from vlm2geovec_jax.inputs.tokenizer import QWEN_SPECIAL_TOKENS

IMG = "<|vision_start|><|image_pad|><|vision_end|>"
RS = "Represent the given remote sensing image."
V1 = {  # frozen: a change of wording must be a new version, since embeddings depend on every character
    "scene_classification": ("Identify the land-use scene shown in the remote sensing image.", ""),
    "text_to_image": ("Find a remote sensing image that matches the given caption:", RS),
    "image_to_text": ("Find a caption describing the given remote sensing image.", ""),
    "composed_retrieval": ("Given a remote sensing image, find a similar image with the described change:", RS),
    "vqa": ("Represent the given remote sensing image with the following question:", ""),
    "region_caption": ("Describe the object in the given region of the remote sensing image:", ""),
    "referring_expression": ("Select the region of the remote sensing image that matches the description:",
                             "Represent the given region of the remote sensing image:"),
    "semantic_geo_localization": ("Identify the geographic location of the given remote sensing image.", ""),
    "geo_image_retrieval": ("Find the remote sensing image of the given location that matches the description:",
                            RS),
}


def test_v1_is_frozen_and_covers_every_task_kind():
    assert TEMPLATES_VERSION == "v1" and TEMPLATES["v1"] == V1 and TASK_KINDS == tuple(V1)
    for kind, (query, candidate) in V1.items():
        assert instruction(kind, "query") == query and instruction(kind, "candidate") == candidate
        assert "<|" not in query + candidate and query == query.strip()


@pytest.mark.parametrize("args, message", [
    (("scene", "query"), "unknown task kind 'scene'; expected one of scene_classification, text_to_image, "),
    (("vqa", "target"), "unknown side 'target'; expected one of query, candidate"),
])
def test_instruction_rejects_unknown_names(args, message):
    with pytest.raises(ValueError) as info:
        instruction(*args)
    assert str(info.value).startswith(message)
    with pytest.raises(ValueError, match="unknown templates version 'v0'; expected one of v1"):
        instruction("vqa", "query", version="v0")


def test_with_instruction_sets_none_for_plain_candidates():
    assert with_instruction(Item(text="beach"), "scene_classification", "candidate").instruction is None
    assert with_instruction(Item(text="q"), "vqa", "query").instruction == V1["vqa"][0]


HARBOUR = Item(image="h.png", image_size=(800, 600), boxes=(Box((176.2, 106, 232, 160), "small white boat"),),
               geo=Geo(48.137, 11.575))


@pytest.mark.parametrize("item, prompt", [
    # text only
    (with_instruction(Item(text="  A harbour with many boats. "), "text_to_image", "query"),
     "Find a remote sensing image that matches the given caption: A harbour with many boats."),
    (Item(text="beach"), "beach"),
    # image
    (with_instruction(Item(image="h.png"), "text_to_image", "candidate"),
     f"{IMG}\nRepresent the given remote sensing image."),
    (Item(image=b"\x89PNG"), IMG),
    (with_instruction(Item(image="h.png", text="How many boats are there?"), "vqa", "query"),
     f"{IMG}\nRepresent the given remote sensing image with the following question: How many boats are there?"),
    # image + boxes
    (with_instruction(Item(image="h.png", image_size=(800, 600), boxes=HARBOUR.boxes), "region_caption", "query"),
     f"{IMG}\nDescribe the object in the given region of the remote sensing image: <|object_ref_start|>small white"
     " boat<|object_ref_end|><|box_start|>(220,177),(290,267)<|box_end|>"),
    (with_instruction(Item(image="h.png", image_size=(800, 600), boxes=(Box((0, 0, 400, 300)),
                                                                         Box((400, 300, 800, 600)))),
                      "referring_expression", "candidate"),
     f"{IMG}\nRepresent the given region of the remote sensing image: <|box_start|>(0,0),(500,500)<|box_end|> "
     "<|box_start|>(500,500),(1000,1000)<|box_end|>"),
    # image + coordinates
    (with_instruction(Item(image="h.png", geo=Geo(-33.86882, 151.20929)), "text_to_image", "candidate"),
     f"{IMG}\nRepresent the given remote sensing image. latitude -33.8688, longitude 151.2093"),
    # text + coordinates, and a location-only candidate
    (with_instruction(Item(text="a stadium", geo=Geo(48.2188, 11.6247)), "geo_image_retrieval", "query"),
     "Find the remote sensing image of the given location that matches the description: a stadium "
     "latitude 48.2188, longitude 11.6247"),
    (Item(geo=Geo(48.2188, 11.6247)), "latitude 48.2188, longitude 11.6247"),
    # everything
    (Item(text="the marina", instruction="Where is it?", image="h.png", image_size=(800, 600), boxes=HARBOUR.boxes,
          geo=HARBOUR.geo),
     f"{IMG}\nWhere is it? the marina <|object_ref_start|>small white boat<|object_ref_end|>"
     "<|box_start|>(220,177),(290,267)<|box_end|> latitude 48.1370, longitude 11.5750"),
])
def test_golden_prompts(item, prompt):
    assert render_prompt(item) == prompt
    assert render_prompt(item).count("<|image_pad|>") == (item.image is not None)
    assert set(re.findall(r"<\|[^|]+\|>", prompt)) <= set(QWEN_SPECIAL_TOKENS)  # only tokens Qwen2-VL knows


def test_box_format_is_selectable():
    item = Item(image="h.png", image_size=(800, 600), boxes=HARBOUR.boxes)
    assert render_prompt(item, box_format="geochat") == f"{IMAGE_BLOCK}\n<p>small white boat</p> {{<22><18><29><27>}}"
    assert render_prompt(item, box_format="pixel") == (
        f'{IMAGE_BLOCK}\n{{"bbox_2d": [176, 106, 232, 160], "label": "small white boat"}}')
