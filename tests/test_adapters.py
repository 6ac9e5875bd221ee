"""Task adapters on the TFDS builders' real-format fixtures: the exact Pairs (text, boxes, geo, instruction)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlm2geovec_jax.inputs import adapters, tfds_common
from vlm2geovec_jax.inputs.adapters import SourceInfo, adapter, class_text
from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.inputs.pipeline import skip_image_decoding
from vlm2geovec_jax.inputs.records import Box, Geo, Item
from vlm2geovec_jax.inputs.templates import TASK_KINDS, instruction, render_prompt

DATA = Path(__file__).resolve().parents[1] / "data"
BUILDS = {  # dataset -> (builder, config, fixture subfolder)
    "rs_scenes/aid": ("rs_scenes", "aid", "aid"), "rs_captions/rsicd": ("rs_captions", "rsicd", "rsicd"),
    "dior_rsvg": ("dior_rsvg", None, ""), "rsvqa/lr": ("rsvqa", "lr", "lr"), "fmow": ("fmow", None, ""),
    "skyscript/top30pct": ("skyscript", "top30pct", ""), "geochat_bench/referring": ("geochat_bench", "referring", ""),
    "geochat_bench/region_captioning": ("geochat_bench", "region_captioning", ""), "vrsbench": ("vrsbench", None, ""),
    "geoscenes/tiny": ("geoscenes", "tiny", ""),  # generated: no manual files
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("tfds")
    return {name: tfds_common.build(DATA / b, manual_dir=DATA / b / "dummy_data" / sub, data_dir=out, config=c)
            for name, (b, c, sub) in BUILDS.items()}


@pytest.fixture(scope="module")
def data_dir(built):
    return built["rs_scenes/aid"].data_dir.split("/rs_scenes/")[0]


def example(built, dataset: str, split: str, key: str, value: str, *, encoded: bool = True):
    """The example whose `key` equals `value`, with its image left encoded (as the pipeline reads it)."""
    builder = built[dataset]
    features = builder.info.features
    source = builder.as_data_source(split=split, decoders=skip_image_decoding(features) if encoded else None)
    names = tuple(features["label"].names) if "label" in features else ()
    for ex in source:
        got = ex[key].decode() if isinstance(ex[key], bytes) else str(ex[key])
        if got == value:
            return ex, SourceInfo(dataset, split, names)
    raise AssertionError(f"no {key}={value} in {dataset}[{split}]")


def q(task):
    return instruction(task, "query")


def c(task):
    return instruction(task, "candidate") or None


def test_class_text_golden():
    assert [class_text(n) for n in ("BareLand", "baseball_field", "Expressway-Service-area", "airport_hangar",
                                    "storagetank")] == [
        "bare land", "baseball field", "expressway service area", "airport hangar", "storagetank"]


def test_scene_classification(built):
    ex, info = example(built, "rs_scenes/aid", "train", "image_id", "BareLand/bareland_2.jpg")
    [pair] = adapter("rs_scenes/aid", "scene_classification")(ex, info)
    assert pair.task == "scene_classification"
    assert (pair.source.dataset, pair.source.split, pair.source.id) == ("rs_scenes/aid", "train",
                                                                        "BareLand/bareland_2.jpg")
    assert pair.query == Item(image=bytes(ex["image"]), image_size=(32, 32), instruction=q("scene_classification"))
    assert pair.query.image[:2] == b"\xff\xd8"  # the stored JPEG bytes, not a re-encoding
    assert pair.positive == Item(text="bare land") and pair.negatives == ()


def test_decoded_images_are_reencoded_losslessly(built):
    ex, info = example(built, "rs_scenes/aid", "train", "image_id", "BareLand/bareland_2.jpg", encoded=False)
    [pair] = adapters.scene_classification(ex, info)
    assert pair.query.image[:4] == b"\x89PNG"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(pair.query.image))), ex["image"])


def test_captions_both_directions(built):
    ex, info = example(built, "rs_captions/rsicd", "train", "image_id", "airport_1.jpg")
    t2i = adapter("rs_captions", "text_to_image")(ex, info)
    texts = ["many planes are parked next to a long building .", "several airplanes are near the terminal .",
             "many planes are parked next to a long building ."]
    assert [p.query.text for p in t2i] == texts
    assert [p.source.id for p in t2i] == [f"airport_1.jpg#caption{i}" for i in range(3)]
    assert {p.query.instruction for p in t2i} == {q("text_to_image")}
    assert t2i[0].positive.image == bytes(ex["image"]) and t2i[0].positive.instruction == c("text_to_image")
    i2t = adapter("rs_captions", "image_to_text")(ex, info)
    assert [p.positive for p in i2t] == [Item(text=t) for t in texts]
    assert render_prompt(i2t[1].query) == ("<|vision_start|><|image_pad|><|vision_end|>\n"
                                           "Find a caption describing the given remote sensing image.")


def test_vqa_one_pair_per_active_question(built):
    ex, info = example(built, "rsvqa/lr", "train", "image_id", "0")
    pairs = adapter("rsvqa", "vqa")(ex, info)
    assert [(p.query.text, p.positive.text) for p in pairs] == [("Is there a road?", "yes"),
                                                                ("How many buildings are there?", "12")]
    assert pairs[1].source.id == "0#qa1" and pairs[1].query.instruction == q("vqa")
    assert pairs[0].query.image == bytes(ex["image"]) and pairs[0].positive.instruction is None


def test_dior_referring_and_region_caption(built):
    ex, info = example(built, "dior_rsvg", "validation", "object_id", "1")
    [ref] = adapter("dior_rsvg", "referring_expression")(ex, info)
    assert ref.query.text == "the service area at the bottom right" and ref.query.boxes == ()
    assert ref.positive.boxes == (Box((22, 8, 47, 39)),)  # the region alone: its class name would be a text match
    assert ref.positive.image_size == (48, 40) and ref.positive.instruction == c("referring_expression")
    assert ref.source.id == "1" and ref.negatives == ()
    assert render_prompt(ref.positive) == (
        "<|vision_start|><|image_pad|><|vision_end|>\nRepresent the given region of the remote sensing image: "
        "<|box_start|>(458,200),(979,975)<|box_end|>")
    [cap] = adapter("dior_rsvg", "region_caption")(ex, info)
    assert cap.query.boxes == (Box((22, 8, 47, 39)),)  # no label on the query: it would give the answer away
    assert cap.positive == Item(text="the service area at the bottom right")
    assert cap.query.instruction == q("region_caption")


def test_fmow_class_geo_and_unlabelled_test_split(built):
    ex, info = example(built, "fmow", "train", "image_id", "airport_0_0_rgb")
    lat, lon = float(ex["lat"]), float(ex["lon"])  # full float64, as the builder test checks
    assert (lat, lon) == pytest.approx((50.0 + 0.013 / 12, 10.0 + 0.02 / 12), abs=1e-12)
    [geo] = adapter("fmow", "semantic_geo_localization")(ex, info)
    assert geo.positive == Item(geo=Geo(lat, lon)) and geo.query.image_size == (40, 32)
    assert render_prompt(geo.positive) == "latitude 50.0011, longitude 10.0017"
    [ret] = adapter("fmow", "geo_image_retrieval")(ex, info)
    assert ret.query == Item(text="airport", geo=Geo(lat, lon), instruction=q("geo_image_retrieval"))
    assert ret.positive.image == bytes(ex["image"]) and ret.positive.instruction == c("geo_image_retrieval")
    [cls] = adapter("fmow", "scene_classification")(ex, info)
    assert cls.positive.text == "airport"
    test_ex, test_info = example(built, "fmow", "test", "image_id", "0000001_0_rgb")
    with pytest.raises(RecordError, match=r"field label: label -1 is not a class index in \[0, 63\)"):
        adapters.scene_classification(test_ex, test_info)


def test_skyscript_geo_keeps_its_footprint(built):
    ex, info = example(built, "skyscript/top30pct", "train", "image_id", "images2/w123456_CH_19.jpg")
    [geo] = adapter("skyscript", "semantic_geo_localization")(ex, info)
    got = geo.positive.geo
    assert (got.lat, got.lon) == pytest.approx((47.371, 8.541), abs=1e-12)
    assert got.bbox_lonlat == (8.540, 47.370, 8.542, 47.372) and geo.positive.text is None
    rets = adapter("skyscript", "geo_image_retrieval")(ex, info)
    assert [p.query.text for p in rets] == ["a swimming pool", "a swimming pool next to a building"]
    assert render_prompt(rets[1].query) == (
        "Find the remote sensing image of the given location that matches the description: "
        "a swimming pool next to a building latitude 47.3710, longitude 8.5410")


def test_geochat_referring_set_and_rotated_region(built):
    ex, info = example(built, "geochat_bench/referring", "test", "question_id", "0")
    [ref] = adapter("geochat_bench", "referring_expression")(ex, info)
    assert ref.query.text == "the small vehicle at the top left"
    assert ref.positive.boxes == (Box((2, 3, 12, 9)), Box((29, 20, 45, 30)))  # one expression, both boxes
    with pytest.raises(RecordError, match="field captions: GeoChat-Bench region captions come from"):
        adapters.region_caption(ex, info)
    ex, info = example(built, "geochat_bench/region_captioning", "test", "question_id", "1")
    [cap] = adapter("geochat_bench", "region_caption")(ex, info)
    assert cap.query.boxes == (Box((8, 16, 24, 24), angle=90.0),) and cap.source.id == "1"
    assert render_prompt(cap.query, box_format="geochat").endswith("{<20><40><60><60>|<90>}")


def test_vrsbench_other_boxes_are_hard_negatives(built):
    ex, info = example(built, "vrsbench", "train", "image_id", "P0003_0002.png")
    refs = adapter("vrsbench", "referring_expression")(ex, info)
    assert [p.query.text for p in refs] == ["the ship closest to the pier end", "the long pier along the top edge"]
    assert refs[0].positive.boxes == (Box((16, 12, 40, 36)),)
    assert [n.boxes for n in refs[0].negatives] == [(Box((0, 0, 64, 12)),)]
    assert refs[0].negatives[0].instruction == c("referring_expression")
    assert refs[1].source.id == "P0003_0002.png#object1"
    caps = adapter("vrsbench", "region_caption")(ex, info)
    assert caps[0].negatives == (Item(text="the long pier along the top edge"),)
    qa = adapter("vrsbench", "vqa")(ex, info)
    assert [p.positive.text for p in qa] == ["2", "Yes"]


def test_registry_covers_every_task_kind_and_names_what_exists():
    assert {t for _, t in adapters.ADAPTERS} == set(TASK_KINDS)
    # composed retrieval has no public dataset: only the synthetic GeoScenes world (or ready-made pairs) give it
    assert {b for b, t in adapters.ADAPTERS if t == "composed_retrieval"} == {"geoscenes", "pairs"}
    with pytest.raises(ValueError, match="no adapter for dataset 'rs_scenes/aid' and task 'vqa'; "
                                         "rs_scenes offers scene_classification"):
        adapter("rs_scenes/aid", "vqa")
    with pytest.raises(ValueError, match="unknown task kind 'captioning'"):
        adapter("rs_scenes", "captioning")


def test_bad_text_and_box_name_the_field():
    info = SourceInfo("rsvqa/lr", "train")
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    ex = {"image": png.getvalue(), "image_id": b"7", "image_size": np.array([8, 8], np.int32),
          "qa": {"question": np.array([b"is there \xff water?"], object), "answer": np.array([b"no"], object)}}
    with pytest.raises(RecordError, match=r"field question\[0\]: invalid UTF-8 \(byte 0xff at offset 9\)"):
        adapters.vqa(ex, info)
    ex = {"image": png.getvalue(), "image_id": b"7", "image_size": np.array([8, 8], np.int32),
          "boxes": np.array([[1, 1, 9, 4]], np.float32), "expressions": np.array([b"x"], object),
          "box_labels": np.array([b"car"], object)}
    with pytest.raises(RecordError, match=r"field boxes \(boxes\[0\].xyxy\): box \[1, 1, 9, 4\] lies outside the "
                                          r"8x8 image"):
        adapters.region_caption(ex, SourceInfo("vrsbench", "train"))


def test_pair_json_reads_ready_made_pairs():
    raw = (b'{"query": {"text": "a red roof", "image": {"bytes_b64": "iVBORw=="}}, "positive": {"text": "x"}, '
           b'"task": "composed_retrieval", "source": {"dataset": "geoscenes", "split": "train", "id": "9"}}')
    [pair] = adapters.pair_json(raw, SourceInfo("pairs", "train"))
    assert pair.task == "composed_retrieval" and pair.query.image == b"\x89PNG" and pair.source.id == "9"
    with pytest.raises(RecordError, match=r"invalid UTF-8 \(byte 0xff"):
        adapters.pair_json(b'{"query": "\xff"}', SourceInfo("pairs", "train"))


def test_geoscenes_composed_retrieval_and_indexed_expressions(built):
    ex, info = example(built, "geoscenes/tiny", "train", "image_id", "train_000004")
    [pair] = adapter("geoscenes/tiny", "composed_retrieval")(ex, info)
    composed = ex["composed"]
    assert pair.query.text == composed["change"].decode() and pair.query.image == bytes(ex["image"])
    assert pair.query.instruction == q("composed_retrieval")
    assert pair.positive == Item(image=bytes(composed["target_image"]), image_size=(112, 112),
                                 instruction=c("composed_retrieval"))
    assert pair.negatives == (Item(image=bytes(ex["image"]), image_size=(112, 112),
                                   instruction=c("composed_retrieval")),)  # the unchanged reference
    refs = adapter("geoscenes", "referring_expression")(ex, info)
    boxes = np.asarray(ex["boxes"])
    for pair, expression, index in zip(refs, ex["expressions"], ex["expression_box_index"]):
        assert pair.query.text == expression.decode() and pair.source.id == f"train_000004#object{index}"
        assert pair.positive.boxes[0].xyxy == tuple(boxes[index].tolist())
        assert len(pair.negatives) == len(boxes) - 1
    caps = adapter("geoscenes", "region_caption")(ex, info)
    assert [p.positive.text for p in caps] == [t.decode() for t in ex["region_captions"]]
    [geo] = adapter("geoscenes", "geo_image_retrieval")(ex, info)
    assert geo.query.text == ex["place_description"].decode()
    [where] = adapter("geoscenes", "semantic_geo_localization")(ex, info)
    assert where.positive.text == ex["place_description"].decode() and where.positive.geo == geo.query.geo
    assert where.query.image == geo.positive.image


def test_tfds_task_reads_encoded_images_into_a_pipeline_step(built, data_dir, tmp_path):
    from vlm2geovec_jax.inputs.image import ImageConfig
    from vlm2geovec_jax.inputs.pipeline import Pipeline, PipelineConfig, tfds_task
    from vlm2geovec_jax.inputs.tokenizer import Tokenizer, build_demo_tokenizer
    from vlm2geovec_jax.models.presets import model_config

    tasks = [tfds_task("geoscenes/tiny", "composed_retrieval", split="train", data_dir=data_dir),
             tfds_task("rs_scenes/aid", "scene_classification", split="train", data_dir=data_dir)]
    assert tasks[1].info.class_names == ("Airport", "BareLand") and tasks[0].name == "geoscenes/tiny:composed_retrieval"
    assert tasks[0].source[0]["composed"]["target_image"][:4] == b"\x89PNG"  # nested images stay encoded too
    tok = Tokenizer.from_dir(build_demo_tokenizer(tmp_path))
    p = Pipeline(tasks, tokenizer=tok, image_config=ImageConfig(max_pixels=56 * 56), model_cfg=model_config("tiny"),
                 config=PipelineConfig(sub_batch_size=2, sub_batches=2, num_negatives=1, length_buckets=(64, 128)))
    step = p[0]
    assert step["query_valid"].all() and list(step["tasks"]) == p.tasks_of(0)
    for j, task in enumerate(step["tasks"]):
        group = step["target_valid"][4 * j:4 * j + 4]  # 2 queries x (positive + 1 negative)
        assert list(group) == ([True] * 4 if "composed" in task else [True, False, True, False])
