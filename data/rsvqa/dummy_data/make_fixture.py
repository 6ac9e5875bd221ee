"""Writes the tiny RSVQA-LR and -HR fixtures in the real layouts (run once; the outputs are committed).

lr/: LR_split_{train,val,test}_{images,questions,answers}.json + Images_LR/<id>.tif (32x32);
hr/: USGS_split_{train,val,test,test_phili}_{...}.json + Data/<id>.tif. One image per split, plus a second
test image in each, whose questions make the test answer vocabulary (RSMEB's VQA candidates) 3 answers; the
LR train image has an inactive question (dropped) and one whose answer id is not its own id.
"""
import json
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent
DATE = "2019-09-25 10:20:17.489417"


def write_split(folder: Path, prefix: str, split: str, image_dir: str, images: dict[int, list]) -> None:
    """images: {image id: [(question id, type, question, answer id, answer, active)]}."""
    imgs, qs, ans = [], [], []
    for img_id, questions in images.items():
        imgs.append({"id": img_id, "date_added": DATE, "original_name": f"tile_{img_id}.tif", "sensor": "s2",
                     "upperleft_map-x": 100000.0 + img_id, "upperleft_map-y": 450000.0, "res-x": 10.0,
                     "res-y": -10.0, "people_id": 1, "type": "", "questions_ids": [q[0] for q in questions],
                     "active": True})
        for qid, qtype, text, aid, answer, active in questions:
            qs.append({"id": qid, "date_added": DATE, "img_id": img_id, "people_id": 1, "type": qtype,
                       "question": text, "answers_ids": [aid], "active": active})
            ans.append({"id": aid, "date_added": DATE, "question_id": qid, "people_id": 1, "answer": answer,
                        "active": True})
        arr = np.full((32, 32, 3), 40 + 50 * (img_id % 4), np.uint8)
        arr[::4] = 200
        (folder / image_dir).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(folder / image_dir / f"{img_id}.tif", format="TIFF")
    for kind, entries in (("images", imgs), ("questions", qs), ("answers", ans)):
        (folder / f"{prefix}_{split}_{kind}.json").write_text(json.dumps({kind: entries}))


def main() -> None:
    lr = HERE / "lr"
    lr.mkdir(parents=True, exist_ok=True)
    write_split(lr, "LR_split", "train", "Images_LR", {0: [
        (0, "presence", "Is there a road?", 0, "yes", True),
        (1, "count", "How many buildings are there?", 7, "12", True),
        (2, "rural_urban", "Is it a rural or an urban area", 2, "rural", False)]})
    write_split(lr, "LR_split", "val", "Images_LR", {1: [(3, "comp", "Are there more water areas than roads?", 3,
                                                          "no", True)]})
    write_split(lr, "LR_split", "test", "Images_LR", {
        2: [(4, "rural_urban", "Is it a rural or an urban area", 4, "urban", True)],
        3: [(5, "presence", "Is there a water area?", 5, "yes", True),
            (6, "count", "How many roads are there?", 6, "3", True)]})
    hr = HERE / "hr"
    hr.mkdir(parents=True, exist_ok=True)
    for img_id, split in enumerate(("train", "val", "test", "test_phili")):
        images = {10 + img_id: [(100 + img_id, "area", "What is the area covered by buildings?", 100 + img_id,
                                 "between 100m2 and 1000m2", True)]}
        if split == "test":
            images[14] = [(104, "presence", "Is there a residential building?", 104, "yes", True),
                          (105, "count", "How many buildings are there?", 105, "4", True)]
        write_split(hr, "USGS_split", split, "Data", images)


if __name__ == "__main__":
    main()
