"""Zero-shot classification with prompt ensembles, on top of any ``embed_fn(items) -> [n, D]``.

Each class is written with several templates ("an aerial image of {}", ...); the class embedding is the
mean of its templates' L2-normalised embeddings, renormalised (CLIP's prompt ensembling), which is steadier
than any single wording. Images are embedded with the scene-classification query instruction, classes with
the candidate instruction, exactly as the RSMEB classification tasks do, and ranked by cosine.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from vlm2geovec_jax.inputs.records import Item
from vlm2geovec_jax.inputs.templates import instruction
from vlm2geovec_jax.rsmeb.cache import EmbedFn

DEFAULT_TEMPLATES = ("{}", "an aerial image of {}", "a satellite image of {}", "a remote sensing image of {}")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def class_items(class_names: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES, *,
                task_kind: str = "scene_classification") -> list[Item]:
    """The prompt items, class-major: class 0 with every template, then class 1, ..."""
    if not class_names:
        raise ValueError("class_names: expected at least one class")
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"templates: expected strings with one '{{}}' for the class name, got {list(templates)}")
    inst = instruction(task_kind, "candidate") or None
    return [Item(text=t.format(name), instruction=inst) for name in class_names for t in templates]


def class_embeddings(embed_fn: EmbedFn, class_names: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES,
                     *, task_kind: str = "scene_classification") -> np.ndarray:
    """[classes, D] unit vectors: per class, the renormalised mean of its templates' unit embeddings."""
    emb = np.asarray(embed_fn(class_items(class_names, templates, task_kind=task_kind)), np.float32)
    expected = len(class_names) * len(templates)
    if emb.ndim != 2 or emb.shape[0] != expected:
        raise ValueError(f"embed_fn: expected [{expected}, D] for {len(class_names)} classes x {len(templates)} "
                         f"templates, got shape {emb.shape}")
    return _unit(_unit(emb).reshape(len(class_names), len(templates), -1).mean(axis=1))


@dataclasses.dataclass
class ZeroShotClassifier:
    """Class embeddings computed once; ``classify`` images (Items, paths or encoded bytes)."""

    embed_fn: EmbedFn
    class_names: Sequence[str]
    templates: Sequence[str] = DEFAULT_TEMPLATES
    task_kind: str = "scene_classification"

    def __post_init__(self) -> None:
        self.weights = class_embeddings(self.embed_fn, self.class_names, self.templates, task_kind=self.task_kind)

    def image_items(self, images: Sequence[Item | str | bytes]) -> list[Item]:
        inst = instruction(self.task_kind, "query") or None
        return [dataclasses.replace(im, instruction=inst) if isinstance(im, Item) else Item(image=im, instruction=inst)
                for im in images]

    def scores(self, images: Sequence[Item | str | bytes]) -> np.ndarray:
        """[images, classes] cosine similarities."""
        emb = np.asarray(self.embed_fn(self.image_items(images)), np.float32)
        if emb.ndim != 2 or emb.shape != (len(images), self.weights.shape[1]):
            raise ValueError(f"embed_fn: expected [{len(images)}, {self.weights.shape[1]}] image embeddings, "
                             f"got shape {emb.shape}")
        return _unit(emb) @ self.weights.T

    def classify(self, images: Sequence[Item | str | bytes]) -> list[str]:
        """The best class name per image (ties: the earlier class)."""
        return [self.class_names[i] for i in np.argmax(self.scores(images), axis=1)]
