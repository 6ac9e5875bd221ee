"""Task adapters: one example of a TFDS builder under data/ -> the Pairs of one task kind.

An adapter is ``adapter(example, info) -> list[Pair]``: ``example`` is one record as ``tfds.data_source``
returns it (text as bytes, arrays as numpy; the image as encoded bytes when the source skips image decoding,
as the pipeline's does, or as a decoded uint8 array, which is re-encoded losslessly as PNG), ``info`` names
the dataset, split and class names. ``ADAPTERS`` maps (builder name, task kind) to an adapter; ``adapter()``
looks one up. Every query carries the query instruction of its task, every candidate the candidate
instruction (templates.instruction), and every Pair its source {dataset, split, id}, where id is the
example's own id with ``#caption<i>`` / ``#qa<i>`` / ``#object<i>`` appended when one example gives several
pairs.

What each dataset gives (feature names in data/README.md):

| task kind                 | datasets                                | query -> positive [hard negatives]     |
|---------------------------|-----------------------------------------|----------------------------------------|
| scene_classification      | rs_scenes, fmow, geoscenes              | image -> class name                    |
| text_to_image             | rs_captions, skyscript, vrsbench, geo.  | caption -> image                       |
| image_to_text             | rs_captions, skyscript, vrsbench, geo.  | image -> caption                       |
| vqa                       | rsvqa, vrsbench, geoscenes              | image + question -> answer             |
| region_caption            | dior_rsvg, geochat_bench, vrsbench, geo.| image + box -> caption [other captions]|
| referring_expression      | dior_rsvg, geochat_bench, vrsbench, geo.| image + expression -> image + box [others] |
| semantic_geo_localization | fmow, skyscript, geoscenes              | image -> location [+ place description]|
| geo_image_retrieval       | fmow, skyscript, geoscenes              | class / caption / place + location -> image |
| composed_retrieval        | geoscenes only                          | image + change -> changed image [reference] |

(geo. = geoscenes)

No public remote-sensing set gives (reference image, modification text, target image) triples, so composed
retrieval exists only in the synthetic GeoScenes world (data/geoscenes); its hard negative is the reference
image itself, the classic composed-retrieval distractor. Ready-made Pairs (pair_to_dict JSON, e.g. in
ArrayRecord files) are read by ``pair_json`` under the dataset name ``pairs``, for every task kind.
Hard negatives of region tasks are the other objects of the same image where one example holds them all
(VRSBench, GeoScenes); DIOR-RSVG stores one object per example and GeoChat-Bench one query per example, so
theirs have none.
Region queries carry no box label (it would give the answer away); referring-expression candidates carry
the object's class label where the dataset has one, as in docs/prompt_layout.md.
"""
from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image as PILImage

from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.inputs.jsonl import _decode_line, pair_from_dict
from vlm2geovec_jax.inputs.records import Box, Geo, Item, Pair, Source, located
from vlm2geovec_jax.inputs.templates import TASK_KINDS, with_instruction

Example = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What an adapter knows about the source besides the example: where it comes from, and class names."""

    dataset: str                 # e.g. "rs_scenes/aid" (builder/config)
    split: str
    class_names: tuple[str, ...] = ()

    @property
    def builder(self) -> str:
        """The builder name, the key of ADAPTERS ("rs_scenes" for "rs_scenes/aid")."""
        return self.dataset.split("/", 1)[0]


Adapter = Callable[[Example, SourceInfo], list[Pair]]


# ------------------------------------------------------------------------------------------ field readers
def _get(ex: Example, key: str) -> Any:
    if key not in ex:
        raise RecordError(f"missing feature; expected the features of the builder (have {', '.join(sorted(ex))})",
                          field=key)
    return ex[key]


def _str(value: Any, name: str) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as err:
            raise RecordError(f"invalid UTF-8 (byte {value[err.start]:#04x} at offset {err.start})",
                              field=name) from None
    if isinstance(value, str):
        return value
    raise RecordError(f"expected text, got {type(value).__name__}", field=name)


def _text(ex: Example, key: str) -> str:
    return _str(_get(ex, key), key)


def _texts(ex: Example, key: str) -> list[str]:
    value = _get(ex, key)
    values = value.tolist() if isinstance(value, np.ndarray) else list(value)
    return [_str(v, f"{key}[{i}]") for i, v in enumerate(values)]


def _image(ex: Example, key: str = "image") -> bytes:
    """Encoded image bytes: passed through, or a decoded uint8 array re-encoded losslessly as PNG."""
    value = _get(ex, key)
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value)
    array = np.asarray(value)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
        raise RecordError(f"expected encoded bytes or a uint8 [H, W, 3] array, got {array.dtype} "
                          f"{array.shape}", field=key)
    buf = io.BytesIO()
    PILImage.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _size(ex: Example) -> tuple[int, int]:
    w, h = (int(v) for v in np.asarray(_get(ex, "image_size")).reshape(-1)[:2])
    return w, h


def _boxes(ex: Example, key: str = "boxes") -> np.ndarray:
    return np.asarray(_get(ex, key), np.float64).reshape(-1, 4)


def _id(ex: Example, key: str = "image_id") -> str:
    value = _get(ex, key)
    return _str(value, key) if isinstance(value, (bytes, str, np.bytes_)) else str(int(value))


def class_text(name: str) -> str:
    """A class folder name as words: "BareLand" -> "bare land", "baseball_field" -> "baseball field"."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name.strip())
    return " ".join(re.split(r"[\s_\-]+", words)).lower()


def _image_item(ex: Example, *, boxes: Sequence[Box] = (), text: str | None = None,
                geo: Geo | None = None) -> Item:
    return Item(text=text, image=_image(ex), image_size=_size(ex), boxes=tuple(boxes), geo=geo)


def _geo(ex: Example) -> Geo:
    bbox = ex.get("bbox_lonlat")
    lat, lon = float(np.asarray(_get(ex, "lat"))), float(np.asarray(_get(ex, "lon")))
    try:
        return Geo(lat=lat, lon=lon, bbox_lonlat=None if bbox is None else tuple(np.asarray(bbox).tolist()))
    except RecordError as err:
        raise located(err, prefix="geo") from None


def _pair(task: str, info: SourceInfo, pair_id: str, query: Item, positive: Item,
          negatives: Sequence[Item] = ()) -> Pair:
    return Pair(with_instruction(query, task, "query"), with_instruction(positive, task, "candidate"),
                tuple(with_instruction(n, task, "candidate") for n in negatives), task=task,
                source=Source(info.dataset, info.split, pair_id))


def _class_name(ex: Example, info: SourceInfo) -> str:
    label = int(np.asarray(_get(ex, "label")))
    if not info.class_names:
        raise RecordError("the source info has no class names; expected the ClassLabel names of the builder",
                          field="label")
    if not 0 <= label < len(info.class_names):
        raise RecordError(f"label {label} is not a class index in [0, {len(info.class_names)}) (unlabelled "
                          "split?)", field="label")
    return class_text(info.class_names[label])


# ----------------------------------------------------------------------------------------------- adapters
def scene_classification(ex: Example, info: SourceInfo) -> list[Pair]:
    """Image -> its class name as text (rs_scenes, fmow)."""
    return [_pair("scene_classification", info, _id(ex), _image_item(ex), Item(text=_class_name(ex, info)))]


def _captions(ex: Example) -> list[tuple[int, str]]:
    return [(i, c) for i, c in enumerate(_texts(ex, "captions")) if c.strip()]


def text_to_image(ex: Example, info: SourceInfo) -> list[Pair]:
    """One pair per caption: caption -> image."""
    image = _image_item(ex)
    return [_pair("text_to_image", info, f"{_id(ex)}#caption{i}", Item(text=c), image) for i, c in _captions(ex)]


def image_to_text(ex: Example, info: SourceInfo) -> list[Pair]:
    """One pair per caption: image -> caption."""
    image = _image_item(ex)
    return [_pair("image_to_text", info, f"{_id(ex)}#caption{i}", image, Item(text=c)) for i, c in _captions(ex)]


def vqa(ex: Example, info: SourceInfo) -> list[Pair]:
    """One pair per question: image + question -> answer text."""
    qa = _get(ex, "qa")
    questions, answers = _texts(qa, "question"), _texts(qa, "answer")
    image = _image(ex)
    return [_pair("vqa", info, f"{_id(ex)}#qa{i}", Item(text=q, image=image), Item(text=a))
            for i, (q, a) in enumerate(zip(questions, answers)) if q.strip() and a.strip()]


def _box_list(ex: Example, *, angles: bool = False) -> list[Box]:
    """The example's boxes, never labelled: the builders' box_labels would put the object's class name beside
    its coordinates, and a region query or candidate must be found by what is in the box, not by text."""
    xyxy = _boxes(ex)
    turns = np.asarray(ex["angles"], np.float64).reshape(-1) if angles and "angles" in ex else [None] * len(xyxy)
    out = []
    for i, (b, angle) in enumerate(zip(xyxy, turns)):
        try:
            out.append(Box(tuple(b), angle=None if angle is None else float(angle) % 360.0))
        except RecordError as err:
            raise located(err, prefix=f"boxes[{i}]") from None
    return out


def _region_item(ex: Example, boxes: Sequence[Box]) -> Item:
    try:
        return _image_item(ex, boxes=boxes)
    except RecordError as err:  # a box outside the image: name the builder's feature
        raise RecordError(err.reason, field=f"boxes ({err.field})") from None


def region_caption(ex: Example, info: SourceInfo) -> list[Pair]:
    """Image + one box -> its caption; negatives are the captions of the image's other boxes.

    DIOR-RSVG and VRSBench use the object's expression as its caption, GeoScenes its region caption,
    GeoChat-Bench region_captioning its caption (with the box's rotation angle).
    """
    key = ("region_captions" if "region_captions" in ex else
           "captions" if "captions" in ex and "expressions" not in ex else "expressions")
    if key == "expressions" and "question_id" in ex:
        raise RecordError("GeoChat-Bench region captions come from the geochat_bench/region_captioning config, "
                          "not referring", field="captions")
    texts = _texts(ex, key)
    boxes = _box_list(ex, angles=True)
    if key == "captions":  # GeoChat region captioning: one caption for the (usually single) box set
        if not texts or not texts[0].strip():
            raise RecordError("expected one non-empty caption", field="captions")
        return [_pair("region_caption", info, _id(ex, "question_id"), _region_item(ex, boxes), Item(text=texts[0]))]
    _check_per_box(texts, boxes, key)
    pairs = []
    for i, (box, text) in enumerate(zip(boxes, texts)):
        if not text.strip():
            continue
        others = [Item(text=t) for j, t in enumerate(texts) if j != i and t.strip() and t != text]
        pairs.append(_pair("region_caption", info, _object_id(ex, i), _region_item(ex, [box]), Item(text=text),
                           others))
    return pairs


def referring_expression(ex: Example, info: SourceInfo) -> list[Pair]:
    """Image + expression -> image + the referred box; negatives are the image's other boxes (VRSBench).

    The candidate is the region alone, image and box tokens with no class name: with
    ``<|object_ref_start|>ship<|object_ref_end|>`` beside the box, "the red ship" is found by matching words
    and the box is never read (on GeoScenes a model trained that way reached 29 P@1 on referring expressions
    but 3 on region captions, which need the box read; docs/demo.md).

    GeoChat-Bench's referring config gives one expression for a SET of boxes: the positive holds them all.
    """
    if "expressions" not in ex and "question_id" in ex:
        raise RecordError("GeoChat-Bench referring expressions come from the geochat_bench/referring config, "
                          "not region_captioning", field="expressions")
    texts = _texts(ex, "expressions")
    boxes = _box_list(ex)
    if "question_id" in ex:  # GeoChat: one expression, all boxes are its target
        if not texts or not texts[0].strip():
            raise RecordError("expected one non-empty referring expression", field="expressions")
        return [_pair("referring_expression", info, _id(ex, "question_id"), _image_item(ex, text=texts[0]),
                      _region_item(ex, boxes))]
    targets = _expression_boxes(ex, len(texts), len(boxes))
    image = _image(ex)
    pairs = []
    for i, text in zip(targets, texts):
        if not text.strip():
            continue
        others = [_region_item(ex, [b]) for j, b in enumerate(boxes) if j != i and b.xyxy != boxes[i].xyxy]
        pairs.append(_pair("referring_expression", info, _object_id(ex, i), Item(text=text, image=image),
                           _region_item(ex, [boxes[i]]), others))
    return pairs


def _expression_boxes(ex: Example, num_expressions: int, num_boxes: int) -> list[int]:
    """The box each expression refers to: GeoScenes names it (expression_box_index), else one per box."""
    if "expression_box_index" not in ex:
        _check_per_box(range(num_expressions), range(num_boxes), "expressions")
        return list(range(num_boxes))
    index = [int(i) for i in np.asarray(ex["expression_box_index"]).reshape(-1)]
    if len(index) != num_expressions or any(not 0 <= i < num_boxes for i in index):
        raise RecordError(f"{index} is not one box index in [0, {num_boxes}) per expression ({num_expressions})",
                          field="expression_box_index")
    return index


def _object_id(ex: Example, i: int) -> str:
    if "object_id" in ex:  # DIOR-RSVG: one object per example, its global index is the id
        return _id(ex, "object_id")
    return f"{_id(ex)}#object{i}"


def _check_per_box(texts: Sequence[str], boxes: Sequence[Box], key: str) -> None:
    if len(texts) != len(boxes):
        raise RecordError(f"{len(texts)} {key} for {len(boxes)} boxes; expected one per box", field=key)


def semantic_geo_localization(ex: Example, info: SourceInfo) -> list[Pair]:
    """Image -> its location: the coordinates, with the place's description where the source has one
    (GeoScenes), as in the paper's "Latitude, Longitude (+ optional semantic text)"; fmow and skyscript give
    location-only candidates."""
    text = _text(ex, "place_description") if "place_description" in ex else None
    return [_pair("semantic_geo_localization", info, _id(ex), _image_item(ex), Item(text=text, geo=_geo(ex)))]


def geo_image_retrieval(ex: Example, info: SourceInfo) -> list[Pair]:
    """A description + location -> the image: fmow describes with its class name, skyscript with captions,
    GeoScenes with its place description."""
    geo, image = _geo(ex), _image_item(ex)
    if "place_description" in ex:
        return [_pair("geo_image_retrieval", info, _id(ex), Item(text=_text(ex, "place_description"), geo=geo),
                      image)]
    if "captions" in ex:
        return [_pair("geo_image_retrieval", info, f"{_id(ex)}#caption{i}", Item(text=c, geo=geo), image)
                for i, c in _captions(ex)]
    return [_pair("geo_image_retrieval", info, _id(ex), Item(text=_class_name(ex, info), geo=geo), image)]


def composed_retrieval(ex: Example, info: SourceInfo) -> list[Pair]:
    """Reference image + change text -> the changed image; the unchanged reference is the hard negative."""
    composed = _get(ex, "composed")
    try:
        change = _text(composed, "change")
        target = Item(image=_image(composed, "target_image"), image_size=_size(ex))
    except RecordError as err:
        raise located(err, prefix="composed") from None
    reference = _image_item(ex)
    return [_pair("composed_retrieval", info, _id(ex), dataclasses.replace(reference, text=change), target,
                  [reference])]


def pair_json(raw: bytes | str | Mapping, info: SourceInfo) -> list[Pair]:
    """A ready-made Pair as pair_to_dict JSON (an ArrayRecord or in-memory record): GeoScenes, composed retrieval.

    The Pair's own task and instructions are kept; its source is the one written in the record.
    """
    if isinstance(raw, (bytes, np.bytes_)):
        raw = _decode_line(bytes(raw))
    elif isinstance(raw, str):
        raw = _decode_line(raw.encode("utf-8"))
    return [pair_from_dict(raw)]


# ------------------------------------------------------------------------------------------------- registry
ADAPTERS: dict[tuple[str, str], Adapter] = {
    ("rs_scenes", "scene_classification"): scene_classification,
    ("fmow", "scene_classification"): scene_classification,
    ("fmow", "semantic_geo_localization"): semantic_geo_localization,
    ("fmow", "geo_image_retrieval"): geo_image_retrieval,
    ("rs_captions", "text_to_image"): text_to_image,
    ("rs_captions", "image_to_text"): image_to_text,
    ("skyscript", "text_to_image"): text_to_image,
    ("skyscript", "image_to_text"): image_to_text,
    ("skyscript", "semantic_geo_localization"): semantic_geo_localization,
    ("skyscript", "geo_image_retrieval"): geo_image_retrieval,
    ("rsvqa", "vqa"): vqa,
    ("dior_rsvg", "referring_expression"): referring_expression,
    ("dior_rsvg", "region_caption"): region_caption,
    ("geochat_bench", "referring_expression"): referring_expression,
    ("geochat_bench", "region_caption"): region_caption,
    ("vrsbench", "text_to_image"): text_to_image,
    ("vrsbench", "image_to_text"): image_to_text,
    ("vrsbench", "vqa"): vqa,
    ("vrsbench", "region_caption"): region_caption,
    ("vrsbench", "referring_expression"): referring_expression,
    ("geoscenes", "scene_classification"): scene_classification,
    ("geoscenes", "text_to_image"): text_to_image,
    ("geoscenes", "image_to_text"): image_to_text,
    ("geoscenes", "vqa"): vqa,
    ("geoscenes", "region_caption"): region_caption,
    ("geoscenes", "referring_expression"): referring_expression,
    ("geoscenes", "semantic_geo_localization"): semantic_geo_localization,
    ("geoscenes", "geo_image_retrieval"): geo_image_retrieval,
    ("geoscenes", "composed_retrieval"): composed_retrieval,
    **{("pairs", kind): pair_json for kind in TASK_KINDS},
}

def adapter(dataset: str, task: str) -> Adapter:
    """The adapter of a builder ("rs_scenes" or "rs_scenes/aid") for a task kind; errors list what exists."""
    if task not in TASK_KINDS:
        raise ValueError(f"unknown task kind {task!r}; expected one of {', '.join(TASK_KINDS)}")
    builder = dataset.split("/", 1)[0]
    if (builder, task) not in ADAPTERS:
        offered = sorted(t for b, t in ADAPTERS if b == builder)
        raise ValueError(f"no adapter for dataset {dataset!r} and task {task!r}; "
                         + (f"{builder} offers {', '.join(offered)}" if offered
                            else f"known datasets: {', '.join(sorted({b for b, _ in ADAPTERS}))}"))
    return ADAPTERS[(builder, task)]
