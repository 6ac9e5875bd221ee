"""Items -> the encoder's batch: prompt, image patches, token ids, padding, M-RoPE positions.

Two steps, so a pipeline can encode items one at a time (in worker processes, skipping bad ones) and pad
the survivors together: ``encode_item`` (render_prompt -> preprocess the image -> tokenizer.encode with its
grid) and ``collate_encoded`` (pad_batch to a length bucket -> prepare_inputs with an image budget).
``collate`` does both. Each encoded item carries its content id (inputs/identity.py: the item's one
identity, shared with the evaluation cache): two items with equal ids embed identically, so the loss masks
them as false negatives.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.inputs.identity import content_id, item_key
from vlm2geovec_jax.inputs.image import ImageConfig, preprocess
from vlm2geovec_jax.inputs.records import Item
from vlm2geovec_jax.inputs.templates import render_prompt
from vlm2geovec_jax.inputs.tokenizer import DEFAULT_BUCKETS, Tokenizer
from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.models.model_inputs import EncoderInputs, prepare_inputs

@dataclasses.dataclass(frozen=True)
class EncodedItem:
    """One item ready to batch: token ids, its image's patches and grid (or None), and its content id."""

    input_ids: np.ndarray                 # [n] int32
    pixel_values: np.ndarray | None       # [patches, patch_dim] float32
    grid_thw: np.ndarray | None           # [3] int64
    content_id: int

    @property
    def num_patches(self) -> int:
        return 0 if self.grid_thw is None else int(np.prod(self.grid_thw))


def encode_item(item: Item, *, tokenizer: Tokenizer, image_config: ImageConfig, box_format: str = "qwen",
                field: str | None = None) -> EncodedItem:
    """Prompt, patches and ids of one item. Faults raise RecordError with ``field`` (e.g. ``query``) set."""
    prompt = render_prompt(item, box_format=box_format)
    pixels = grid = None
    try:
        if item.image is not None:
            pixels, grid = preprocess(item.image, image_config)
        ids = tokenizer.encode(prompt, [] if grid is None else [grid], merge_size=image_config.merge_size)
    except RecordError as err:
        name = "image" if item.image is not None and grid is None else None
        where = ".".join(p for p in (field, name) if p) or None
        raise RecordError(err.reason, file=err.file, record=err.record, field=where) from None
    return EncodedItem(np.asarray(ids, np.int32), pixels, grid, content_id(item_key(item, box_format=box_format)))


def filler_item(tokenizer: Tokenizer) -> EncodedItem:
    """A one-token row for padding a batch to a fixed row count (content id 0; mask it with a valid flag)."""
    return EncodedItem(np.asarray([tokenizer.special_ids.pad], np.int32), None, None, 0)


def check_compatible(tokenizer: Tokenizer, image_config: ImageConfig, model_cfg: ModelConfig) -> None:
    """Tokenizer, image config and model must agree on the image token and the merge size."""
    if tokenizer.special_ids.image_pad != model_cfg.image_token_id:
        raise ValueError(f"{tokenizer.source}: <|image_pad|> is id {tokenizer.special_ids.image_pad} but the model's "
                         f"image_token_id is {model_cfg.image_token_id}; tokenizer and model do not belong together")
    if image_config.merge_size != model_cfg.vision.spatial_merge_size:
        raise ValueError(f"image config merge_size {image_config.merge_size} != the model's spatial_merge_size "
                         f"{model_cfg.vision.spatial_merge_size}")
    if image_config.patch_dim != model_cfg.vision.patch_dim:
        raise ValueError(f"image config patches have {image_config.patch_dim} values, the model expects "
                         f"{model_cfg.vision.patch_dim}")


def collate_encoded(encoded: Sequence[EncodedItem], *, tokenizer: Tokenizer, model_cfg: ModelConfig,
                    length_buckets: Sequence[int] = DEFAULT_BUCKETS, patches_per_image: int | None = None,
                    images_per_row: int | None = None, side: str = "right") -> EncoderInputs:
    """Pads encoded items to one length bucket and the image budget -> EncoderInputs (batch-major).

    The image budget is ``images_per_row`` slots of ``patches_per_image`` patches per row (an item has at
    most one image, so 1 slot holds any batch); both default to what the batch needs. Pass constants to
    keep jit shapes fixed.
    """
    ids, mask = tokenizer.pad_batch([e.input_ids for e in encoded], side=side, buckets=length_buckets)
    with_image = [e for e in encoded if e.grid_thw is not None]
    pixels = np.concatenate([e.pixel_values for e in with_image]) if with_image else None
    grids = np.stack([e.grid_thw for e in with_image]) if with_image else None
    return prepare_inputs(model_cfg, ids, mask, pixels, grids, patches_per_image=patches_per_image,
                          images_per_row=images_per_row)


def collate(items: Sequence[Item], *, tokenizer: Tokenizer, image_config: ImageConfig, model_cfg: ModelConfig,
            length_buckets: Sequence[int] = DEFAULT_BUCKETS, patches_per_image: int | None = None,
            images_per_row: int | None = None, side: str = "right", box_format: str = "qwen") -> EncoderInputs:
    """Items -> EncoderInputs (render_prompt -> preprocess -> encode -> pad_batch -> prepare_inputs)."""
    check_compatible(tokenizer, image_config, model_cfg)
    encoded = [encode_item(item, tokenizer=tokenizer, image_config=image_config, box_format=box_format,
                           field=f"items[{i}]") for i, item in enumerate(items)]
    return collate_encoded(encoded, tokenizer=tokenizer, model_cfg=model_cfg, length_buckets=length_buckets,
                           patches_per_image=patches_per_image, images_per_row=images_per_row, side=side)


def content_ids(items: Sequence[Item], *, box_format: str = "qwen") -> np.ndarray:
    """int64 content ids of items without encoding them (the same values encode_item gives)."""
    return np.asarray([content_id(item_key(item, box_format=box_format)) for item in items], np.int64)
