"""Writes the tiny rs_scenes fixtures in the real layouts (run once; the outputs are committed).

patternnet/PatternNet/images/<class>/<class>NNN.jpg, aid/AID/<ClassCamelCase>/<classlower>_<n>.jpg and
whu_rs19/WHU-RS19/<Class>/<classlower>_<nn>.jpg (class folders spelled as WHU-RS19 does, e.g. footballField),
3 JPEGs of 32x32 per class, so every split of the 60/20/20 rule gets one image per class. PatternNet and
WHU-RS19 have 3 classes, so their classification tasks rank 3 candidates; AID keeps 2 (tests pin its classes).
"""
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent


def tiny_jpeg(path: Path, seed: int, size: int = 32) -> None:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    ramp = np.linspace(0, 60, size)[None, :, None]
    arr = np.clip(base[None, None, :] + ramp + np.zeros((size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="JPEG", quality=70)


def main() -> None:
    seed = 0
    for cls in ("airplane", "beach"):
        for n in (1, 2, 3):
            seed += 1
            tiny_jpeg(HERE / "patternnet" / "PatternNet" / "images" / cls / f"{cls}{n:03d}.jpg", seed)
    for cls in ("BareLand", "Airport"):
        for n in (1, 2, 3):
            seed += 1
            tiny_jpeg(HERE / "aid" / "AID" / cls / f"{cls.lower()}_{n}.jpg", seed)
    for cls in ("Airport", "footballField"):  # seeds after the sets above, so their files are unchanged
        for n in (1, 2, 3):
            seed += 1
            tiny_jpeg(HERE / "whu_rs19" / "WHU-RS19" / cls / f"{cls.lower()}_{n:02d}.jpg", seed)
    for n in (1, 2, 3):  # third classes, seeded last for the same reason
        seed += 1
        tiny_jpeg(HERE / "patternnet" / "PatternNet" / "images" / "forest" / f"forest{n:03d}.jpg", seed)
    for n in (1, 2, 3):
        seed += 1
        tiny_jpeg(HERE / "whu_rs19" / "WHU-RS19" / "Beach" / f"beach_{n:02d}.jpg", seed)


if __name__ == "__main__":
    main()
