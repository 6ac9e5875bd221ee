"""Records: validation messages (file, record, field), dict/JSONL round trips, bad-line handling, MMEB rows."""
import json
import logging

import pytest

from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.inputs.jsonl import (eval_row_from_dict, eval_row_to_dict, item_from_dict, item_to_dict,
                                         pair_from_dict, pair_to_dict, read_eval_rows_jsonl, read_items_jsonl,
                                         read_pairs_jsonl, write_jsonl)
from vlm2geovec_jax.inputs.mmeb import eval_row_from_mmeb, read_mmeb_jsonl, read_mmeb_parquet
from vlm2geovec_jax.inputs.records import Box, EvalRow, Geo, Item, Pair, Source, located

IMG = {"image": "scene.png", "image_size": [800, 600]}
WHERE = "file items.jsonl, record 7, field"


def _error(d: dict) -> str:
    with pytest.raises(RecordError) as info:
        item_from_dict(d, file="items.jsonl", record=7)
    return str(info.value)


@pytest.mark.parametrize("d, expected", [
    ({"geo": {"lat": 91, "lon": 0}}, "geo.lat: latitude 91 outside [-90, 90] degrees"),
    ({"geo": {"lat": 0, "lon": -180.5}}, "geo.lon: longitude -180.5 outside [-180, 180] degrees"),
    ({"geo": {"lat": 0, "lon": float("nan")}}, "geo.lon: expected a finite number, got nan"),
    ({"geo": {"lat": True, "lon": 0}}, "geo.lat: expected a number, got True"),
    ({"geo": {"lat": 10, "lon": 50, "bbox_lonlat": [9, 49, 11, 51]}},
     "geo.bbox_lonlat: point (lat 10, lon 50) lies outside bbox_lonlat [9.0, 49.0, 11.0, 51.0]; "
     "are lat and lon swapped?"),
    ({"geo": {"lat": 0, "lon": 0, "bbox_lonlat": [0, 1, 1, -1]}},
     "geo.bbox_lonlat: [0.0, 1.0, 1.0, -1.0] is not [west, south, east, north] with longitudes in [-180, 180], "
     "latitudes in [-90, 90] and south <= north"),
    ({**IMG, "boxes": [{"xyxy": [0, 0, 10, 10]}, {"xyxy": [10, 10, 10, 20]}]},
     "boxes[1].xyxy: x2 (10) must be greater than x1 (10); expected [x1, y1, x2, y2]"),
    ({**IMG, "boxes": [{"xyxy": [0, 30, 10, 20]}]},
     "boxes[0].xyxy: y2 (20) must be greater than y1 (30); expected [x1, y1, x2, y2]"),
    ({**IMG, "boxes": [{"xyxy": [0, 0, 10, float("inf")]}]}, "boxes[0].xyxy[3]: expected a finite number, got inf"),
    ({**IMG, "boxes": [{"xyxy": [0, 0, 10]}]}, "boxes[0].xyxy: expected a list of 4 numbers, got [0, 0, 10]"),
    ({**IMG, "boxes": [{"xyxy": [700, 500, 801.5, 600]}]},
     "boxes[0].xyxy: box [700, 500, 801.5, 600] lies outside the 800x600 image; expected 0 <= x1 < x2 <= 800 "
     "and 0 <= y1 < y2 <= 600"),
    ({**IMG, "boxes": [{"xyxy": [-1, 0, 10, 10]}]},
     "boxes[0].xyxy: box [-1, 0, 10, 10] lies outside the 800x600 image; expected 0 <= x1 < x2 <= 800 "
     "and 0 <= y1 < y2 <= 600"),
    ({"text": "a", "boxes": [{"xyxy": [0, 0, 1, 1]}]}, "boxes: boxes need an image to be checked and normalised"),
    ({**IMG, "boxes": [{"xyxy": [0, 0, 1, 1], "angle": 360}]}, "boxes[0].angle: angle 360 outside [0, 360) degrees"),
    ({**IMG, "boxes": [{"xyxy": [0, 0, 1, 1], "label": 3}]}, "boxes[0].label: expected a string, got int 3"),
    ({"text": 42}, "text: expected a string, got int 42"),
    ({"text": ["a"]}, "text: expected a string, got list ['a']"),
    ({"text": "a <|image_pad|> b"}, "text: contains the special-token string '<|image_pad|>'; special tokens are "
                                    "added by the prompt templates, never by data"),
    ({"image": ""}, "image: expected an image path or encoded bytes, got ''"),
    ({"image": {"bytes_b64": "%%%"}}, "image: bytes_b64 is not valid base64 (Only base64 data is allowed)"),
    ({"image": "a.png", "image_size": [800, 0]},
     "image_size: expected [width, height] as two positive integers, got [800, 0]"),
    ({"text": "a", "image_size": [8, 8]}, "image_size: image_size given without an image"),
    ({"text": "a", "lattitude": 3},
     "lattitude: unknown key 'lattitude'; expected keys among text, image, image_size, boxes, geo, instruction"),
    ({"geo": {"lat": 3}}, "geo.lon: missing required key"),
])
def test_item_validation_names_file_record_field(d, expected):
    assert _error(d) == f"{WHERE} {expected}"


@pytest.mark.parametrize("d", [{}, {"text": "   ", "instruction": "Find it:"}, {"text": None}])
def test_empty_item_is_a_fault_of_the_whole_item(d):
    assert _error(d) == "file items.jsonl, record 7: empty item: expected text, an image or a location (geo)"


def test_error_carries_structured_location():
    with pytest.raises(RecordError) as info:
        item_from_dict({"geo": {"lat": 91, "lon": 0}}, file="x.jsonl", record=3)
    err = info.value
    assert (err.file, err.record, err.field) == ("x.jsonl", 3, "geo.lat")
    assert isinstance(err, ValueError)


def test_located_adds_where_and_keeps_what_is_known():
    err = located(RecordError("value 104 over 100", field="xyxy"), file="geochat.json", record=12, prefix="boxes[0]")
    assert str(err) == "file geochat.json, record 12, field boxes[0].xyxy: value 104 over 100"
    again = located(err, file="other.json", record=1, prefix="query")
    assert (again.file, again.record, again.field) == ("geochat.json", 12, "query.boxes[0].xyxy")


def test_numpy_values_are_accepted():
    import numpy as np
    box = Box(np.array([1, 2, 3, 4], np.float32))
    item = Item(image="a.png", image_size=(np.int64(8), np.int64(6)), boxes=[box])
    assert box.xyxy == (1.0, 2.0, 3.0, 4.0) and item.image_size == (8, 6) and type(item.image_size[0]) is int


def test_constructors_coerce_and_are_hashable():
    item = Item(text="t", image="a.png", image_size=[8, 6], boxes=[Box([1, 2, 3, 4], "car")], geo=Geo(1, 2))
    assert item.boxes == (Box((1.0, 2.0, 3.0, 4.0), "car"),)
    assert item.image_size == (8, 6) and isinstance(item.boxes[0].xyxy[0], float)
    assert len({item, Item(text="t", image="a.png", image_size=(8, 6), boxes=(Box((1, 2, 3, 4), "car"),),
                           geo=Geo(1.0, 2.0))}) == 1
    with pytest.raises(AttributeError):
        item.text = "other"  # frozen


def test_geo_only_item_and_antimeridian_bbox_are_valid():
    assert Item(geo=Geo(lat=-17.5, lon=179.9, bbox_lonlat=(179.5, -18, -179.5, -17))).text is None
    assert Geo(lat=0, lon=-179.9, bbox_lonlat=(179.5, -1, -179.5, 1)).lon == -179.9


def _pair() -> Pair:
    return Pair(Item(text="a harbour", instruction="Find a remote sensing image that matches the given caption:"),
                Item(image=b"\x89PNG\r\n\x1a\n\x00\xff", image_size=(4, 3),
                     boxes=(Box((0, 0.5, 4, 3), "pier", 12.5),), geo=Geo(48.137, 11.575, (11, 48, 12, 49))),
                [Item(image="other.png"), Item(text="café «Ünïcode»")],
                task="text_to_image", source={"dataset": "rsicd", "split": "train", "id": "00042"})


def test_pair_and_eval_row_round_trip_exactly_through_json():
    pair = _pair()
    d = json.loads(json.dumps(pair_to_dict(pair)))
    assert d["positive"]["image"] == {"bytes_b64": "iVBORw0KGgoA/w=="}
    assert pair_from_dict(d) == pair and pair_to_dict(pair_from_dict(d)) == d
    row = EvalRow("q1", "rsicd_t2i", pair.query, (pair.positive, *pair.negatives), positives=(0, 2))
    d = json.loads(json.dumps(eval_row_to_dict(row)))
    assert eval_row_from_dict(d) == row
    assert item_from_dict(item_to_dict(pair.positive)) == pair.positive
    assert item_to_dict(Item(text="x")) == {"text": "x"}


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["negatives"][1].update(text=5), "negatives[1].text: expected a string, got int 5"),
    (lambda d: d["source"].pop("split"), "source.split: missing required key"),
    (lambda d: d["source"].update(id=7), "source.id: expected a string, got int 7"),
    (lambda d: d.update(task=""), "task: expected a non-empty string"),
    (lambda d: d["query"].update(geo={"lat": 0, "lon": 200}),
     "query.geo.lon: longitude 200 outside [-180, 180] degrees"),
])
def test_pair_validation(mutate, expected):
    d = pair_to_dict(_pair())
    mutate(d)
    with pytest.raises(RecordError) as info:
        pair_from_dict(d, file="pairs.jsonl", record=2)
    assert str(info.value) == f"file pairs.jsonl, record 2, field {expected}"


def test_pair_source_is_keyword_only_and_typed():
    pair = _pair()
    assert pair.source == Source("rsicd", "train", "00042")
    with pytest.raises(TypeError):
        Pair(pair.query, pair.positive, (), "t2i", pair.source)  # task and source are keyword-only


@pytest.mark.parametrize("positives, expected", [
    ([3], "positives: index 3 is not a candidate index in [0, 2)"),
    ([], "positives: expected a non-empty list of candidate indices, got []"),
    ([0, 0], "positives: repeated candidate index in [0, 0]"),
])
def test_eval_row_positives(positives, expected):
    d = {"qid": "q", "task": "t", "query": {"text": "a"}, "candidates": [{"text": "b"}, {"text": "c"}],
         "positives": positives}
    with pytest.raises(RecordError) as info:
        eval_row_from_dict(d, file="rows.jsonl", record=1)
    assert str(info.value) == f"file rows.jsonl, record 1, field {expected}"


def test_eval_row_defaults_gold_to_candidate_zero_and_needs_candidates():
    assert eval_row_from_dict({"qid": "q", "task": "t", "query": {"text": "a"},
                               "candidates": [{"text": "b"}]}).positives == (0,)
    with pytest.raises(RecordError, match="field candidates: expected at least one candidate"):
        EvalRow("q", "t", Item(text="a"), ())


# ------------------------------------------------------------------------------------------ JSONL reader
GOOD = [{"text": "first"}, {**IMG, "boxes": [{"xyxy": [1, 2, 3, 4], "label": "car"}]}, {"geo": {"lat": 1, "lon": 2}}]
BAD_LINES = [  # (line bytes, reason key, message after "file F, record N")
    (b'{"text": "trunc', "invalid JSON", ": invalid JSON (column 10: Unterminated string starting at)"),
    (b'{"text": "caf\xe9"}', "invalid UTF-8", ": invalid UTF-8 (byte 0xe9 at offset 13)"),
    (b'{"geo": {"lat": 91, "lon": 0}}', "field geo.lat", ", field geo.lat: latitude 91 outside [-90, 90] degrees"),
    (b'{"geo": {"lat": 1, "lon": NaN}}', "field geo.lon", ", field geo.lon: expected a finite number, got nan"),
    (b'{"image": "a.png", "image_size": [10, 10], "boxes": [{"xyxy": [0, 0, 5, 5]}, {"xyxy": [2, 2, 12, 8]}]}',
     "field boxes[].xyxy", ", field boxes[1].xyxy: box [2, 2, 12, 8] lies outside the 10x10 image; expected "
     "0 <= x1 < x2 <= 10 and 0 <= y1 < y2 <= 10"),
    (b'{}', "empty item", ": empty item: expected text, an image or a location (geo)"),
    (b'[1, 2]', "expected a JSON object", ": expected a JSON object, got list"),
    (b'{"text": "a", "text": "b"}', "duplicate key", ": duplicate key 'text' in one object"),
]


@pytest.fixture()
def corpus(tmp_path):
    """Good lines 1, 3, 12 (after a BOM, CRLF endings and a blank line); the bad lines in between."""
    lines = [json.dumps(GOOD[0]).encode(), b"", json.dumps(GOOD[1]).encode()]
    lines += [b for b, _, _ in BAD_LINES] + [b"   ", json.dumps(GOOD[2]).encode()]
    path = tmp_path / "items.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n")
    return path


def test_reader_skip_mode_counts_and_logs_each_bad_line(corpus, caplog):
    reader = read_items_jsonl(corpus, on_bad_record="skip")
    with caplog.at_level(logging.WARNING, logger="vlm2geovec_jax.inputs.records"):
        items = list(reader)
    assert items == [item_from_dict(d) for d in GOOD]
    expected = {}
    for _, key, _ in BAD_LINES:
        expected[key] = expected.get(key, 0) + 1
    assert dict(reader.bad.counts) == expected and reader.bad.total == len(BAD_LINES)
    messages = [f"file {corpus}, record {n}{msg}" for n, (_, _, msg) in enumerate(BAD_LINES, start=4)]
    assert reader.bad.examples == messages
    assert [r.getMessage() for r in caplog.records] == [f"skipping bad record: {m}" for m in messages]
    assert reader.bad.summary() == (
        "8 bad records skipped (duplicate key: 1, empty item: 1, expected a JSON object: 1, field boxes[].xyxy: 1, "
        "field geo.lat: 1, field geo.lon: 1, invalid JSON: 1, invalid UTF-8: 1)")


@pytest.mark.parametrize("n", range(len(BAD_LINES)))
def test_reader_raise_mode_stops_at_the_bad_line(tmp_path, n):
    path = tmp_path / "one_bad.jsonl"
    path.write_bytes(json.dumps(GOOD[0]).encode() + b"\n" + BAD_LINES[n][0] + b"\n")
    reader = iter(read_items_jsonl(path))
    assert next(reader) == Item(text="first")
    with pytest.raises(RecordError) as info:
        next(reader)
    assert str(info.value) == f"file {path}, record 2{BAD_LINES[n][2]}"
    assert info.value.record == 2


def test_reader_rejects_unknown_mode(tmp_path):
    with pytest.raises(ValueError, match="on_bad_record must be 'raise' or 'skip', got 'ignore'"):
        read_items_jsonl(tmp_path / "x.jsonl", on_bad_record="ignore")


def test_write_then_read_pairs_and_rows(tmp_path):
    pair = _pair()
    assert write_jsonl(tmp_path / "p.jsonl", [pair, pair]) == 2
    assert list(read_pairs_jsonl(tmp_path / "p.jsonl")) == [pair, pair]
    row = EvalRow("q", "t", pair.query, (pair.positive,))
    write_jsonl(tmp_path / "r.jsonl", [row])
    assert list(read_eval_rows_jsonl(tmp_path / "r.jsonl")) == [row]


# ------------------------------------------------------------------------------------------------- MMEB
MMEB_ROW = {"qry_text": "<|image_1|>\nRepresent the given image for classification", "qry_img_path": "UCM/a.jpg",
            "tgt_text": ["airplane", "beach"], "tgt_img_path": ["", ""], "task_name": "ignored"}


def test_mmeb_row_to_eval_row():
    row = eval_row_from_mmeb(MMEB_ROW, task="ucm", qid="ucm/0", image_root="images")
    assert row == EvalRow("ucm/0", "ucm", Item(text="Represent the given image for classification",
                                               image="images/UCM/a.jpg"),
                          (Item(text="airplane"), Item(text="beach")), (0,))
    t2i = {"qry_text": "a harbour", "qry_img_path": "", "qry_inst": "Find an image:",
           "tgt_text": ["<|image_1|>\n", "<|image_1|>\n"], "tgt_img_path": ["x.png", "y.png"],
           "tgt_inst": "Represent the given image."}
    row = eval_row_from_mmeb(t2i, task="t2i", qid="t2i/0")
    assert row.query == Item(text="a harbour", instruction="Find an image:")
    assert row.candidates == (Item(image="x.png", instruction="Represent the given image."),
                              Item(image="y.png", instruction="Represent the given image."))


@pytest.mark.parametrize("change, expected", [
    ({"tgt_img_path": [""]}, "tgt_img_path: 1 image paths for 2 tgt_text entries"),
    ({"tgt_text": ["airplane", ""]}, "tgt[1]: empty item: expected text, an image or a location (geo)"),
    ({"qry_img_path": ""}, "qry.image: text has an image token but the image path is empty"),
    ({"tgt_text": "airplane"}, "tgt_text: expected a list, got str"),
    ({"qry_text": None, "qry_img_path": None, "tgt_text": None}, "tgt_text: expected a list, got NoneType"),
])
def test_mmeb_row_faults(change, expected):
    with pytest.raises(RecordError) as info:
        eval_row_from_mmeb({**MMEB_ROW, **change}, task="ucm", qid="q", file="ucm.parquet", record=4)
    assert str(info.value) == f"file ucm.parquet, record 4, field {expected}"


def test_mmeb_missing_column():
    row = dict(MMEB_ROW)
    del row["tgt_img_path"]
    with pytest.raises(RecordError, match="field tgt_img_path: missing required MMEB column"):
        eval_row_from_mmeb(row, task="ucm", qid="q")


def test_read_mmeb_jsonl_and_parquet(tmp_path):
    bad = {**MMEB_ROW, "tgt_img_path": [""]}
    path = tmp_path / "ucm.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (MMEB_ROW, bad, MMEB_ROW)) + "\n")
    reader = read_mmeb_jsonl(path, task="ucm", image_root="root", on_bad_record="skip")
    assert [r.qid for r in reader] == ["ucm/1", "ucm/3"] and reader.bad.total == 1
    assert list(reader)[0].query.image == "root/UCM/a.jpg"

    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist([MMEB_ROW, bad, MMEB_ROW]), tmp_path / "ucm.parquet")
    rows = list(read_mmeb_parquet(tmp_path / "ucm.parquet", task="ucm", on_bad_record="skip"))
    assert [r.qid for r in rows] == ["ucm/0", "ucm/2"] and rows[0].query.image == "UCM/a.jpg"
    with pytest.raises(RecordError, match=r"ucm.parquet, record 1, field tgt_img_path: 1 image paths"):
        list(read_mmeb_parquet(tmp_path / "ucm.parquet", task="ucm"))
