"""Writes the tiny GeoChat-Bench fixture in the real layout (run once; the outputs are committed).

As a user has it after downloading: GeoChat-Bench/ (the HF dataset repo MBZUAI/GeoChat-Bench) holds
referring.jsonl and region_captioning.jsonl (one JSON object per line, GeoChat-Bench fields), and
GeoChat_Instruct's images.zip, unzipped where it was downloaded, gives
share/softwares/kartik/GeoChat_finetuning/final_images_llava/<image_id>.png: here a DOTA-style id (P...) at
50x40 and a DIOR-style id at 40x40, beside a JPEG of the instruction set that the benchmark does not use. Referring ground
truth is given once as 4-corner pixel polygons and once as a pixel xyxy list; region captioning uses box
strings {<x1><y1><x2><y2>|<angle>} in percent, three regions (two on the DOTA-style image), so RSMEB's
region caption retrieval ranks 3 captions.
"""
import json
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent
BENCH = HERE / "GeoChat-Bench"
IMAGE_DIR = HERE / "share" / "softwares" / "kartik" / "GeoChat_finetuning" / "final_images_llava"
IMAGES = {"P0003_0001": (50, 40), "00123": (40, 40)}


def main() -> None:
    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    BENCH.mkdir(exist_ok=True)
    for i, (image_id, (w, h)) in enumerate(IMAGES.items()):
        arr = np.zeros((h, w, 3), np.uint8)
        arr[..., i] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
        Image.fromarray(arr).save(IMAGE_DIR / f"{image_id}.png")
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(IMAGE_DIR / "airport_12.jpg")
    referring = [
        {"question_id": 0, "image_id": "P0003_0001", "question": "the small vehicle at the top left",
         "ground_truth": [[[2, 3], [12, 3], [12, 9], [2, 9]], [[30, 20], [45, 22], [44, 30], [29, 28]]],
         "type": "ref", "dataset": "SOTA", "obj_ids": [4, 7], "size_group": "small"},
        {"question_id": 1, "image_id": "00123", "question": "the large storage tank",
         "ground_truth": [[10, 12, 30, 36]], "type": "ref", "dataset": "SIOR", "obj_ids": [2],
         "size_group": "large"},
    ]
    (BENCH / "referring.jsonl").write_text("".join(json.dumps(r) + "\n" for r in referring))
    region = [
        {"question_id": 0, "image_id": "P0003_0001", "question": "{<10><25><50><75>|<0>}",
         "ground_truth": "a white plane parked near the terminal", "type": "region", "dataset": "SOTA",
         "obj_ids": [1], "size_group": "medium"},
        {"question_id": 1, "image_id": "00123", "question": "{<20><40><60><60>|<90>}",
         "ground_truth": "a ship in the harbour", "type": "region", "dataset": "SIOR", "obj_ids": [3],
         "size_group": "small"},
        {"question_id": 2, "image_id": "P0003_0001", "question": "{<60><10><90><40>|<30>}",
         "ground_truth": "a small vehicle on the service road", "type": "region", "dataset": "SOTA",
         "obj_ids": [2], "size_group": "small"},
    ]
    (BENCH / "region_captioning.jsonl").write_text("".join(json.dumps(r) + "\n" for r in region))


if __name__ == "__main__":
    main()
