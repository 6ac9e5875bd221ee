"""Qwen2-VL image preprocessing, numerically equal to transformers' Qwen2VLImageProcessor (PIL backend).

The JAX encoder must see exactly the pixels the PyTorch model saw, or parity and imported weights mean
nothing. So every step copies the reference: convert to RGB compositing alpha onto white, bicubic resize of
uint8 pixels by PIL, rescale in float64 then cast to float32, normalise in float32 with the OpenAI CLIP
mean/std, duplicate the frame to the temporal patch size, and patchify in the processor's order.

One deliberate deviation: 16-bit grayscale (``I;16``) images. Pillow's ``convert("RGB")``, which the
transformers processor relies on, clips 16-bit values to 255, so almost every remote-sensing 16-bit image
becomes white. We scale them to 8 bits instead (``value >> 8``, the full-range conversion that torchvision and
scikit-image use); an image whose 16-bit values are ``v * 257`` thus gives the same pixels as the 8-bit ``v``.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os

import numpy as np
from PIL import Image, ImageOps

from vlm2geovec_jax.inputs.errors import RecordError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Modes Pillow converts to RGB the way transformers does; the 16-bit family is handled by `_to_8bit`.
_RGB_CONVERTIBLE_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK",
                                    "YCbCr"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
SUPPORTED_MODES = tuple(sorted(_RGB_CONVERTIBLE_MODES | _SIXTEEN_BIT_MODES))
MAX_ASPECT_RATIO = 200


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """How images become patches. Defaults are those of transformers' Qwen2VLImageProcessor class; use
    `from_preprocessor_config` to take a checkpoint's own values.

    ``fixed_size=(H, W)`` resizes every image to H x W pixels (multiples of patch_size * merge_size) instead
    of the aspect-preserving smart resize. It distorts the aspect ratio, which is acceptable because remote
    sensing tiles are mostly square nadir views without a canonical "up", and it buys static shapes: every
    image yields the same number of patches and image tokens, so a TPU compiles the encoder once.
    """

    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD
    fixed_size: tuple[int, int] | None = None

    def __post_init__(self):
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(f"ImageConfig: need 0 < min_pixels <= max_pixels, got min_pixels={self.min_pixels}, "
                             f"max_pixels={self.max_pixels}")
        if min(self.patch_size, self.temporal_patch_size, self.merge_size) < 1:
            raise ValueError("ImageConfig: patch_size, temporal_patch_size and merge_size must be >= 1")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("ImageConfig: image_mean and image_std need one value per RGB channel")
        if self.fixed_size is not None:
            h, w = self.fixed_size
            if h <= 0 or w <= 0 or h % self.factor or w % self.factor:
                raise ValueError(f"ImageConfig: fixed_size {tuple(self.fixed_size)} must be positive multiples of "
                                 f"patch_size * merge_size = {self.factor}")

    @classmethod
    def from_preprocessor_config(cls, path: str | os.PathLike, **overrides) -> "ImageConfig":
        """Read a checkpoint's preprocessor_config.json the way transformers does.

        Explicit ``min_pixels``/``max_pixels`` win over ``size`` (shortest_edge/longest_edge), as in
        Qwen2VLImageProcessor. Released Qwen2-VL checkpoints set max_pixels = 12845056, far above the
        class default, so reading the file matters for token counts.
        """
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: preprocessor config not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: cannot parse preprocessor config ({err})") from None
        size = data.get("size") or {}
        values = {
            "min_pixels": data.get("min_pixels") or size.get("shortest_edge"),
            "max_pixels": data.get("max_pixels") or size.get("longest_edge"),
            **{k: data.get(k) for k in ("patch_size", "temporal_patch_size", "merge_size")},
            **{k: tuple(data[k]) if data.get(k) is not None else None for k in ("image_mean", "image_std")},
        }
        return cls(**{k: v for k, v in values.items() if v is not None}, **overrides)

    @property
    def factor(self) -> int:
        """Side lengths must be multiples of this so patches merge into whole tokens."""
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        """Length of one flattened patch: C * temporal_patch_size * patch_size**2 (1176 for Qwen2-VL)."""
        return 3 * self.temporal_patch_size * self.patch_size ** 2


def image_size(source: str | os.PathLike | bytes) -> tuple[int, int]:
    """(width, height) of an image as preprocessing sees it (EXIF orientation applied), from its header only."""
    file = None if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)
    try:
        with Image.open(io.BytesIO(bytes(source)) if file is None else file) as opened:
            w, h = opened.size
            rotated = opened.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF orientations that swap the axes
    except FileNotFoundError:
        raise RecordError("image file not found; expected a readable image file", file=file, field="image") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise RecordError(f"cannot read the image's size ({type(err).__name__}: {err})", file=file,
                          field="image") from None
    return (h, w) if rotated else (w, h)


def _fail(reason: str, *, file: str | None, where: str) -> RecordError:
    return RecordError(f"{where}: {reason}" if where else reason, file=file)


def _open(source: str | os.PathLike | bytes, where: str) -> tuple[Image.Image, str | None]:
    """Decode fully now (Pillow is lazy) so truncated files fail here, not deep in a batch."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        file, stream = None, io.BytesIO(bytes(source))
        what = f"image bytes ({len(source)} bytes)"
    else:
        file = os.fspath(source)
        if not os.path.isfile(file):
            raise _fail("image file not found; expected a readable image file", file=file, where=where)
        stream, what = file, "image file"
    try:
        with Image.open(stream) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)  # as transformers.image_utils.load_image does
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise _fail(f"cannot decode {what}, it is truncated, corrupt or not an image "
                    f"({type(err).__name__}: {err})", file=file, where=where) from None
    return image, file


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale to 8-bit L by the full-range scaling (see module docstring for why not clipping)."""
    values = np.asarray(image).astype(np.uint16)
    return Image.fromarray((values >> 8).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image, *, file: str | None = None, where: str = "") -> Image.Image:
    """RGB as transformers' convert_to_rgb: transparency is composited onto white, not dropped."""
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _to_8bit(image)
    elif image.mode not in _RGB_CONVERTIBLE_MODES:
        raise _fail(f"unsupported image mode {image.mode!r}; expected one of {', '.join(SUPPORTED_MODES)}",
                    file=file, where=where)
    if image.width < 1 or image.height < 1:
        raise _fail(f"image has no pixels (size {image.width}x{image.height})", file=file, where=where)
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(source: str | os.PathLike | bytes | Image.Image, *, where: str = "") -> Image.Image:
    """Open a path, encoded bytes or a PIL image as an RGB image; faults raise RecordError naming the file.

    ``where`` says which record and field the image belongs to, e.g. ``"record 17, field query.image"``.
    Files and bytes are EXIF-transposed like transformers' load_image; a PIL image is taken as given.
    """
    if isinstance(source, Image.Image):
        return to_rgb(source, where=where)
    if not isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        raise _fail(f"image source has type {type(source).__name__}; expected a path, encoded bytes or a "
                    "PIL image", file=None, where=where)
    image, file = _open(source, where)
    return to_rgb(image, file=file, where=where)


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 28 * 28 * 1280) -> tuple[int, int]:
    """Target (height, width): multiples of ``factor``, area within [min_pixels, max_pixels], aspect kept.

    A line-for-line copy of transformers' qwen2_vl smart_resize, Python's round-half-even included, because
    the token count of every image depends on it.
    """
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, "
                         f"got {max(height, width) / min(height, width)}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def target_size(height: int, width: int, config: ImageConfig) -> tuple[int, int]:
    """The (height, width) an image of this size is resized to under ``config``."""
    if config.fixed_size is not None:
        return tuple(config.fixed_size)
    return smart_resize(height, width, config.factor, config.min_pixels, config.max_pixels)


def num_image_tokens(grid_thw, merge_size: int = 2) -> int:
    """Language-model tokens one image occupies: patches / merge_size**2."""
    t, h, w = (int(v) for v in grid_thw)
    return t * h * w // merge_size ** 2


def normalize(pixels: np.ndarray, config: ImageConfig) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 [3, H, W], with the processor's dtypes (float64 rescale, float32 normalise)."""
    chw = np.moveaxis(pixels, -1, 0)
    scaled = (chw.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.asarray(config.image_mean, np.float32)[:, None, None]
    std = np.asarray(config.image_std, np.float32)[:, None, None]
    return (scaled - mean) / std


def patchify(chw: np.ndarray, config: ImageConfig) -> tuple[np.ndarray, np.ndarray]:
    """[3, H, W] -> ([N, patch_dim], grid_thw) in the order (t, h/m, w/m, m, m, C, tp, p, p).

    A still image is one frame repeated temporal_patch_size times, so grid t is 1. Neighbouring m x m
    patches are contiguous because the vision merger concatenates them into one token.
    """
    c, height, width = chw.shape
    p, m, tp = config.patch_size, config.merge_size, config.temporal_patch_size
    if c != 3 or height % config.factor or width % config.factor:
        raise ValueError(f"patchify needs [3, H, W] with H and W multiples of {config.factor}, got {chw.shape}")
    gh, gw = height // p, width // p
    frames = np.broadcast_to(chw[None], (tp, c, height, width))
    x = frames.reshape(1, tp, c, gh // m, m, p, gw // m, m, p)
    # axes: 0 t, 1 tp, 2 C, 3 h/m, 4 m_h, 5 p_h, 6 w/m, 7 m_w, 8 p_w
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    patches = np.ascontiguousarray(x).reshape(gh * gw, config.patch_dim)
    return patches, np.array([1, gh, gw], dtype=np.int64)


def preprocess(image: Image.Image | str | os.PathLike | bytes, config: ImageConfig = ImageConfig(), *,
               where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """An image -> (pixel_values float32 [N, patch_dim], grid_thw int64 [3]), as Qwen2VLImageProcessor."""
    rgb = load_image(image, where=where)
    try:
        height, width = target_size(rgb.height, rgb.width, config)
    except ValueError as err:
        raise _fail(f"image of {rgb.width}x{rgb.height} pixels cannot be resized: {err}",
                    file=os.fspath(image) if isinstance(image, (str, os.PathLike)) else None,
                    where=where) from None
    resized = rgb.resize((width, height), resample=Image.Resampling.BICUBIC)
    return patchify(normalize(np.asarray(resized), config), config)
