"""Writes the tiny SkyScript fixture in the real layout (run once; the outputs are committed).

SkyScript_{train_top30pct,val_5K,test_30K}_filtered_by_CLIP_openai.csv (filepath, title,
title_multi_objects, similarity_title), images{2,4}/<t><osm id>_<SRC>_<yy>.jpg (36x24) and
meta{2,4}/<same>.pickle with box = (west, south, east, north), time, center_tags, surrounding_tags.
One image box crosses the antimeridian. The test CSV has 3 rows, so RSMEB's SkyScript tasks rank 3
locations / images.
"""
import csv
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent
ROWS = {
    "SkyScript_train_top30pct_filtered_by_CLIP_openai.csv": [
        ("images2/w123456_CH_19.jpg", "a swimming pool", "a swimming pool next to a building",
         (8.540, 47.370, 8.542, 47.372)),
        ("images4/n987_US_20.jpg", "a wind turbine", "", (-101.002, 35.000, -100.998, 35.004))],
    "SkyScript_val_5K_filtered_by_CLIP_openai.csv": [
        ("images4/a55_NZ_18.jpg", "a runway", "a runway and a taxiway", (179.999, -16.001, -179.999, -15.999))],
    "SkyScript_test_30K_filtered_by_CLIP_openai.csv": [
        ("images2/w777_CH_21.jpg", "a parking lot", "", (7.44, 46.94, 7.442, 46.942)),
        ("images4/n4242_FR_20.jpg", "a water tower", "a water tower beside a field", (2.35, 48.85, 2.352, 48.852)),
        ("images2/w31337_JP_19.jpg", "a baseball field", "", (139.69, 35.68, 139.692, 35.682))],
}


def main() -> None:
    for i, (csv_name, rows) in enumerate(ROWS.items()):
        with open(HERE / csv_name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filepath", "title", "title_multi_objects", "similarity_title"])
            for j, (filepath, title, multi, box) in enumerate(rows):
                writer.writerow([filepath, title, multi, f"0.3{i}{j}"])
                img = HERE / filepath
                img.parent.mkdir(parents=True, exist_ok=True)
                arr = np.full((24, 36, 3), 50 + 60 * j + 20 * i, np.uint8)
                arr[::3, :, 0] = 240
                Image.fromarray(arr).save(img, format="JPEG", quality=70)
                meta_dir = HERE / img.parent.name.replace("images", "meta")
                meta_dir.mkdir(parents=True, exist_ok=True)
                meta = {"box": box, "time": (2019, 6, 1, 10, 30), "center_tags": {"leisure": "swimming_pool"},
                        "surrounding_tags": [{"building": "yes"}]}
                (meta_dir / f"{img.stem}.pickle").write_bytes(pickle.dumps(meta, protocol=4))


if __name__ == "__main__":
    main()
