"""TFDS builders under data/: each is built from its tiny real-format fixture and read back without TF."""
from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from dataset_utils import DATA, build, builder_module, by_id, copy_fixture, fixture
from vlm2geovec_jax.inputs import tfds_common
from vlm2geovec_jax.inputs.errors import RecordError


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


# ---------------------------------------------------------------- archives as they unzip


def _jpeg(path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def test_scenes_tiny_classes_build_and_empty_splits_are_not_written(tmp_path):
    """One and two images a class: no validation image at all, so no validation split; zip debris skipped."""
    manual = tmp_path / "manual"
    _jpeg(manual / "AID" / "Pond" / "pond_1.jpg", 10)
    _jpeg(manual / "AID" / "Port" / "port_1.jpg", 20)
    _jpeg(manual / "AID" / "Port" / "port_2.jpg", 30)
    (manual / "__MACOSX" / "AID" / "Pond").mkdir(parents=True)
    (manual / "__MACOSX" / "AID" / "Pond" / "._pond_1.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (manual / "AID" / "Port" / "._port_1.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    splits = build("rs_scenes", "aid", manual, tmp_path / "out")
    ids = {s: sorted(ex["image_id"] for ex in v) for s, v in splits.items()}
    # 60/20/20 by floor: a class of 1 is all test; of 2, floor(1.2) = 1 train, then test, in hash order
    first, second = builder_module("rs_scenes").hash_order(["Port/port_1.jpg", "Port/port_2.jpg"])
    assert ids == {"train": [first], "test": sorted(["Pond/pond_1.jpg", second])}
    out = tmp_path / "out" / "rs_scenes" / "aid" / "1.0.0"
    assert not list(out.glob("*validation*"))
    names = tfds.data_source("rs_scenes/aid", data_dir=str(tmp_path / "out"), split="test").dataset_info.features[
        "label"].names
    assert names == ["Pond", "Port"]


def test_scenes_nested_category_folders_label_by_leaf(tmp_path):
    """RSI-CB256 as it unzips: <category>/<class>/<image>; the label is the leaf, the id keeps the category."""
    manual = tmp_path / "manual"
    for i in range(3):
        _jpeg(manual / "RSI-CB256" / "transportation" / "airport_runway" / f"runway({i}).tif", 40 + i)
        _jpeg(manual / "RSI-CB256" / "water area" / "river" / f"river({i}).tif", 80 + i)
    splits = build("rs_scenes", "rsicb256", manual, tmp_path / "out")
    assert {s: len(v) for s, v in splits.items()} == {"train": 2, "validation": 2, "test": 2}
    ex = {e["image_id"]: e for v in splits.values() for e in v}
    assert sorted(ex) == sorted([f"transportation/airport_runway/runway({i}).tif" for i in range(3)]
                                + [f"water area/river/river({i}).tif" for i in range(3)])
    assert ex["water area/river/river(1).tif"]["label"] == 1  # classes sorted: airport_runway, river


def test_captions_json_and_images_from_separate_archives(tmp_path):
    """RSICD's JSON and its RSICD_images archive unzipped into different folders build as the fixture does."""
    manual = tmp_path / "manual"
    (manual / "RSICD_optimal").mkdir(parents=True)
    shutil.copy(fixture("rs_captions", "rsicd") / "dataset_rsicd.json", manual / "RSICD_optimal")
    shutil.copytree(fixture("rs_captions", "rsicd") / "RSICD_images", manual / "images_zip" / "RSICD_images")
    splits = build("rs_captions", "rsicd", manual, tmp_path / "out")
    assert {s: len(v) for s, v in splits.items()} == {"train": 1, "validation": 1, "test": 3}
    (manual / "images_zip" / "RSICD_images").rename(manual / "images_zip" / "pictures")
    with pytest.raises(RecordError, match="expected a folder named 'RSICD_images' or 'images'"):
        build("rs_captions", "rsicd", manual, tmp_path / "out2")


@pytest.mark.parametrize("name,config,sub,sizes", [
    ("dior_rsvg", None, "", {"train": 3, "validation": 2, "test": 3}),
    ("rsvqa", "lr", "lr", {"train": 1, "validation": 1, "test": 2}),
    ("vrsbench", None, "", {"train": 1, "validation": 2}),
    ("skyscript", "top30pct", "", {"train": 2, "validation": 1, "test": 3}),
])
def test_builders_find_the_release_inside_a_wrapper_folder(tmp_path, name, config, sub, sizes):
    """The same release one folder down (unzipped into a folder of its own) builds the same splits."""
    manual = tmp_path / "manual"
    shutil.copytree(fixture(name, sub or None), manual / "downloads" / name, ignore=shutil.ignore_patterns("*.py"))
    splits = build(name, config, manual, tmp_path / "out")
    assert {s: len(v) for s, v in splits.items()} == sizes
