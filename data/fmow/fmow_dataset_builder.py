"""fMoW-rgb: one example per image, with its category, boxes, footprint centre (lat/lon) and metadata.

Layout: `train|val/<category>/<category>_<id>/<category>_<id>_<t>_rgb.{jpg,json}` and, without categories,
`test/<7 digits>/<7 digits>_<t>_rgb.{jpg,json}` (label -1 there). The JSON carries `img_width`,
`img_height`, `gsd`, `timestamp`, `country_code`, `utm`, `cloud_cover`, `raw_location` (a WKT
`POLYGON ((lon lat, ...))` footprint) and `bounding_boxes`, a list OR a single dict of
`{box: [x, y, w, h] pixels, category, ...}`. Boxes become pixel xyxy; lat/lon is the area centroid of the
footprint polygon (the vertex mean for a degenerate one).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from vlm2geovec_jax.inputs import tfds_common
from vlm2geovec_jax.inputs.errors import RecordError

CATEGORIES = (
    "airport", "airport_hangar", "airport_terminal", "amusement_park", "aquaculture", "archaeological_site",
    "barn", "border_checkpoint", "burial_site", "car_dealership", "construction_site", "crop_field", "dam",
    "debris_or_rubble", "educational_institution", "electric_substation", "factory_or_powerplant",
    "fire_station", "flooded_road", "fountain", "gas_station", "golf_course", "ground_transportation_station",
    "helipad", "hospital", "impoverished_settlement", "interchange", "lake_or_pond", "lighthouse",
    "military_facility", "multi-unit_residential", "nuclear_powerplant", "office_building",
    "oil_or_gas_facility", "park", "parking_lot_or_garage", "place_of_worship", "police_station", "port",
    "prison", "race_track", "railway_bridge", "recreational_facility", "road_bridge", "runway", "shipyard",
    "shopping_mall", "single-unit_residential", "smokestack", "solar_farm", "space_facility", "stadium",
    "storage_tank", "surface_mine", "swimming_pool", "toll_booth", "tower", "tunnel_opening",
    "waste_disposal", "water_treatment_facility", "wind_farm", "zoo", "false_detection")
SPLITS = {"train": "train", "validation": "val", "test": "test"}
_POLYGON = re.compile(r"^\s*POLYGON\s*\(\(\s*(.*?)\s*\)", re.IGNORECASE)


def wkt_polygon_centroid(wkt: str) -> tuple[float, float]:
    """(lat, lon) of the outer ring of a WKT `POLYGON ((lon lat, ...))`: area centroid, vertex mean if flat."""
    match = _POLYGON.match(wkt or "")
    if not match:
        raise ValueError(f"expected 'POLYGON ((lon lat, ...))', got '{str(wkt)[:60]}'")
    pts = np.array([[float(v) for v in p.split()[:2]] for p in match.group(1).split(",")], np.float64)
    if len(pts) > 1 and np.array_equal(pts[0], pts[-1]):
        pts = pts[:-1]
    origin = pts[0]
    x, y = (pts - origin).T  # shoelace on local offsets: no cancellation between large coordinates
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = cross.sum() / 2
    if abs(area) < 1e-18:
        return float(pts[:, 1].mean()), float(pts[:, 0].mean())
    cx = ((x + np.roll(x, -1)) * cross).sum() / (6 * area)
    cy = ((y + np.roll(y, -1)) * cross).sum() / (6 * area)
    return float(origin[1] + cy), float(origin[0] + cx)


def xywh_to_xyxy(box) -> list[float]:
    x, y, w, h = (float(v) for v in box)
    return [x, y, x + w, y + h]


class Builder(tfds_common.ManualBuilder):
    """fMoW-rgb (~364k train, ~53k val images; 62 categories + false_detection)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Unpack fMoW-rgb (train/, val/, optionally test/) in the manual dir, with or without its fmow-rgb/ "
        "folder. See data/README.md.")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "image_id": tfds.features.Text(),
            "label": tfds.features.ClassLabel(names=CATEGORIES),
            "image_size": tfds_common.SIZE_FEATURE,
            "boxes": tfds_common.BOX_FEATURE,
            "box_labels": tfds.features.Sequence(tfds.features.Text()),
            "lat": tfds_common.DEGREES_FEATURE,
            "lon": tfds_common.DEGREES_FEATURE,
            "gsd": np.float32,
            "timestamp": tfds.features.Text(),
            "country_code": tfds.features.Text(),
            "utm": tfds.features.Text(),
            "cloud_cover": np.float32,
        }))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = tfds_common.find_root(Path(dl_manager.manual_dir), "train")
        return {split: self._generate_examples(root / folder, labelled=folder != "test")
                for split, folder in SPLITS.items() if (root / folder).is_dir()}

    def _generate_examples(self, split_dir: Path, labelled: bool):
        for json_path in sorted(split_dir.rglob("*_rgb.json")):
            rel = json_path.relative_to(split_dir)
            meta = tfds_common.read_json(json_path)
            yield json_path.stem, self._example(json_path, meta, rel.parts[0] if labelled else None)

    def _example(self, json_path: Path, meta: dict, category: str | None) -> dict:
        file, record = str(json_path), json_path.stem
        if category is not None and category not in CATEGORIES:
            raise RecordError(f"unknown category folder '{category}'", file=file, record=record, field="category")
        img = tfds_common.encode_image(json_path.parent / meta.get("img_filename", f"{json_path.stem}.jpg"),
                                       record=record)
        size = (int(tfds_common.require_key(meta, "img_width", file=file, record=record)),
                int(tfds_common.require_key(meta, "img_height", file=file, record=record)))
        if size != (img.width, img.height):
            raise RecordError(f"{size[0]}x{size[1]} differs from the image's {img.width}x{img.height}",
                              file=file, record=record, field="img_width/img_height")
        boxes_meta = meta.get("bounding_boxes", [])
        boxes_meta = [boxes_meta] if isinstance(boxes_meta, dict) else list(boxes_meta)
        xyxy = [xywh_to_xyxy(tfds_common.require_key(b, "box", file=file, record=record)) for b in boxes_meta]
        boxes = tfds_common.check_boxes(xyxy, img.width, img.height, file=file, record=record,
                                        field="bounding_boxes")
        try:
            lat, lon = wkt_polygon_centroid(tfds_common.require_key(meta, "raw_location", file=file,
                                                                    record=record))
        except ValueError as e:
            raise RecordError(str(e), file=file, record=record, field="raw_location") from e
        lat, lon = tfds_common.check_geo(lat, lon, file=file, record=record, field="raw_location")
        return {"image": img.data, "image_id": record, "label": category if category is not None else -1,
                "image_size": img.size, "boxes": boxes,
                "box_labels": [str(b.get("category", "")) for b in boxes_meta],
                "lat": lat, "lon": lon, "gsd": float(meta.get("gsd", np.nan)),
                "timestamp": str(meta.get("timestamp", "")), "country_code": str(meta.get("country_code", "")),
                "utm": str(meta.get("utm", "")), "cloud_cover": float(meta.get("cloud_cover", np.nan))}
