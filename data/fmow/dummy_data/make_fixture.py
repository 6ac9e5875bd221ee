"""Writes the tiny fMoW-rgb fixture in the real layout (run once; the outputs are committed).

train/airport/airport_0/airport_0_0_rgb.{jpg,json}  bounding_boxes as a list, trapezoid footprint
train/zoo/zoo_3/zoo_3_1_rgb.{jpg,json}              bounding_boxes as a single dict
val/port/port_7/port_7_0_rgb.{jpg,json}
val/airport/airport_12/airport_12_0_rgb.{jpg,json}
val/zoo/zoo_5/zoo_5_1_rgb.{jpg,json}                three val locations: RSMEB's geo task ranks 3 of them
test/0000001/0000001_0_rgb.{jpg,json}               no category, as in the real test set
Images are 40x32 JPEGs (w != h so swaps show).
"""
import json
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent
W, H = 40, 32


def ring(lon: float, lat: float, d: float = 0.002) -> str:
    return f"POLYGON (({lon} {lat}, {lon + d} {lat}, {lon + d} {lat + d}, {lon} {lat + d}, {lon} {lat}))"


def write(rel: str, boxes, raw_location: str, seed: int, utm: str, cc: str) -> None:
    path = HERE / f"{rel}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((H, W, 3), 30 + 40 * seed, np.uint8)
    arr[:, ::5, 2] = 220
    Image.fromarray(arr).save(path.with_suffix(".jpg"), format="JPEG", quality=70)
    meta = {"img_filename": f"{path.stem}.jpg", "img_width": W, "img_height": H, "gsd": 0.5 + seed / 10,
            "utm": utm, "country_code": cc, "cloud_cover": seed, "timestamp": f"2015-0{seed + 1}-12T10:11:12Z",
            "scan_direction": "Forward", "pan_resolution_dbl": 0.5, "off_nadir_angle_dbl": 20.1,
            "raw_location": raw_location, "bounding_boxes": boxes}
    path.write_text(json.dumps(meta, indent=1))


def main() -> None:
    trapezoid = "POLYGON ((10 50, 10.004 50, 10.004 50.001, 10 50.003, 10 50))"
    write("train/airport/airport_0/airport_0_0_rgb",
          [{"ID": 1, "box": [5, 6, 20, 10], "category": "airport", "visible": "True", "raw_location": trapezoid},
           {"ID": 2, "box": [0, 0, 40, 32], "category": "airport", "visible": "False", "raw_location": trapezoid}],
          trapezoid, 0, "32U", "DEU")
    write("train/zoo/zoo_3/zoo_3_1_rgb", {"ID": 3, "box": [1, 2, 3, 4], "category": "zoo", "visible": "True"},
          ring(-122.5, 37.7), 1, "10S", "USA")
    write("val/port/port_7/port_7_0_rgb", [{"ID": 4, "box": [10, 10, 30, 22], "category": "port"}],
          ring(151.2, -33.9), 2, "56H", "AUS")
    write("test/0000001/0000001_0_rgb", [{"ID": 5, "box": [2, 2, 8, 8]}], ring(0.1, 5.0), 3, "31N", "GHA")
    write("val/airport/airport_12/airport_12_0_rgb", [{"ID": 6, "box": [0, 4, 36, 20], "category": "airport"}],
          ring(139.78, 35.55), 4, "54S", "JPN")
    write("val/zoo/zoo_5/zoo_5_1_rgb", [{"ID": 7, "box": [12, 8, 16, 12], "category": "zoo"}],
          ring(-43.23, -22.9), 5, "23K", "BRA")


if __name__ == "__main__":
    main()
