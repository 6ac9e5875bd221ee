"""Box and coordinate text: golden strings, the grid integers against numpy, GeoChat's grammar read back."""
import json
import re

import numpy as np
import pytest

from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.inputs.records import Box, Geo
from vlm2geovec_jax.inputs.serialize import BOX_FORMATS, format_boxes, format_geo, parse_geochat_boxes, quantise

SIZE = (800, 600)
BOAT = Box((176.2, 106, 232, 160), "small white boat")
PLAIN = Box((0, 0, 800, 600))


def test_qwen_golden():
    assert format_boxes([BOAT], SIZE) == ("<|object_ref_start|>small white boat<|object_ref_end|>"
                                          "<|box_start|>(220,177),(290,267)<|box_end|>")
    assert format_boxes([BOAT, PLAIN], SIZE, "qwen") == (
        "<|object_ref_start|>small white boat<|object_ref_end|><|box_start|>(220,177),(290,267)<|box_end|> "
        "<|box_start|>(0,0),(1000,1000)<|box_end|>")
    assert format_boxes([Box((1, 1, 3, 5), angle=30)], (2000, 2000)) == "<|box_start|>(0,0),(2,2)<|box_end|>"


def test_quantise_rounds_half_to_even_and_clamps():
    assert [quantise(x, 2000, 1000) for x in (1, 3, 5, 7)] == [0, 2, 2, 4]  # 0.5, 1.5, 2.5, 3.5
    assert quantise(-3, 100, 1000) == 0 and quantise(100.4, 100, 1000) == 1000


def test_geochat_golden():
    assert format_boxes([Box((176.2, 106, 232, 160), "plane", 45.4), PLAIN], SIZE, "geochat") == (
        "<p>plane</p> {<22><18><29><27>|<45>} {<0><0><100><100>}")
    assert format_boxes([Box((0, 0, 8, 6), angle=359.6)], SIZE, "geochat") == "{<0><0><1><1>|<0>}"


def test_pixel_golden_escapes_labels():
    box = Box((10.4, 20.5, 30.5, 41.5), 'the "big" {hangar}', 90.0)
    assert format_boxes([box, PLAIN], SIZE, "pixel") == (
        '{"bbox_2d": [10, 20, 30, 42], "label": "the \\"big\\" {hangar}", "angle": 90} {"bbox_2d": [0, 0, 800, 600]}')
    assert json.loads(format_boxes([box], SIZE, "pixel")) == {"bbox_2d": [10, 20, 30, 42], "label": box.label,
                                                              "angle": 90}


def _random_boxes(w: int, h: int, min_side: float) -> list[Box]:
    rng = np.random.default_rng(0)
    boxes = []
    for i in range(100):
        x1, x2 = sorted(rng.uniform(0, w, 2))
        y1, y2 = sorted(rng.uniform(0, h, 2))
        if min(x2 - x1, y2 - y1) >= min_side:  # else it would collapse on the grid
            boxes.append(Box((x1, y1, x2, y2), f"object {i}" if i % 2 else None, float(i % 360)))
    return boxes


_INTS = {"qwen": r"\((\d+),(\d+)\),\((\d+),(\d+)\)", "geochat": r"\{<(\d+)><(\d+)><(\d+)><(\d+)>",
         "pixel": r"\[(\d+), (\d+), (\d+), (\d+)\]"}


@pytest.mark.parametrize("fmt", sorted(BOX_FORMATS))
def test_grid_integers_match_numpy_round_half_even(fmt):
    """Every written coordinate is numpy's rint(v / S * grid): the rule the docstring states, checked apart."""
    w, h = 1024, 600
    grid = BOX_FORMATS[fmt].grid
    boxes = _random_boxes(w, h, 1.0)
    written = [tuple(int(g) for g in m) for m in re.findall(_INTS[fmt], format_boxes(boxes, (w, h), fmt))]
    scale = np.array([w, h, w, h], np.float64)
    top = scale if grid is None else np.full(4, grid, np.float64)
    expected = np.clip(np.rint(np.array([b.xyxy for b in boxes]) / scale * top), 0, top).astype(int)
    assert len(boxes) > 90
    np.testing.assert_array_equal(written, expected)


def test_geochat_round_trip_within_half_a_grid_step():
    w, h = 1024, 600
    step = np.array([w, h, w, h]) / 100
    boxes = _random_boxes(w, h, 2 * step.max())
    back = parse_geochat_boxes(format_boxes(boxes, (w, h), "geochat"), (w, h))
    assert len(back) == len(boxes) > 50
    for b, r in zip(boxes, back):
        assert np.all(np.abs(np.array(b.xyxy) - r.xyxy) <= step / 2 + 1e-9), (b, r)
        assert (r.label, r.angle) == (b.label, b.angle)


def test_geochat_parser_finds_boxes_in_free_text():
    chat = "<p>planes</p> {<10><10><20><20>|<90>}{<30><30><40><40>|<0>}, {<50><50><60><60>}"
    assert parse_geochat_boxes(chat, (200, 100)) == [
        Box((20, 10, 40, 20), "planes", 90.0), Box((60, 30, 80, 40), None, 0.0), Box((100, 50, 120, 60))]
    assert parse_geochat_boxes("no boxes here", SIZE) == []


@pytest.mark.parametrize("s, expected", [
    ("{<10><20><30><40>|<45>}", Box((102.4, 204.8, 307.2, 409.6), angle=45.0)),
    ("  {<10><20><30><40>|45} ", Box((102.4, 204.8, 307.2, 409.6), angle=45.0)),
    ("{<10><20><30><40>|<360>}", Box((102.4, 204.8, 307.2, 409.6), angle=0.0)),
    ("{<0><0><100><100>}", Box((0, 0, 1024, 1024))),
])
def test_parse_geochat_box(s, expected):
    assert parse_geochat_boxes(s, (1024, 1024)) == [expected]


@pytest.mark.parametrize("s, expected", [
    ("{<10><20><104><40>|<45>}", "value 104 over 100 in GeoChat box '{<10><20><104><40>|<45>}'; GeoChat "
                                 "coordinates are percentages of the image width and height (0-100)"),
    ("{<10><20><30><40>|<370>}", "angle 370 outside [0, 360] degrees in GeoChat box '{<10><20><30><40>|<370>}'"),
    ("{<10><20><30><40>|<-5>}", "angle -5 outside [0, 360] degrees in GeoChat box '{<10><20><30><40>|<-5>}'"),
    ("{<-1><20><30><40>}", "value -1 outside [0, 100] in geochat box '{<-1><20><30><40>}'"),
    ("{<30><20><30><40>}", "x2 (307.2) must be greater than x1 (307.2); expected [x1, y1, x2, y2] in geochat "
                           "box '{<30><20><30><40>}'"),
])
def test_parse_geochat_box_faults(s, expected):
    with pytest.raises(RecordError) as info:
        parse_geochat_boxes(s, (1024, 1024))
    assert str(info.value).removeprefix("field xyxy: ") == expected


def test_unknown_box_format():
    with pytest.raises(ValueError, match="unknown box format 'yolo'; expected one of geochat, pixel, qwen"):
        format_boxes([PLAIN], SIZE, "yolo")


@pytest.mark.parametrize("geo, text", [
    (Geo(lat=48.137, lon=11.575), "latitude 48.1370, longitude 11.5750"),
    (Geo(lat=-33.86882, lon=151.20929), "latitude -33.8688, longitude 151.2093"),
    (Geo(lat=-0.00001, lon=-180), "latitude 0.0000, longitude -180.0000"),
    (Geo(lat=90, lon=0, bbox_lonlat=(-1, 89, 1, 90)), "latitude 90.0000, longitude 0.0000"),
])
def test_geo_golden(geo, text):
    assert format_geo(geo) == text


def test_geo_text_within_precision():
    rng = np.random.default_rng(1)
    for lat, lon in zip(rng.uniform(-90, 90, 200), rng.uniform(-180, 180, 200)):
        m = re.fullmatch(r"latitude (-?\d+\.\d{4}), longitude (-?\d+\.\d{4})", format_geo(Geo(lat, lon)))
        assert abs(float(m.group(1)) - lat) <= 5e-5 + 1e-12 and abs(float(m.group(2)) - lon) <= 5e-5 + 1e-12
