"""Writes the tiny rs_captions fixtures in the real layouts (run once; the outputs are committed).

rsicd/: dataset_rsicd.json + RSICD_images/*.jpg (5 images: train, val, 3 test);
rsitmd/: dataset_RSITMD.json (with keywords) + images/<class>_<n>.tif, 4 images (train, 3 test);
ucm_captions/: dataset.json + imgs/<n>.tif (numbered TIFs, 3 images: train, val, test).
Three test images per RSMEB source, so its retrieval tasks rank a gallery of at least 3; new images are
appended, so the earlier ones keep their seeds and bytes.
"""
import json
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent


def tiny_image(path: Path, seed: int, fmt: str, size: int = 32) -> None:
    rng = np.random.default_rng(seed)
    arr = np.clip(rng.integers(0, 200, 3)[None, None, :] + np.linspace(0, 50, size)[:, None, None]
                  + np.zeros((size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt, **({"quality": 70} if fmt == "JPEG" else {}))


def karpathy(entries: list[tuple[str, str, list[str]]], dataset: str, keywords=None) -> dict:
    images, sentid = [], 0
    for imgid, (filename, split, caps) in enumerate(entries):
        sents = []
        for raw in caps:
            sents.append({"tokens": raw.rstrip(" .").split(), "raw": raw, "imgid": imgid, "sentid": sentid})
            sentid += 1
        img = {"sentids": [s["sentid"] for s in sents], "imgid": imgid, "sentences": sents, "split": split,
               "filename": filename}
        if keywords is not None:
            img["keywords"] = keywords[imgid]
        images.append(img)
    return {"images": images, "dataset": dataset}


def main() -> None:
    rsicd = [("airport_1.jpg", "train", ["many planes are parked next to a long building .",
                                         "several airplanes are near the terminal .",
                                         "many planes are parked next to a long building ."]),
             ("00012.jpg", "val", ["a green field with a road ."]),
             ("beach_3.jpg", "test", ["the sea is next to a yellow beach .", "waves hit the beach ."]),
             ("church_12.jpg", "test", ["a church with a cross-shaped roof is among houses ."]),
             ("parking_7.jpg", "test", ["many cars are parked in rows .", "a parking lot beside a road ."])]
    for seed, (name, _, _) in enumerate(rsicd):
        tiny_image(HERE / "rsicd" / "RSICD_images" / name, seed, "JPEG")
    (HERE / "rsicd" / "dataset_rsicd.json").write_text(json.dumps(karpathy(rsicd, "rsicd")))

    rsitmd = [("boat_5.tif", "train", ["a boat is in the harbor .", "a white boat floats on the water ."]),
              ("playground_10.tif", "test", ["a red track surrounds a green field ."]),
              ("bridge_2.tif", "test", ["a bridge crosses a dark river .", "two roads meet at the bridge ."]),
              ("farmland_31.tif", "test", ["square fields of green and brown crops ."])]
    for seed, (name, _, _) in enumerate(rsitmd):
        tiny_image(HERE / "rsitmd" / "images" / name, 10 + seed, "TIFF")
    keywords = [["boat", "harbor"], ["playground"], ["bridge", "river"], ["farmland"]]
    (HERE / "rsitmd" / "dataset_RSITMD.json").write_text(json.dumps(karpathy(rsitmd, "rsitmd", keywords=keywords)))

    ucm = [("1.tif", "train", ["there is a piece of farmland ."]),
           ("2.tif", "val", ["many cars are parked in the lot ."]),
           ("3.tif", "test", ["a river flows through the forest ."])]
    for seed, (name, _, _) in enumerate(ucm):
        tiny_image(HERE / "ucm_captions" / "imgs" / name, 20 + seed, "TIFF")
    (HERE / "ucm_captions" / "dataset.json").write_text(json.dumps(karpathy(ucm, "ucm")))


if __name__ == "__main__":
    main()
