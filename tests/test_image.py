"""Qwen2-VL image preprocessing: parity with transformers' Qwen2VLImageProcessor (PIL backend) and errors."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.inputs.image import (
    ImageConfig, load_image, num_image_tokens, patchify, preprocess, smart_resize, target_size)

SMALL = dict(min_pixels=56 * 56, max_pixels=28 * 28 * 64)


def _random(mode: str, height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "RGB":
        return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode == "RGBA":
        return Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8))
    if mode == "L":
        return Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
    if mode == "LA":
        return Image.fromarray(rng.integers(0, 256, (height, width, 2), dtype=np.uint8), mode="LA")
    if mode == "P":
        return _random("RGB", height, width, seed).quantize(colors=37)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    raise AssertionError(mode)


def _hf(image: Image.Image, min_pixels: int, max_pixels: int):
    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    assert transformers.__version__  # the processor class is the PIL backend used without torchvision
    out = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)(images=[image], return_tensors="np")
    return out["pixel_values"], out["image_grid_thw"][0]


# ---- smart_resize ----

@pytest.mark.parametrize("hw, expected", [
    ((224, 224), (224, 224)),
    ((70, 70), (56, 56)),            # round(2.5) == 2: Python's half-to-even, as transformers
    ((98, 98), (112, 112)),          # round(3.5) == 4
    ((10, 13), (56, 84)),            # tiny: scaled up to min_pixels, ceil
    ((1, 1), (56, 56)),
    ((37, 91), (56, 112)),
    ((2000, 1000), (1400, 700)),     # above max_pixels: scaled down, floors
    ((5000, 30), (5012, 28)),        # aspect 167 kept
])
def test_smart_resize_golden(hw, expected):
    assert smart_resize(*hw) == expected


def test_smart_resize_clamps_to_one_factor():
    assert smart_resize(7000, 100, 28, 56 * 56, 28 * 28 * 64) == (1848, 28)


def test_smart_resize_matches_transformers_on_a_grid():
    pytest.importorskip("transformers")
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize
    for h in range(1, 400, 7):
        for w in (1, 14, 27, 28, 42, 55, 70, 99, 333, 398):
            if max(h, w) / min(h, w) > 200:
                continue
            for lo, hi in ((56 * 56, 28 * 28 * 1280), (28 * 28 * 4, 28 * 28 * 16)):
                assert smart_resize(h, w, 28, lo, hi) == hf_smart_resize(h, w, 28, lo, hi), (h, w, lo, hi)


def test_smart_resize_rejects_extreme_aspect_ratio():
    with pytest.raises(ValueError, match="absolute aspect ratio must be smaller than 200, got 201.0"):
        smart_resize(1, 201)


# ---- patchify order, against a brute-force loop ----

def test_patchify_order_brute_force():
    cfg = ImageConfig(patch_size=2, merge_size=2, temporal_patch_size=2)
    c, h, w = 3, 8, 12
    chw = np.arange(c * h * w, dtype=np.float32).reshape(c, h, w)
    patches, grid = patchify(chw, cfg)
    assert grid.tolist() == [1, 4, 6] and patches.shape == (24, 3 * 2 * 2 * 2)
    p, m, tp = 2, 2, 2
    for bh in range(h // (p * m)):
        for bw in range(w // (p * m)):
            for mh in range(m):
                for mw in range(m):
                    row = ((bh * (w // (p * m)) + bw) * m + mh) * m + mw
                    for ch in range(c):
                        for t in range(tp):
                            for py in range(p):
                                for px in range(p):
                                    col = ((ch * tp + t) * p + py) * p + px
                                    y, x = (bh * m + mh) * p + py, (bw * m + mw) * p + px
                                    assert patches[row, col] == chw[ch, y, x]
    with pytest.raises(ValueError, match=r"patchify needs \[3, H, W\] with H and W multiples of 4, got \(3, 8, 10\)"):
        patchify(chw[:, :, :10], cfg)


# ---- parity with transformers ----

@pytest.mark.parametrize("mode, height, width, limits", [
    ("RGB", 37, 91, SMALL),                                         # non-square
    ("RGB", 9, 5, SMALL),                                           # tiny, < 28 px
    ("RGB", 300, 520, SMALL),                                       # triggers max_pixels
    ("RGB", 1100, 1000, dict(min_pixels=56 * 56, max_pixels=28 * 28 * 1280)),  # Qwen2-VL's defaults
    ("RGBA", 64, 100, SMALL),                                       # alpha composited onto white
    ("LA", 50, 30, SMALL),
    ("L", 200, 120, SMALL),
    ("P", 77, 55, SMALL),
])
def test_preprocess_matches_transformers(mode, height, width, limits):
    image = _random(mode, height, width)
    assert image.mode == mode
    ref_pixels, ref_grid = _hf(image, **limits)
    pixels, grid = preprocess(image, ImageConfig(**limits))
    assert pixels.dtype == np.float32 and pixels.shape[1] == 1176
    assert grid.tolist() == ref_grid.tolist()
    assert pixels.shape == ref_pixels.shape
    np.testing.assert_allclose(pixels, ref_pixels, rtol=0, atol=1e-5)
    assert num_image_tokens(grid) == pixels.shape[0] // 4


def test_palette_with_transparency_matches_transformers():
    image = _random("P", 40, 60, seed=3)
    image.info["transparency"] = 5
    ref_pixels, _ = _hf(image, **SMALL)
    np.testing.assert_allclose(preprocess(image, ImageConfig(**SMALL))[0], ref_pixels, rtol=0, atol=1e-5)


def test_sixteen_bit_scales_instead_of_clipping():
    """Deliberate deviation: transformers clips I;16 at 255; we map v*257 to v, like the 8-bit image."""
    rng = np.random.default_rng(1)
    eight = rng.integers(0, 256, (45, 70), dtype=np.uint8)
    sixteen = Image.fromarray(eight.astype(np.uint16) * 257)
    assert sixteen.mode == "I;16"
    ref_pixels, ref_grid = _hf(Image.fromarray(eight), **SMALL)
    pixels, grid = preprocess(sixteen, ImageConfig(**SMALL))
    assert grid.tolist() == ref_grid.tolist()
    np.testing.assert_allclose(pixels, ref_pixels, rtol=0, atol=1e-5)
    # What transformers itself does with 16-bit: saturate at 255 (which is why we deviate).
    hf_sixteen, _ = _hf(sixteen, **SMALL)
    clipped = Image.fromarray(np.minimum(eight.astype(np.uint16) * 257, 255).astype(np.uint8))
    np.testing.assert_array_equal(hf_sixteen, _hf(clipped, **SMALL)[0])


def test_sixteen_bit_png_file(tmp_path):
    values = np.array([[0, 255, 256, 65535], [1000, 30000, 511, 512]], dtype=np.uint16)
    path = tmp_path / "dem.png"
    Image.fromarray(values).save(path)
    rgb = load_image(str(path))
    assert rgb.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(rgb)[..., 0], values >> 8)


# ---- fixed resolution ----

def test_fixed_size_equals_resize_then_processor():
    image = _random("RGB", 100, 37, seed=2)
    cfg = ImageConfig(fixed_size=(56, 84))
    pixels, grid = preprocess(image, cfg)
    assert grid.tolist() == [1, 4, 6] and pixels.shape == (24, 1176)
    assert target_size(1000, 5, cfg) == (56, 84)
    resized = image.resize((84, 56), resample=Image.Resampling.BICUBIC)
    ref_pixels, ref_grid = _hf(resized, min_pixels=56 * 84, max_pixels=56 * 84)
    assert ref_grid.tolist() == [1, 4, 6]
    np.testing.assert_allclose(pixels, ref_pixels, rtol=0, atol=1e-5)


def test_image_config_validation():
    with pytest.raises(ValueError, match=r"fixed_size \(56, 70\) must be positive multiples of .* = 28"):
        ImageConfig(fixed_size=(56, 70))
    with pytest.raises(ValueError, match="need 0 < min_pixels <= max_pixels"):
        ImageConfig(min_pixels=100, max_pixels=50)
    assert ImageConfig().patch_dim == 1176 and ImageConfig().factor == 28


def test_config_from_preprocessor_config(tmp_path):
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps({"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "merge_size": 2,
                                "temporal_patch_size": 2, "image_mean": [0.5, 0.5, 0.5],
                                "image_std": [0.25, 0.25, 0.25], "size": {"shortest_edge": 1, "longest_edge": 2}}))
    cfg = ImageConfig.from_preprocessor_config(path, fixed_size=(448, 448))
    assert (cfg.min_pixels, cfg.max_pixels, cfg.image_mean, cfg.fixed_size) == (3136, 12845056, (0.5,) * 3,
                                                                                (448, 448))
    path.write_text(json.dumps({"size": {"shortest_edge": 784, "longest_edge": 50176}}))
    cfg = ImageConfig.from_preprocessor_config(path)
    assert (cfg.min_pixels, cfg.max_pixels, cfg.image_std) == (784, 50176, ImageConfig().image_std)
    with pytest.raises(FileNotFoundError, match="nope.json: preprocessor config not found"):
        ImageConfig.from_preprocessor_config(tmp_path / "nope.json")


# ---- loading and errors ----

def test_load_from_path_bytes_and_exif(tmp_path):
    image = _random("RGB", 20, 30)
    path = tmp_path / "a.png"
    image.save(path)
    np.testing.assert_array_equal(np.asarray(load_image(path)), np.asarray(image))
    np.testing.assert_array_equal(np.asarray(load_image(path.read_bytes())), np.asarray(image))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif)
    assert load_image(buf.getvalue()).size == (20, 30)  # (w, h) transposed like transformers' load_image


def test_missing_file_names_file_and_where(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(RecordError) as err:
        load_image(str(path), where="record 7, field query.image")
    assert str(err.value) == (f"file {path}: record 7, field query.image: image file not found; "
                              "expected a readable image file")
    assert err.value.file == str(path)


def test_truncated_and_garbage_images(tmp_path):
    buf = io.BytesIO()
    _random("RGB", 64, 64).save(buf, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[:300])
    with pytest.raises(RecordError, match=rf"^file {path}: record 3: cannot decode image file, it is truncated"):
        load_image(str(path), where="record 3")
    with pytest.raises(RecordError, match=r"^record 4: cannot decode image bytes \(9 bytes\), it is truncated"):
        preprocess(b"not a png", where="record 4")


def test_unsupported_mode_and_type():
    float_image = Image.fromarray(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(RecordError, match=r"^record 1, field image: unsupported image mode 'F'; expected one of"):
        load_image(float_image, where="record 1, field image")
    with pytest.raises(RecordError, match="unsupported image mode 'I';"):
        load_image(Image.fromarray(np.zeros((4, 4), dtype=np.int32)))
    with pytest.raises(RecordError, match="image source has type int; expected a path, encoded bytes"):
        load_image(3)


def test_extreme_aspect_ratio_is_a_record_error():
    with pytest.raises(RecordError, match=r"^x: image of 402x2 pixels cannot be resized: absolute aspect ratio"):
        preprocess(_random("RGB", 2, 402), where="x")
