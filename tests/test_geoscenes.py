"""GeoScenes: the synthetic world (determinism, geography, objects, text) and its TFDS builder."""
from __future__ import annotations

import io
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlm2geovec_jax.geoscenes.geography import cell_of, climate_belt, region_split
from vlm2geovec_jax.geoscenes.noise import stream_seed, value_noise
from vlm2geovec_jax.geoscenes.objects import _ALLOWED, position_name
from vlm2geovec_jax.geoscenes.terrain import Terrain
from vlm2geovec_jax.geoscenes.text import expression_text, referring_expression
from vlm2geovec_jax.geoscenes.tile import SceneObject, Tile
from vlm2geovec_jax.geoscenes.vocabulary import (COLORS, DESERT, ICE, KIND_BY_NAME, KINDS, MAX_ABS_LAT, NUMBERS,
                                                 SCENES, SPLITS, TILE_DEG, WATER, counted, join_words)
from vlm2geovec_jax.geoscenes.world import World
from vlm2geovec_jax.inputs import tfds_common
from vlm2geovec_jax.inputs.records import Geo

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=7)


@pytest.fixture(scope="module")
def tiles(world) -> list[Tile]:
    return [world.tile(split, i) for split in SPLITS for i in range(12)]


@pytest.fixture(scope="module")
def examples(world) -> list[dict]:
    return [world.example("train", i) for i in range(30)]


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        return np.asarray(im)


# ------------------------------------------------------------------------------------ determinism


def test_same_seed_same_example_different_seed_different_world(world):
    again = World(seed=7).example("test", 3)
    first = world.example("test", 3)
    assert first["image"] == again["image"] and first["composed"]["target_image"] == again["composed"]["target_image"]
    assert first["captions"] == again["captions"] and first["lat"] == again["lat"]
    other = World(seed=8).example("test", 3)
    assert other["image"] != first["image"] and other["lat"] != first["lat"]


def test_different_seeds_give_different_land_cover_maps():
    lat, lon = np.meshgrid(np.linspace(-75, 75, 31), np.linspace(-180, 175, 72), indexing="ij")
    a, _ = Terrain(0).classify(lat, lon)
    b, _ = Terrain(1).classify(lat, lon)
    assert (a != b).mean() > 0.3


def test_value_noise_wraps_at_the_antimeridian_and_stays_in_unit_range():
    lat = np.array([[-30.0, 10.0, 55.5]])
    wavelengths, salts = np.array([45.0, 0.703125]), np.array([3, 4], np.uint64)
    east = value_noise(lat, np.full_like(lat, 180.0), wavelengths, salts)
    west = value_noise(lat, np.full_like(lat, -180.0), wavelengths, salts)
    np.testing.assert_allclose(east, west, rtol=0, atol=1e-12)
    dense = value_noise(np.linspace(-89, 89, 500), np.linspace(-180, 180, 500), wavelengths, salts)
    assert dense.min() >= 0 and dense.max() <= 1 and dense.std() > 0.1


def test_stream_seed_is_a_fixed_function_of_its_parts():
    assert stream_seed(0, 1, 2) == stream_seed(0, 1, 2) != stream_seed(0, 2, 1)
    assert stream_seed(-1) == stream_seed((1 << 64) - 1)


# -------------------------------------------------------------------------------------- geography


def test_split_regions_are_the_documented_cell_lattice():
    cells = {(i, j): region_split(-90 + 15 * j + 7.5, -180 + 15 * i + 7.5) for i in range(24) for j in range(12)}
    for (i, j), split in cells.items():
        assert split == {0: "test", 1: "validation"}.get((i + 2 * j) % 5, "train")
    shares = Counter(cells.values())
    assert shares["test"] in range(56, 60) and shares["validation"] in range(56, 60)
    assert region_split(0.5, 0.5) == "train" and region_split(-82.0, -177.0) == "test"


def test_train_and_test_tiles_come_from_disjoint_regions(tiles):
    boxes = {s: [t.bbox_lonlat for t in tiles if t.split == s] for s in SPLITS}
    for split, footprints in boxes.items():
        for west, south, east, north in footprints:
            corners = [(south, west), (south, east), (north, west), (north, east)]
            assert {region_split(la, lo) for la, lo in corners} == {split}
            assert len({cell_of(la, lo) for la, lo in corners}) == 1
    for a in boxes["train"]:  # brute force: no train footprint touches a test or validation footprint
        for b in boxes["test"] + boxes["validation"]:
            assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]


def test_tile_centre_and_footprint_are_valid_named_coordinates(tiles):
    for t in tiles:
        assert abs(t.lat) <= MAX_ABS_LAT and -180 <= t.lon <= 180
        Geo(t.lat, t.lon, t.bbox_lonlat)  # raises RecordError if the point is outside its box
        west, south, east, north = t.bbox_lonlat
        assert north - south == pytest.approx(TILE_DEG)
        assert (east - west) * math.cos(math.radians(t.lat)) == pytest.approx(TILE_DEG, rel=1e-9)


def test_land_cover_follows_latitude():
    terrain = Terrain(3)
    lon = np.linspace(-180, 179, 360)

    def share(code: int, lats) -> float:
        la, lo = np.meshgrid(np.asarray(lats, float), lon, indexing="ij")
        codes, _ = terrain.classify(la, lo)
        land = codes != WATER
        return ((codes == code) & land).sum() / max(land.sum(), 1)

    assert share(ICE, [76, 78, -76, -78]) > 0.9
    assert share(ICE, np.linspace(-35, 35, 15)) == 0
    assert share(DESERT, [22, 25, 28, -22, -25, -28]) > 2 * share(DESERT, [48, 52, 56, -48, -52, -56])
    sea = Terrain(3).classify(*np.meshgrid(np.linspace(-60, 60, 41), lon, indexing="ij"))[0] == WATER
    assert 0.2 < sea.mean() < 0.6


def test_place_text_golden():
    assert climate_belt(41.2) == "northern temperate belt"
    assert climate_belt(-70.0) == "southern polar region"
    assert climate_belt(5.0) == "northern equatorial belt"


def test_place_description_names_the_place_and_its_belt_not_its_coordinates(examples):
    pattern = re.compile(r"^(an? |coastal waters).* in the (northern|southern) [a-z ]+$")
    for ex in examples:
        text = ex["place_description"]
        assert pattern.match(text), text
        assert text.endswith(climate_belt(ex["lat"]))
        assert not re.search(r"\d", text), text


# ---------------------------------------------------------------------------------------- objects


def test_boxes_are_inside_the_tile_and_are_exactly_the_drawn_pixels(tiles):
    n_objects = 0
    for t in tiles:
        img = t.render()
        changed = (img != t.background).any(-1)
        inside = np.zeros_like(changed)
        for obj in t.objects:
            x1, y1, x2, y2 = obj.xyxy
            assert 0 <= x1 < x2 <= t.size and 0 <= y1 < y2 <= t.size
            assert not inside[y1:y2, x1:x2].any(), "boxes overlap"
            inside[y1:y2, x1:x2] = True
            ys, xs = np.nonzero(changed[y1:y2, x1:x2])
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (0, 0, x2 - x1, y2 - y1)  # tight box
            colors = Counter(map(tuple, img[y1:y2, x1:x2][obj.mask].tolist()))
            assert colors.most_common(1)[0][0] == COLORS[obj.color]
            assert _ALLOWED[obj.kind.name][t.surface[y1:y2, x1:x2][obj.mask]].all()
            n_objects += 1
        assert not changed[~inside].any(), "pixels changed outside every box"
    assert n_objects > 20


def test_position_names_follow_thirds_of_the_tile():
    assert position_name((0, 0, 10, 10), 112) == "top-left"
    assert position_name((50, 50, 62, 62), 112) == "center"
    assert position_name((100, 40, 112, 60), 112) == "right"
    assert position_name((30, 100, 40, 112), 112) == "bottom-left"


def test_num_object_kinds_limits_the_kinds_everywhere():
    world = World(seed=2, num_object_kinds=2)
    for i in range(10):
        ex = world.example("train", i)
        labels = set(ex["box_labels"]) | set(ex["composed"]["target_box_labels"])
        assert labels <= {"building", "ship"}
        assert ex["label"] not in ("airport", "industrial_area")
        assert all("plane" not in qa["question"] for qa in ex["qa"])


def test_tile_size_224_scales_the_world():
    ex = World(seed=1, tile_size=224).example("validation", 0)
    assert decode_png(ex["image"]).shape == (224, 224, 3)
    assert ex["image_size"].tolist() == [224, 224]
    assert ex["boxes"].size == 0 or ex["boxes"].max() <= 224


# ------------------------------------------------------------------------------------------- text


def described_by(expression: str, obj: SceneObject) -> bool:
    """Brute force: does some subset of obj's attributes spell exactly this expression?"""
    return any(expression == expression_text(obj.kind, c, p) for c in (None, obj.color)
               for p in (None, obj.position))


def test_referring_expressions_single_out_one_object(world):
    checked = 0
    for i in range(25):
        t, ex = world.tile("train", i), world.example("train", i)
        assert len(ex["expressions"]) == len(ex["expression_box_index"])
        for expression, k in zip(ex["expressions"], ex["expression_box_index"]):
            matches = [j for j, o in enumerate(t.objects) if described_by(expression, o)]
            assert matches == [k], (expression, matches, k)
            assert ex["boxes"][k].tolist() == list(t.objects[k].xyxy)
            checked += 1
        # every object that CAN be singled out by kind/color/position gets an expression
        unique = {j for j, o in enumerate(t.objects)
                  if any(sum(o2.kind is o.kind and (c is None or o2.color == c) and (p is None or o2.position == p)
                             for o2 in t.objects) == 1 for c in (None, o.color) for p in (None, o.position))}
        assert set(ex["expression_box_index"].tolist()) == unique
    assert checked > 30


def test_referring_expression_golden():
    ship = KIND_BY_NAME["ship"]

    def obj(color, position):
        return SceneObject(ship, color, (0, 0, 1, 1), np.ones((1, 1), bool), np.ones((1, 1), np.float32),
                              WATER, "", position)
    a, b, c, d = obj("red", "top-left"), obj("red", "bottom"), obj("white", "top-left"), obj("white", "top-left")
    assert referring_expression(a, [a]) == "the ship"
    assert referring_expression(a, [a, c]) == "the red ship"
    assert referring_expression(a, [a, b, c]) == "the red ship in the top-left"
    assert referring_expression(b, [a, b, c]) == "the ship at the bottom"
    assert referring_expression(c, [a, b, c]) == "the white ship"
    assert referring_expression(c, [a, b, c, d]) is None


def test_example_text_fields_agree_with_the_objects(examples):
    for ex in examples:
        n = len(ex["box_labels"])
        assert ex["boxes"].shape == (n, 4) and ex["boxes"].dtype == np.float32
        assert len(ex["box_colors"]) == len(ex["region_captions"]) == n
        assert 2 <= len(ex["captions"]) <= 5 and len(set(ex["captions"])) == len(ex["captions"])
        for label, color, caption in zip(ex["box_labels"], ex["box_colors"], ex["region_captions"]):
            assert f"{color} {label}" in caption and caption.endswith("of the image")
        counts = Counter(ex["box_labels"])
        for qa in ex["qa"]:
            q, a = qa["question"], qa["answer"]
            if qa["question_type"] == "count":
                kind = next(k for k in KINDS if f" {k.plural} " in q)
                assert a == str(counts[kind.name])
            elif qa["question_type"] == "presence":
                kind = re.match(r"Is there a (.+) in the image\?", q).group(1)
                assert a == ("yes" if counts[kind] else "no")
            elif qa["question_type"] == "color":
                assert a in [c for l, c in zip(ex["box_labels"], ex["box_colors"]) if f" {l} " in q]
            elif qa["question_type"] == "scene":
                assert a == ex["label"].replace("_", " ")
        overview = ex["captions"][0]
        for kind in KINDS:
            if counts[kind.name]:
                assert counted(counts[kind.name], kind) in overview


def test_position_answers_match_the_box(world):
    for i in range(15):
        t, ex = world.tile("train", i), world.example("train", i)
        for qa in ex["qa"]:
            if qa["question_type"] == "position":
                hits = [o for o in t.objects if qa["question"] == f"Where is the {o.color} {o.kind.name}?"]
                assert len(hits) == 1 and position_name(hits[0].xyxy, t.size) == qa["answer"]


def test_counted_and_join_words_golden():
    ship = KIND_BY_NAME["ship"]
    assert counted(1, ship, "red") == "one red ship"
    assert counted(3, ship) == "three ships"
    assert counted(15, KIND_BY_NAME["storage tank"]) == "15 storage tanks"
    assert join_words(["a", "b", "c"]) == "a, b and c"


# ------------------------------------------------------------------------------------- composed


def test_composed_edit_does_what_its_words_say(world):
    seen = Counter()
    for i in range(40):
        t, ex = world.tile("train", i), world.example("train", i)
        c = ex["composed"]
        assert c["change_type"] != "none", c  # some edit always applies with every object kind enabled
        src, tgt = decode_png(ex["image"]), decode_png(c["target_image"])
        before, after = Counter(ex["box_labels"]), Counter(c["target_box_labels"])
        seen[c["change_type"]] += 1
        if c["change_type"] == "add":
            n_word, color, noun = re.match(r"add (a|\w+) (\w+) (.+)$", c["change"]).groups()
            n = 1 if n_word == "a" else NUMBERS.index(n_word)
            kind = next(k for k in KINDS if noun in (k.name, k.plural))
            assert after[kind.name] - before[kind.name] == n and sum(after.values()) - sum(before.values()) == n
            assert c["target_box_colors"][-n:] == [color] * n
            np.testing.assert_array_equal(c["target_boxes"][:-n], ex["boxes"])
        elif c["change_type"] == "remove":
            noun = c["change"].removeprefix("remove the ")
            kind = next(k for k in KINDS if noun in (k.name, k.plural))
            assert before[kind.name] > 0 and after[kind.name] == 0
        elif c["change_type"] == "remove_one":
            expression = c["change"].removeprefix("remove ")
            gone = [o for o in t.objects if described_by(expression, o)]
            assert len(gone) == 1 and list(gone[0].xyxy) not in c["target_boxes"].tolist()
            assert sum(after.values()) == sum(before.values()) - 1
        elif c["change_type"] == "recolor":
            expression, color = re.match(r"paint (.+) (\w+)$", c["change"]).groups()
            hit = [j for j, o in enumerate(t.objects) if described_by(expression, o)]
            assert len(hit) == 1 and c["target_box_colors"][hit[0]] == color != ex["box_colors"][hit[0]]
        elif c["change_type"] == "none":  # only when no edit applies: the target is the source
            assert c["change"] == "keep the scene unchanged" and c["target_image"] == ex["image"]
            continue
        changed = (src != tgt).any(-1)
        boxes = np.concatenate([ex["boxes"], c["target_boxes"]]).astype(int)
        inside = np.zeros_like(changed)
        for x1, y1, x2, y2 in boxes:
            inside[y1:y2, x1:x2] = True
        assert changed.any() and not changed[~inside].any()  # same ground, only the edited objects differ
        assert c["target_caption"].startswith("An aerial image of ")
    assert {"add", "remove", "recolor"} <= set(seen), seen


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("kwargs,message", [
    ({"tile_size": 32}, "tile_size: expected an integer number of pixels >= 64, got 32"),
    ({"num_object_kinds": 0}, "num_object_kinds: expected 1..6 (kinds in order: building, ship, plane, "
                              "vehicle, storage tank, swimming pool), got 0"),
])
def test_bad_world_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError) as err:
        World(**kwargs)
    assert str(err.value) == message


def test_unknown_split_is_named(world):
    with pytest.raises(ValueError, match=r"^split: expected one of train, validation, test, got 'dev'$"):
        world.example("dev", 0)


# ------------------------------------------------------------------------------------------- TFDS


def build(data_dir: Path, config):
    cls = tfds_common.builder_cls_from_path(DATA / "geoscenes")
    builder = cls(data_dir=str(data_dir), config=config)
    builder.download_and_prepare()
    return builder


def custom_config(seed: int):
    cls = tfds_common.builder_cls_from_path(DATA / "geoscenes")
    config_cls = type(cls.BUILDER_CONFIGS[0])
    return config_cls(name=f"seed{seed}", seed=seed, num_train=6, num_validation=0, num_test=3)


def shards(builder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(builder.data_dir).glob("*.array_record*"))}


def test_same_seed_builds_byte_identical_array_record_shards(tmp_path):
    a = shards(build(tmp_path / "a", custom_config(5)))
    b = shards(build(tmp_path / "b", custom_config(5)))
    assert sorted(a) == ["geoscenes-test.array_record-00000-of-00001",
                         "geoscenes-train.array_record-00000-of-00001"]
    assert a == b
    c = shards(build(tmp_path / "c", custom_config(6)))
    assert all(c[name] != a[name] for name in a)


def test_tiny_config_builds_and_reads_back_without_tf(tmp_path):
    builder = build(tmp_path, "tiny")
    assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
        "train": 24, "validation": 8, "test": 8}
    assert builder.info.features["label"].names == list(SCENES)
    source = builder.as_data_source(split="validation")
    got = source[0]
    want = World(0).example("validation", int(got["image_id"].decode().rsplit("_", 1)[1]))
    assert got["image"].shape == (112, 112, 3) and got["image"].dtype == np.uint8
    np.testing.assert_array_equal(got["image"], decode_png(want["image"]))
    np.testing.assert_array_equal(got["composed"]["target_image"], decode_png(want["composed"]["target_image"]))
    assert got["lat"].dtype == np.float64 and float(got["lat"]) == want["lat"] and float(got["lon"]) == want["lon"]
    np.testing.assert_array_equal(got["bbox_lonlat"], want["bbox_lonlat"])
    assert SCENES[int(got["label"])] == want["label"]
    assert [e.decode() for e in got["expressions"]] == want["expressions"]
    assert got["expression_box_index"].dtype == np.int32
    np.testing.assert_array_equal(got["expression_box_index"], want["expression_box_index"])
    np.testing.assert_array_equal(got["boxes"], want["boxes"])
    assert [q.decode() for q in got["qa"]["question"]] == [q["question"] for q in want["qa"]]
    assert got["place_description"].decode() == want["place_description"]
    assert got["composed"]["change"].decode() == want["composed"]["change"]
