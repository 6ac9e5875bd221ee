"""Writes the tiny VRSBench fixture in the real layout (run once; the outputs are committed).

Images_{train,val}/<name>.png (64x48) and Annotations_{train,val}/<name>.json with caption, objects
(obj_corner = 4 corners normalised to [0, 1]) and qa_pairs. The train image is DOTA-style (P..._....),
with a rotated object; the val images are DIOR-style. The second val image has two objects and two questions,
so RSMEB's VRSBench tasks (validation is their evaluation split) rank 3 boxes, captions and answers.
"""
import json
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent
W, H = 64, 48

ANNOTATIONS = {
    ("train", "P0003_0002.png"): {
        "caption": "The image shows a harbor with two ships docked at a long pier.",
        "objects": [
            {"obj_id": 1, "obj_cls": "ship", "obj_corner": [0.25, 0.5, 0.5, 0.25, 0.625, 0.5, 0.375, 0.75],
             "obj_coord": "<25><25><62><75>", "is_unique": True, "obj_size": "small",
             "referring_sentence": "the ship closest to the pier end"},
            {"obj_id": 2, "obj_cls": "harbor", "obj_corner": [0.0, 0.0, 1.0, 0.0, 1.0, 0.25, 0.0, 0.25],
             "obj_coord": "<0><0><100><25>", "is_unique": False, "obj_size": "large",
             "referring_sentence": "the long pier along the top edge"}],
        "qa_pairs": [{"question": "How many ships are there?", "answer": "2", "type": "object quantity"},
                     {"question": "Is there a harbor?", "answer": "Yes", "type": "object existence"}]},
    ("val", "00123_0001.png"): {
        "caption": "A small airport apron with one airplane.",
        "objects": [{"obj_id": 5, "obj_cls": "airplane", "obj_corner": [0.5, 0.5, 0.75, 0.5, 0.75, 1.0, 0.5, 1.0],
                     "obj_coord": "<50><50><75><100>", "is_unique": True, "obj_size": "medium",
                     "referring_sentence": "the airplane at the bottom"}],
        "qa_pairs": [{"question": "What color is the airplane?", "answer": "White", "type": "object color"}]},
    ("val", "00456_0003.png"): {
        "caption": "A bridge over a river with a small boat passing under it.",
        "objects": [
            {"obj_id": 2, "obj_cls": "bridge", "obj_corner": [0.0, 0.375, 1.0, 0.375, 1.0, 0.625, 0.0, 0.625],
             "obj_coord": "<0><37><100><62>", "is_unique": True, "obj_size": "large",
             "referring_sentence": "the bridge crossing the whole image"},
            {"obj_id": 3, "obj_cls": "ship", "obj_corner": [0.125, 0.75, 0.25, 0.75, 0.25, 0.875, 0.125, 0.875],
             "obj_coord": "<12><75><25><87>", "is_unique": True, "obj_size": "small",
             "referring_sentence": "the small boat below the bridge on the left"}],
        "qa_pairs": [{"question": "Is there a bridge?", "answer": "Yes", "type": "object existence"},
                     {"question": "How many ships are there?", "answer": "1", "type": "object quantity"}]},
}


def main() -> None:
    for i, ((split, name), ann) in enumerate(ANNOTATIONS.items()):
        img_dir, ann_dir = HERE / f"Images_{split}", HERE / f"Annotations_{split}"
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        arr = np.zeros((H, W, 3), np.uint8)
        arr[..., 2 - i] = np.linspace(0, 255, H, dtype=np.uint8)[:, None]
        Image.fromarray(arr).save(img_dir / name)
        (ann_dir / name.replace(".png", ".json")).write_text(json.dumps({"image": name, **ann}, indent=1))


if __name__ == "__main__":
    main()
