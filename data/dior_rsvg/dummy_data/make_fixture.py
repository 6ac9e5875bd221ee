"""Writes the tiny DIOR-RSVG fixture in the real layout (run once; the outputs are committed).

DIOR_RSVG/Annotations/0000{1,2,3}.xml (VOC-like, child order name, pose, bndbox, description, as the
reference loader reads them positionally), JPEGImages/0000{1,2,3}.jpg (48x40, non-square so w/h swaps show),
and train/val/test.txt holding global object indices: objects 0,1 are in 00001.xml, 2,3 in 00002.xml, 4-7 in
00003.xml. As in the release, an image's objects fall in different splits. The test split holds objects 2, 5
and 7, so RSMEB's referring task ranks 3 boxes; TFDS's key-hash order of the test split puts object 2 first.
"""
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent / "DIOR_RSVG"
W, H = 48, 40

OBJECTS = {
    "00001": [("vehicle", (3, 5, 20, 17), "a vehicle on the left of the road"),
              ("Expressway-Service-area", (22, 8, 47, 39), "the service area at the bottom right")],
    "00002": [("airplane", (0, 0, 16, 12), "the airplane in the top left corner"),
              ("storagetank", (30, 20, 48, 40), "the large storage tank on the right")],
    "00003": [("ship", (4, 24, 14, 34), "the ship at the bottom left"),
              ("harbor", (18, 2, 46, 22), "the harbor in the upper right"),
              ("ship", (30, 26, 40, 36), "the ship at the bottom right"),
              ("bridge", (0, 0, 12, 10), "the bridge in the top left corner")],
}
SPLITS = {"train.txt": [0, 3, 4], "val.txt": [1, 6], "test.txt": [2, 5, 7]}


def xml_text(stem: str, objects) -> str:
    objs = "".join(
        f"\n  <object>\n    <name>{name}</name>\n    <pose>Unspecified</pose>\n    <bndbox>\n"
        f"      <xmin>{x1}</xmin>\n      <ymin>{y1}</ymin>\n      <xmax>{x2}</xmax>\n      <ymax>{y2}</ymax>\n"
        f"    </bndbox>\n    <description>{desc}</description>\n  </object>"
        for name, (x1, y1, x2, y2), desc in objects)
    return (f"<annotation>\n  <filename>{stem}.jpg</filename>\n  <source>\n    <database>DIOR</database>\n"
            f"  </source>\n  <size>\n    <width>{W}</width>\n    <height>{H}</height>\n    <depth>3</depth>\n"
            f"  </size>\n  <segmented>0</segmented>{objs}\n</annotation>\n")


def main() -> None:
    (HERE / "Annotations").mkdir(parents=True, exist_ok=True)
    (HERE / "JPEGImages").mkdir(parents=True, exist_ok=True)
    for i, (stem, objects) in enumerate(OBJECTS.items()):
        (HERE / "Annotations" / f"{stem}.xml").write_text(xml_text(stem, objects))
        arr = np.full((H, W, 3), 60 + 80 * i, np.uint8)
        arr[:, : W // 2, 1] = 150
        Image.fromarray(arr).save(HERE / "JPEGImages" / f"{stem}.jpg", format="JPEG", quality=70)
    for name, indices in SPLITS.items():
        (HERE / name).write_text("".join(f"{k}\n" for k in indices))


if __name__ == "__main__":
    main()
