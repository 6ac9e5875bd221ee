"""TFDS builders under data/: each is built from its tiny real-format fixture and read back without TF."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from vlm2geovec_jax.inputs import tfds_common
from vlm2geovec_jax.inputs.errors import RecordError

DATA = Path(__file__).resolve().parents[1] / "data"


def build(name: str, config: str | None, manual_dir: Path, data_dir: Path) -> dict[str, list[dict]]:
    """Builds one config and returns every split as a list of decoded examples (text as str)."""
    builder = tfds_common.build(DATA / name, manual_dir=manual_dir, data_dir=data_dir, config=config)
    return {split: [_decode(ex) for ex in builder.as_data_source(split=split)] for split in builder.info.splits}


def _decode(value):
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [_decode(v) for v in value.tolist()]
    return value


def fixture(name: str, config: str | None = None) -> Path:
    return DATA / name / "dummy_data" / (config or "")


def copy_fixture(name: str, config: str | None, tmp_path: Path) -> Path:
    dst = tmp_path / "manual"
    shutil.copytree(fixture(name, config), dst, ignore=shutil.ignore_patterns("*.py"))
    return dst


def builder_module(name: str):
    """The imported module of data/<name>, for its pure helper functions."""
    import sys
    return sys.modules[tfds_common.builder_cls_from_path(DATA / name).__module__]


def by_id(examples: list[dict], key: str = "image_id") -> dict[str, dict]:
    return {ex[key]: ex for ex in examples}


# ---------------------------------------------------------------- TFDS's own RS builders read without TF


@pytest.mark.parametrize("name,image_shape,num_classes", [
    ("uc_merced", None, 21), ("eurosat/rgb", (64, 64, 3), 10), ("resisc45", (256, 256, 3), 45)])
def test_tfds_catalog_builders_read_without_tf(name, image_shape, num_classes):
    with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
        source = tfds.data_source(name, split="train")
        assert len(source) == 3
        ex = source[0]
    assert ex["image"].dtype == np.uint8 and ex["image"].ndim == 3 and ex["image"].shape[-1] == 3
    if image_shape is not None:
        assert ex["image"].shape == image_shape
    assert 0 <= int(ex["label"]) < num_classes


# ---------------------------------------------------------------- build command


def test_builder_cls_from_path_names_the_dataset():
    cls = tfds_common.builder_cls_from_path(DATA / "rs_scenes")
    assert cls.name == "rs_scenes"
    assert [c.name for c in cls.BUILDER_CONFIGS][:2] == ["patternnet", "aid"]


def test_cli_equivalent_builds_array_record(tmp_path):
    argv = ["tfds_common", str(DATA / "rs_scenes"), "--manual_dir", str(fixture("rs_scenes", "aid")),
            "--data_dir", str(tmp_path), "--config", "aid"]
    with pytest.raises(SystemExit) as exit_info:
        tfds_common.main(argv)
    assert exit_info.value.code in (0, None)
    out = tmp_path / "rs_scenes" / "aid" / "1.0.0"
    assert sorted(p.name for p in out.glob("*.array_record*")) == [
        f"rs_scenes-{s}.array_record-00000-of-00001" for s in ("test", "train", "validation")]
    source = tfds.data_source("rs_scenes/aid", data_dir=str(tmp_path), split="test")
    assert len(source) == 2


def test_encode_image_passes_jpeg_through_and_converts_16bit_tiff(tmp_path):
    jpeg = fixture("rs_scenes", "aid") / "AID" / "Airport" / "airport_1.jpg"
    enc = tfds_common.encode_image(jpeg, record="r")
    assert enc.data == jpeg.read_bytes() and list(enc.size) == [32, 32]
    tif = tmp_path / "grey16.tif"
    Image.fromarray((np.arange(24 * 20, dtype=np.uint16).reshape(20, 24) * 100)).save(tif)
    enc = tfds_common.encode_image(tif, record="r")
    decoded = np.asarray(Image.open(io.BytesIO(enc.data)))
    assert enc.data[:8] == b"\x89PNG\r\n\x1a\n" and decoded.shape == (20, 24, 3) and list(enc.size) == [24, 20]
    expected = ((np.arange(24 * 20).reshape(20, 24) * 100) >> 8).astype(np.uint8)
    np.testing.assert_array_equal(decoded[..., 0], expected)  # full-range 16 -> 8 bit, not clipped at 255


# ---------------------------------------------------------------- 1. class-per-folder scenes


def test_scenes_patternnet(tmp_path):
    splits = build("rs_scenes", "patternnet", fixture("rs_scenes", "patternnet"), tmp_path)
    assert {s: len(v) for s, v in splits.items()} == {"train": 3, "validation": 3, "test": 3}
    ex = by_id(splits["validation"])["beach/beach002.jpg"]
    assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
    assert list(ex["image_size"]) == [32, 32] and ex["label"] == 1  # classes sorted: airplane, beach


def test_scenes_aid_split_is_hash_ordered_per_class(tmp_path):
    """60/20/20 per class over SHA-256 name order, not listing order: bareland_1 hashes last."""
    splits = build("rs_scenes", "aid", fixture("rs_scenes", "aid"), tmp_path)
    ids = {s: sorted(ex["image_id"] for ex in v) for s, v in splits.items()}
    assert ids == {"train": ["Airport/airport_1.jpg", "BareLand/bareland_2.jpg"],
                   "validation": ["Airport/airport_2.jpg", "BareLand/bareland_3.jpg"],
                   "test": ["Airport/airport_3.jpg", "BareLand/bareland_1.jpg"]}
    names = tfds.data_source("rs_scenes/aid", data_dir=str(tmp_path), split="train").dataset_info.features[
        "label"].names
    assert names == ["Airport", "BareLand"]


def test_scene_split_fractions_per_class():
    split_of = builder_module("rs_scenes").split_of
    for n, expected in ((800, (480, 160, 160)), (5, (3, 1, 1)), (3, (1, 1, 1))):
        got = [split_of(i, n) for i in range(n)]
        assert tuple(got.count(s) for s in ("train", "validation", "test")) == expected
        assert got == sorted(got, key=["train", "validation", "test"].index)  # contiguous in hash order


def test_scenes_unreadable_image_is_a_record_error(tmp_path):
    manual = copy_fixture("rs_scenes", "aid", tmp_path)
    bad = manual / "AID" / "Airport" / "airport_2.jpg"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(RecordError) as err:
        build("rs_scenes", "aid", manual, tmp_path / "out")
    assert err.value.file == str(bad) and err.value.record == "Airport/airport_2.jpg"
    assert err.value.field == "image" and "unreadable image" in str(err.value)


# ---------------------------------------------------------------- 2. Karpathy caption sets


def test_captions_rsicd(tmp_path):
    splits = build("rs_captions", "rsicd", fixture("rs_captions", "rsicd"), tmp_path)
    assert {s: len(v) for s, v in splits.items()} == {"train": 1, "validation": 1, "test": 3}
    ex = splits["train"][0]
    assert ex["image_id"] == "airport_1.jpg"
    assert ex["captions"] == ["many planes are parked next to a long building .",
                              "several airplanes are near the terminal .",
                              "many planes are parked next to a long building ."]  # duplicates kept
    assert splits["validation"][0]["image_id"] == "00012.jpg"


def test_captions_rsitmd_keywords_and_ucm_tif(tmp_path):
    rsitmd = build("rs_captions", "rsitmd", fixture("rs_captions", "rsitmd"), tmp_path)
    assert sorted(rsitmd) == ["test", "train"]
    assert rsitmd["train"][0]["keywords"] == ["boat", "harbor"]
    ucm = build("rs_captions", "ucm_captions", fixture("rs_captions", "ucm_captions"), tmp_path)
    ex = ucm["test"][0]
    assert ex["image_id"] == "3.tif" and ex["captions"] == ["a river flows through the forest ."]
    original = np.asarray(Image.open(fixture("rs_captions", "ucm_captions") / "imgs" / "3.tif").convert("RGB"))
    np.testing.assert_array_equal(ex["image"], original)  # TIFF re-encoded losslessly as PNG
    assert "keywords" not in ex


def test_captions_missing_raw_is_a_record_error(tmp_path):
    import json
    manual = copy_fixture("rs_captions", "rsicd", tmp_path)
    path = manual / "dataset_rsicd.json"
    doc = json.loads(path.read_text())
    del doc["images"][2]["sentences"][1]["raw"]
    path.write_text(json.dumps(doc))
    with pytest.raises(RecordError) as err:
        build("rs_captions", "rsicd", manual, tmp_path / "out")
    assert (err.value.file, err.value.record, err.value.field) == (str(path), "beach_3.jpg", "sentences[1].raw")


# ---------------------------------------------------------------- 3. DIOR-RSVG (VOC XML + object-index splits)


def test_dior_rsvg_splits_index_global_objects(tmp_path):
    splits = build("dior_rsvg", None, fixture("dior_rsvg"), tmp_path)
    got = {s: [(ex["object_id"], ex["image_id"], ex["box_labels"][0]) for ex in v] for s, v in splits.items()}
    assert {s: sorted(v) for s, v in got.items()} == {
        "train": [(0, "00001.jpg", "vehicle"), (3, "00002.jpg", "storagetank"), (4, "00003.jpg", "ship")],
        "validation": [(1, "00001.jpg", "Expressway-Service-area"), (6, "00003.jpg", "ship")],
        "test": [(2, "00002.jpg", "airplane"), (5, "00003.jpg", "harbor"), (7, "00003.jpg", "bridge")]}
    ex = by_id(splits["validation"], "object_id")[1]
    assert ex["expressions"] == ["the service area at the bottom right"]
    assert ex["image"].shape == (40, 48, 3) and list(ex["image_size"]) == [48, 40]
    assert ex["boxes"].dtype == np.float32
    np.testing.assert_array_equal(ex["boxes"], [[22, 8, 47, 39]])  # VOC pixel xyxy kept as-is


def test_dior_rsvg_box_outside_image_is_a_record_error(tmp_path):
    manual = copy_fixture("dior_rsvg", None, tmp_path)
    xml = manual / "DIOR_RSVG" / "Annotations" / "00002.xml"
    xml.write_text(xml.read_text().replace("<xmax>48</xmax>", "<xmax>49</xmax>"))
    with pytest.raises(RecordError) as err:
        build("dior_rsvg", None, manual, tmp_path / "out")
    assert (err.value.file, err.value.record, err.value.field) == (str(xml), "object[1]", "bndbox")
    assert "box 0 = (30, 20, 49, 40) is not inside the 48x40 image" in str(err.value)


def test_dior_rsvg_split_index_past_the_objects_is_a_record_error(tmp_path):
    manual = copy_fixture("dior_rsvg", None, tmp_path)
    (manual / "DIOR_RSVG" / "test.txt").write_text("2\n8\n")
    with pytest.raises(RecordError, match=r"line 2, field index: expected an object index in \[0, 8\), got '8'"):
        build("dior_rsvg", None, manual, tmp_path / "out")


def test_dior_rsvg_object_in_two_splits_is_a_record_error(tmp_path):
    manual = copy_fixture("dior_rsvg", None, tmp_path)
    (manual / "DIOR_RSVG" / "test.txt").write_text("2\n1\n")
    with pytest.raises(RecordError, match=r"test.txt, record object 1, field index: object 1 is in both val.txt"):
        build("dior_rsvg", None, manual, tmp_path / "out")


# ---------------------------------------------------------------- 4. RSVQA-LR / -HR (id-linked JSON)


def test_rsvqa_lr_links_questions_and_answers_by_id(tmp_path):
    splits = build("rsvqa", "lr", fixture("rsvqa", "lr"), tmp_path)
    assert {s: len(v) for s, v in splits.items()} == {"train": 1, "validation": 1, "test": 2}
    qa = splits["train"][0]["qa"]
    assert splits["train"][0]["image_id"] == "0"
    assert list(qa["question_id"]) == [0, 1]  # question 2 is inactive
    assert qa["question"] == ["Is there a road?", "How many buildings are there?"]
    assert qa["answer"] == ["yes", "12"]  # answer id 7, not the question's position
    assert qa["question_type"] == ["presence", "count"]
    assert by_id(splits["test"])["2"]["qa"]["answer"] == ["urban"]


def test_rsvqa_hr_has_philadelphia_test(tmp_path):
    splits = build("rsvqa", "hr", fixture("rsvqa", "hr"), tmp_path)
    assert sorted(splits) == ["test", "test_phili", "train", "validation"]
    assert splits["test_phili"][0]["image_id"] == "13"
    assert splits["test_phili"][0]["qa"]["question_type"] == ["area"]


def test_rsvqa_dangling_answer_id_is_a_record_error(tmp_path):
    import json
    manual = copy_fixture("rsvqa", "lr", tmp_path)
    path = manual / "LR_split_val_questions.json"
    doc = json.loads(path.read_text())
    doc["questions"][0]["answers_ids"] = [99]
    path.write_text(json.dumps(doc))
    with pytest.raises(RecordError) as err:
        build("rsvqa", "lr", manual, tmp_path / "out")
    assert (err.value.file, err.value.record, err.value.field) == (str(path), 3, "answers_ids")
    assert "id 99 not found in LR_split_val_answers.json" in str(err.value)


# ---------------------------------------------------------------- 5. fMoW (per-image metadata JSON)


def test_fmow_boxes_geo_and_labels(tmp_path):
    splits = build("fmow", None, fixture("fmow"), tmp_path)
    assert {s: len(v) for s, v in splits.items()} == {"train": 2, "validation": 3, "test": 1}
    train = by_id(splits["train"])
    airport = train["airport_0_0_rgb"]
    assert airport["label"] == 0 and airport["box_labels"] == ["airport", "airport"]
    assert list(airport["image_size"]) == [40, 32] and airport["image"].shape == (32, 40, 3)
    np.testing.assert_array_equal(airport["boxes"], [[5, 6, 25, 16], [0, 0, 40, 32]])  # [x,y,w,h] -> xyxy
    # area centroid of the trapezoid footprint (the vertex mean would be 50.001, 10.002), full float64
    assert float(airport["lat"]) == pytest.approx(50.0 + 0.013 / 12, abs=1e-12)
    assert float(airport["lon"]) == pytest.approx(10.0 + 0.02 / 12, abs=1e-12)
    zoo = train["zoo_3_1_rgb"]  # bounding_boxes given as one dict
    np.testing.assert_array_equal(zoo["boxes"], [[1, 2, 4, 6]])
    assert (float(zoo["lat"]), float(zoo["lon"])) == pytest.approx((37.701, -122.499), abs=1e-12)
    assert zoo["country_code"] == "USA" and zoo["utm"] == "10S"
    port = by_id(splits["validation"])["port_7_0_rgb"]
    assert port["label"] == 38  # "port" in the 63-name list
    assert float(port["lat"]) == pytest.approx(-33.899, abs=1e-12)
    test = splits["test"][0]
    assert test["label"] == -1 and test["box_labels"] == [""]


def test_fmow_wkt_centroid_matches_brute_force():
    wkt_polygon_centroid = builder_module("fmow").wkt_polygon_centroid
    ring = [(-3.0, 40.0), (-2.0, 40.2), (-2.2, 41.0), (-3.1, 40.9), (-3.4, 40.5)]
    wkt = "POLYGON ((" + ", ".join(f"{x} {y}" for x, y in ring + ring[:1]) + "))"
    lat, lon = wkt_polygon_centroid(wkt)
    # brute force: mean of grid points inside the (convex) polygon
    xs, ys = np.meshgrid(np.linspace(-3.5, -1.9, 1601), np.linspace(39.9, 41.1, 1201))
    inside = np.ones_like(xs, bool)
    for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1]):
        inside &= (x2 - x1) * (ys - y1) - (y2 - y1) * (xs - x1) >= 0
    assert (lat, lon) == pytest.approx((ys[inside].mean(), xs[inside].mean()), abs=2e-3)


def test_fmow_latitude_out_of_range_is_a_record_error(tmp_path):
    import json
    manual = copy_fixture("fmow", None, tmp_path)
    path = manual / "val" / "port" / "port_7" / "port_7_0_rgb.json"
    meta = json.loads(path.read_text())
    meta["raw_location"] = "POLYGON ((151.2 91.0, 151.3 91.0, 151.3 91.1, 151.2 91.0))"
    path.write_text(json.dumps(meta))
    with pytest.raises(RecordError) as err:
        build("fmow", None, manual, tmp_path / "out")
    assert (err.value.file, err.value.record, err.value.field) == (str(path), "port_7_0_rgb", "raw_location")
    assert "outside [-90, 90]" in str(err.value)


# ---------------------------------------------------------------- 6. SkyScript (caption CSV + lon/lat box pickles)


def test_skyscript_captions_and_box_centre(tmp_path):
    splits = build("skyscript", "top30pct", fixture("skyscript"), tmp_path)
    assert {s: len(v) for s, v in splits.items()} == {"train": 2, "validation": 1, "test": 3}
    pool = by_id(splits["train"])["images2/w123456_CH_19.jpg"]
    assert pool["captions"] == ["a swimming pool", "a swimming pool next to a building"]
    assert float(pool["lat"]) == pytest.approx(47.371, abs=1e-12)  # (south + north) / 2, not float32
    assert float(pool["lon"]) == pytest.approx(8.541, abs=1e-12)
    np.testing.assert_array_equal(pool["bbox_lonlat"], [8.540, 47.370, 8.542, 47.372])
    assert list(pool["image_size"]) == [36, 24] and pool["image"].shape == (24, 36, 3)
    assert by_id(splits["train"])["images4/n987_US_20.jpg"]["captions"] == ["a wind turbine"]
    runway = splits["validation"][0]  # box across the antimeridian: centre at 180 = -180, not 0
    assert abs(float(runway["lon"])) == pytest.approx(180.0) and float(runway["lat"]) == pytest.approx(-16.0)


def test_skyscript_bad_latitude_and_code_pickles_are_record_errors(tmp_path):
    import os
    import pickle
    manual = copy_fixture("skyscript", None, tmp_path)
    meta = manual / "meta2" / "w777_CH_21.pickle"
    meta.write_bytes(pickle.dumps({"box": (7.44, 46.94, 7.442, 95.0)}))
    with pytest.raises(RecordError) as err:
        build("skyscript", "top30pct", manual, tmp_path / "out")
    assert (err.value.file, err.value.record, err.value.field) == (str(meta), "w777_CH_21", "box")
    assert "[7.44, 46.94, 7.442, 95.0] is not [west, south, east, north]" in str(err.value)
    meta.write_bytes(pickle.dumps({"box": os.getcwd}))  # a pickle that would import and call code
    with pytest.raises(RecordError, match=r"refusing to load .*getcwd"):
        build("skyscript", "top30pct", manual, tmp_path / "out2")


# ---------------------------------------------------------------- 7. GeoChat-Bench (jsonl, 0-100 box strings)


def test_geochat_referring_pixel_polygons_and_xyxy(tmp_path):
    splits = build("geochat_bench", "referring", fixture("geochat_bench"), tmp_path)
    assert list(splits) == ["test"] and len(splits["test"]) == 2
    ex = by_id(splits["test"], "question_id")
    first = ex["0"]
    assert first["expressions"] == ["the small vehicle at the top left"] and first["image_id"] == "P0003_0001"
    np.testing.assert_array_equal(first["boxes"], [[2, 3, 12, 9], [29, 20, 45, 30]])  # polygon min/max
    np.testing.assert_array_equal(first["polygons"][1], [[30, 20], [45, 22], [44, 30], [29, 28]])
    assert first["obj_ids"] == ["4", "7"] and first["size_group"] == "small" and first["source"] == "SOTA"
    np.testing.assert_array_equal(ex["1"]["boxes"], [[10, 12, 30, 36]])


def test_geochat_region_box_strings_to_pixels(tmp_path):
    splits = build("geochat_bench", "region_captioning", fixture("geochat_bench"), tmp_path)
    ex = by_id(splits["test"], "question_id")
    plane = ex["0"]  # {<10><25><50><75>|<0>} on a 50x40 image: x * 50 / 100, y * 40 / 100
    assert list(plane["image_size"]) == [50, 40]
    np.testing.assert_array_equal(plane["boxes"], [[5, 10, 25, 30]])
    assert plane["captions"] == ["a white plane parked near the terminal"]
    ship = ex["1"]  # {<20><40><60><60>|<90>} on 40x40: box (8,16)-(24,24), corners turned 90 deg about (16,20)
    np.testing.assert_array_equal(ship["boxes"], [[8, 16, 24, 24]])
    assert list(ship["angles"]) == [90.0]
    np.testing.assert_allclose(ship["polygons"][0], [[20, 12], [20, 28], [12, 28], [12, 12]], atol=1e-5)


@pytest.mark.parametrize("box,message", [("{<10><25><101><75>|<0>}", "must be percentages in [0, 100]"),
                                         ("{<10><25><50><75>|<361>}", "angle 361 must be in [0, 360]")])
def test_geochat_box_string_out_of_range_is_a_record_error(tmp_path, box, message):
    manual = copy_fixture("geochat_bench", None, tmp_path)
    path = manual / "region_captioning.jsonl"
    path.write_text(path.read_text().replace("{<20><40><60><60>|<90>}", box))
    with pytest.raises(RecordError) as err:
        build("geochat_bench", "region_captioning", manual, tmp_path / "out")
    assert (err.value.file, err.value.record, err.value.field) == (str(path), "line 2 (question_id 1)", "question")
    assert message in str(err.value)


# ---------------------------------------------------------------- 8. VRSBench (per-image JSON, normalised corners)


def test_vrsbench_corners_captions_and_qa(tmp_path):
    splits = build("vrsbench", None, fixture("vrsbench"), tmp_path)
    assert {s: len(v) for s, v in splits.items()} == {"train": 1, "validation": 2}
    ex = splits["train"][0]
    assert ex["image_id"] == "P0003_0002.png" and list(ex["image_size"]) == [64, 48]
    np.testing.assert_array_equal(ex["polygons"][0], [[16, 24], [32, 12], [40, 24], [24, 36]])  # x*W, y*H
    np.testing.assert_array_equal(ex["boxes"], [[16, 12, 40, 36], [0, 0, 64, 12]])
    # round trip: pixel boxes / (W, H) give back the min/max of the normalised corners
    corners = np.array([0.25, 0.5, 0.5, 0.25, 0.625, 0.5, 0.375, 0.75]).reshape(4, 2)
    np.testing.assert_allclose(ex["boxes"][0] / [64, 48, 64, 48], [*corners.min(0), *corners.max(0)])
    assert ex["box_labels"] == ["ship", "harbor"] and list(ex["is_unique"]) == [True, False]
    assert ex["expressions"][0] == "the ship closest to the pier end"
    assert ex["qa"]["question_type"] == ["object quantity", "object existence"] and ex["qa"]["answer"] == ["2", "Yes"]
    assert by_id(splits["validation"])["00123_0001.png"]["captions"] == ["A small airport apron with one airplane."]


def test_vrsbench_corner_outside_unit_square_is_a_record_error(tmp_path):
    import json
    manual = copy_fixture("vrsbench", None, tmp_path)
    path = manual / "Annotations_val" / "00123_0001.json"
    ann = json.loads(path.read_text())
    ann["objects"][0]["obj_corner"][5] = 1.2
    path.write_text(json.dumps(ann))
    with pytest.raises(RecordError) as err:
        build("vrsbench", None, manual, tmp_path / "out")
    assert (err.value.file, err.value.record, err.value.field) == (
        str(path), "00123_0001.png", "objects[0].obj_corner")
    assert "must be normalised to [0, 1]" in str(err.value)
