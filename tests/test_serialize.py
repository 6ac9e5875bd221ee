"""Box and coordinate text: golden strings, parsers back, round trips within the quantisation, source faults."""
import numpy as np
import pytest

from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.inputs.records import Box, Geo
from vlm2geovec_jax.inputs.serialize import (BOX_FORMATS, format_boxes, format_geo, parse_boxes, parse_geo,
                                             parse_geochat_box, parse_geochat_boxes, quantise)

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
    assert parse_boxes(format_boxes([box], SIZE, "pixel"), SIZE, "pixel") == [Box((10, 20, 30, 42), box.label, 90.0)]


@pytest.mark.parametrize("fmt", sorted(BOX_FORMATS))
def test_round_trip_within_half_a_grid_step(fmt):
    rng = np.random.default_rng(0)
    w, h = 1024, 600
    grid = BOX_FORMATS[fmt].grid
    step = np.array([w, h, w, h]) / (grid or np.array([w, h, w, h]))
    boxes = []
    for i in range(100):
        x1, x2 = sorted(rng.uniform(0, w, 2))
        y1, y2 = sorted(rng.uniform(0, h, 2))
        if min(x2 - x1, y2 - y1) < 2 * step.max():  # would collapse on the grid
            continue
        boxes.append(Box((x1, y1, x2, y2), f"object {i}" if i % 2 else None, float(i % 360)))
    back = parse_boxes(format_boxes(boxes, (w, h), fmt), (w, h), fmt)
    assert len(back) == len(boxes) > 50
    for b, r in zip(boxes, back):
        assert np.all(np.abs(np.array(b.xyxy) - r.xyxy) <= step / 2 + 1e-9), (b, r)
        assert r.label == b.label
        assert r.angle == (None if fmt == "qwen" else b.angle)


def test_parsers_find_boxes_in_free_text():
    text = ("There is <|object_ref_start|>a car<|object_ref_end|><|box_start|>( 100 , 200 ),(300,400)<|box_end|>"
            " and <|box_start|>(0,0),(500,500)<|box_end|>.")
    assert parse_boxes(text, (1000, 100)) == [Box((100, 20, 300, 40), "a car"), Box((0, 0, 500, 50))]
    chat = "<p>planes</p> {<10><10><20><20>|<90>}{<30><30><40><40>|<0>}, {<50><50><60><60>}"
    assert parse_geochat_boxes(chat, (200, 100)) == [
        Box((20, 10, 40, 20), "planes", 90.0), Box((60, 30, 80, 40), None, 0.0), Box((100, 50, 120, 60))]
    assert parse_boxes("no boxes here", SIZE, "pixel") == []


@pytest.mark.parametrize("s, expected", [
    ("{<10><20><30><40>|<45>}", Box((102.4, 204.8, 307.2, 409.6), angle=45.0)),
    ("  {<10><20><30><40>|45} ", Box((102.4, 204.8, 307.2, 409.6), angle=45.0)),
    ("{<10><20><30><40>|<360>}", Box((102.4, 204.8, 307.2, 409.6), angle=0.0)),
    ("{<0><0><100><100>}", Box((0, 0, 1024, 1024))),
])
def test_parse_geochat_box(s, expected):
    assert parse_geochat_box(s, (1024, 1024)) == expected


@pytest.mark.parametrize("s, expected", [
    ("{<10><20><104><40>|<45>}", "value 104 over 100 in GeoChat box '{<10><20><104><40>|<45>}'; GeoChat "
                                 "coordinates are percentages of the image width and height (0-100)"),
    ("{<10><20><30><40>|<370>}", "angle 370 outside [0, 360] degrees in GeoChat box '{<10><20><30><40>|<370>}'"),
    ("{<10><20><30><40>|<-5>}", "angle -5 outside [0, 360] degrees in GeoChat box '{<10><20><30><40>|<-5>}'"),
    ("{<-1><20><30><40>}", "value -1 outside [0, 100] in geochat box '{<-1><20><30><40>}'"),
    ("{<30><20><30><40>}", "x2 (307.2) must be greater than x1 (307.2); expected [x1, y1, x2, y2] in geochat "
                           "box '{<30><20><30><40>}'"),
    ("<10><20><30><40>", "'<10><20><30><40>' is not a GeoChat box; expected {<x1><y1><x2><y2>|<angle>} with integers"),
])
def test_parse_geochat_box_faults(s, expected):
    with pytest.raises(RecordError) as info:
        parse_geochat_box(s, (1024, 1024))
    assert str(info.value).removeprefix("field xyxy: ") == expected


def test_other_parse_faults():
    with pytest.raises(RecordError, match=r"value 1001 outside \[0, 1000\] in qwen box "):
        parse_boxes("<|box_start|>(0,0),(1001,5)<|box_end|>", SIZE)
    with pytest.raises(RecordError, match=r"value 801 outside \[0, 800\] in pixel box "):
        parse_boxes('{"bbox_2d": [0, 0, 801, 5]}', SIZE, "pixel")
    with pytest.raises(RecordError, match=r"expected \"bbox_2d\": \[x1, y1, x2, y2\] as integers"):
        parse_boxes('{"bbox_2d": [0, 0, 8.5, 5]}', SIZE, "pixel")
    with pytest.raises(RecordError, match=r"invalid JSON in pixel box at offset 4"):
        parse_boxes('see {"bbox_2d": [0, 0, 8', SIZE, "pixel")


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
    assert parse_geo(f"Find the image at {text}.") == Geo(round(geo.lat, 4) + 0.0, round(geo.lon, 4))


def test_geo_round_trip_within_precision():
    rng = np.random.default_rng(1)
    for lat, lon in zip(rng.uniform(-90, 90, 200), rng.uniform(-180, 180, 200)):
        back = parse_geo(format_geo(Geo(lat, lon)))
        assert abs(back.lat - lat) <= 5e-5 + 1e-12 and abs(back.lon - lon) <= 5e-5 + 1e-12


def test_parse_geo_faults():
    with pytest.raises(RecordError, match=r"^no 'latitude <degrees>, longitude <degrees>' in '48.1, 11.5'$"):
        parse_geo("48.1, 11.5")
    with pytest.raises(RecordError) as info:
        parse_geo("latitude 91.0000, longitude 0.0000")
    assert str(info.value) == ("field lat: latitude 91 outside [-90, 90] degrees in "
                               "'latitude 91.0000, longitude 0.0000'")
