"""TFDS builders under data/ for geo-located and region sets (fMoW, SkyScript, GeoChat-Bench, VRSBench)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from dataset_utils import build, builder_module, by_id, copy_fixture, fixture
from vlm2geovec_jax.inputs.errors import RecordError


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


@pytest.mark.parametrize("box,message", [
    ("{<10><25><101><75>|<0>}", "value 101 over 100 in GeoChat box '{<10><25><101><75>|<0>}'"),
    ("{<10><25><50><75>|<361>}", "angle 361 outside [0, 360] degrees in GeoChat box")])
def test_geochat_box_string_out_of_range_is_a_record_error(tmp_path, box, message):
    manual = copy_fixture("geochat_bench", None, tmp_path)
    path = manual / "GeoChat-Bench" / "region_captioning.jsonl"
    path.write_text(path.read_text().replace("{<20><40><60><60>|<90>}", box))
    with pytest.raises(RecordError) as err:
        build("geochat_bench", "region_captioning", manual, tmp_path / "out")
    assert (err.value.file, err.value.record, err.value.field) == (str(path), "line 2 (question_id 1)", "question")
    assert message in str(err.value)


def test_geochat_reads_the_instruct_image_tree_wherever_it_was_unzipped(tmp_path):
    """images.zip unzipped into a folder of the user's own, the benchmark files one level up: same examples."""
    manual = tmp_path / "manual"
    shutil.copytree(fixture("geochat_bench") / "GeoChat-Bench", manual / "bench")
    shutil.copytree(fixture("geochat_bench") / "share", manual / "GeoChat_Instruct" / "images" / "share")
    moved = build("geochat_bench", "referring", manual, tmp_path / "a")
    assert len(moved["test"]) == 2
    np.testing.assert_equal(moved, build("geochat_bench", "referring", fixture("geochat_bench"), tmp_path / "b"))
    shutil.rmtree(manual / "GeoChat_Instruct")
    with pytest.raises(RecordError, match="expected a folder named 'final_images_llava' in the manual directory"):
        build("geochat_bench", "referring", manual, tmp_path / "c")


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
