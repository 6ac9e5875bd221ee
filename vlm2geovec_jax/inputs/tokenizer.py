"""Tokenisation for Qwen2-VL prompts: image-pad expansion, bucketed padding, and an offline demo tokenizer.

Uses the `tokenizers` library on a checkpoint's tokenizer.json, never transformers, so training and evaluation
do not import torch. The ids equal those of transformers' Qwen2VLProcessor: each ``<|image_pad|>`` in the
prompt becomes as many pad ids as the image has merged patches (grid t*h*w / merge_size**2).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as _Backend

from vlm2geovec_jax.inputs.errors import RecordError

# Qwen2-VL's special tokens in vocabulary order (ids 151643..151656 in the real checkpoints).
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
DEFAULT_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096)
# Qwen2's pre-tokenizer split (transformers' Qwen2Tokenizer.PRETOKENIZE_REGEX).
QWEN_PRETOKENIZE_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
                          r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """Ids of Qwen2-VL's special tokens; ``pad`` is the tokenizer's pad token (``<|endoftext|>`` in Qwen)."""

    endoftext: int
    im_start: int
    im_end: int
    object_ref_start: int
    object_ref_end: int
    box_start: int
    box_end: int
    quad_start: int
    quad_end: int
    vision_start: int
    vision_end: int
    vision_pad: int
    image_pad: int
    video_pad: int
    pad: int


def _field_name(token: str) -> str:
    return token.strip("<|>")


class Tokenizer:
    """A checkpoint's tokenizer.json plus the Qwen2-VL conventions on top of it."""

    def __init__(self, backend: _Backend, *, source: str = "<in memory>", pad_token: str = "<|endoftext|>"):
        self.backend, self.source = backend, source
        ids = {}
        for token in QWEN_SPECIAL_TOKENS + (pad_token,):
            token_id = backend.token_to_id(token)
            if token_id is None:
                raise ValueError(f"{source}: the vocabulary has no special token {token}; expected a Qwen2-VL "
                                 f"tokenizer carrying {', '.join(QWEN_SPECIAL_TOKENS)}")
            ids[token] = token_id
        self.special_ids = SpecialIds(**{_field_name(t): ids[t] for t in QWEN_SPECIAL_TOKENS}, pad=ids[pad_token])

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> "Tokenizer":
        """Load ``<path>/tokenizer.json``; the pad token comes from tokenizer_config.json when it names one."""
        directory = Path(path)
        file = directory / "tokenizer.json"
        if not file.is_file():
            raise FileNotFoundError(f"{file}: tokenizer file not found; expected the tokenizer.json of a "
                                    "Qwen2-VL checkpoint directory")
        try:
            backend = _Backend.from_file(str(file))
        except Exception as err:  # the Rust side raises plain Exception on malformed JSON
            raise ValueError(f"{file}: cannot parse tokenizer ({err})") from None
        return cls(backend, source=str(file), pad_token=_pad_token(directory / "tokenizer_config.json"))

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (what the embedding table must cover)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; for debugging prompts, not used by the model."""
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def encode(self, prompt: str, image_grid_thws: Sequence = (), *, merge_size: int = 2,
               where: str = "") -> list[int]:
        """Token ids of ``prompt`` with its i-th ``<|image_pad|>`` expanded to image i's token count.

        The prompt holds one ``<|vision_start|><|image_pad|><|vision_end|>`` per image, in image order;
        M-RoPE finds images by the pad that follows each vision start, so any other arrangement is refused.
        """
        ids = self.backend.encode(prompt, add_special_tokens=True).ids
        pads = self._image_pad_positions(ids, len(image_grid_thws), where)
        out, start = [], 0
        for i, grid in zip(pads, image_grid_thws):
            out.extend(ids[start:i])
            out.extend([self.special_ids.image_pad] * _tokens_per_image(grid, merge_size))
            start = i + 1
        out.extend(ids[start:])
        return out

    def _image_pad_positions(self, ids: list[int], num_images: int, where: str) -> list[int]:
        """Where the image pads are, after checking there is one per image, each as vision_start/pad/end."""
        sp = self.special_ids
        if sp.video_pad in ids:
            raise _prompt_error(where, "the prompt contains <|video_pad|>; videos are not supported")
        pads = [i for i, t in enumerate(ids) if t == sp.image_pad]
        if len(pads) != num_images:
            raise _prompt_error(where, f"the prompt has {len(pads)} <|image_pad|> tokens but {num_images} images "
                                       "were given; expected one <|vision_start|><|image_pad|><|vision_end|> per "
                                       "image")
        for n, i in enumerate(pads):
            if i == 0 or ids[i - 1] != sp.vision_start or i + 1 == len(ids) or ids[i + 1] != sp.vision_end:
                raise _prompt_error(where, f"<|image_pad|> number {n} is not enclosed as "
                                           "<|vision_start|><|image_pad|><|vision_end|>")
        return pads

    def pad_batch(self, sequences: Sequence[Sequence[int]], *, side: str = "right",
                  buckets: Sequence[int] = DEFAULT_BUCKETS) -> tuple[np.ndarray, np.ndarray]:
        """`pad_batch` with this tokenizer's pad id."""
        return pad_batch(sequences, side=side, buckets=buckets, pad_id=self.special_ids.pad)


def _prompt_error(where: str, message: str) -> RecordError:
    return RecordError(f"{where}: {message}" if where else message)


def _pad_token(config_file: Path) -> str:
    if not config_file.is_file():
        return "<|endoftext|>"
    try:
        pad = json.loads(config_file.read_text(encoding="utf-8")).get("pad_token")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise ValueError(f"{config_file}: cannot parse tokenizer config ({err})") from None
    if isinstance(pad, dict):  # the serialised AddedToken form
        pad = pad.get("content")
    return pad if isinstance(pad, str) else "<|endoftext|>"


def _tokens_per_image(grid, merge_size: int) -> int:
    values = [int(v) for v in np.asarray(grid).reshape(-1)]
    if len(values) != 3 or min(values) < 1 or values[0] * values[1] * values[2] % merge_size ** 2:
        raise ValueError(f"image grid_thw {values} must be 3 positive ints whose product is divisible by "
                         f"merge_size**2 = {merge_size ** 2}")
    return values[0] * values[1] * values[2] // merge_size ** 2


def bucket_length(length: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
    """Smallest bucket >= length, so the number of distinct shapes jit sees stays len(buckets)."""
    for bucket in buckets:
        if bucket >= length:
            return bucket
    raise ValueError(f"a sequence of {length} tokens is longer than the largest length bucket {buckets[-1]}; "
                     "add a larger bucket or shorten the input (fewer image pixels or less text)")


def pad_batch(sequences: Sequence[Sequence[int]], *, pad_id: int, side: str = "right",
              buckets: Sequence[int] = DEFAULT_BUCKETS) -> tuple[np.ndarray, np.ndarray]:
    """Pad to one bucketed length: (input_ids int32 [B, L], attention_mask int32 [B, L]).

    Right padding keeps positions 0..n-1 for the tokens; left padding puts every last token at L-1.
    """
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    buckets = tuple(int(b) for b in buckets)
    if not buckets or min(buckets) < 1 or any(a >= b for a, b in zip(buckets, buckets[1:])):
        raise ValueError(f"buckets must be positive and strictly increasing, got {buckets}")
    if len(sequences) == 0:
        raise ValueError("cannot pad an empty batch")
    for i, seq in enumerate(sequences):
        if len(seq) == 0:
            raise ValueError(f"sequence {i} of the batch is empty; every item needs at least one token")
    longest = max(range(len(sequences)), key=lambda i: len(sequences[i]))
    if len(sequences[longest]) > buckets[-1]:
        raise ValueError(f"sequence {longest} of the batch has {len(sequences[longest])} tokens, more than the "
                         f"largest length bucket {buckets[-1]}; add a larger bucket or shorten the input "
                         "(fewer image pixels or less text)")
    length = bucket_length(len(sequences[longest]), buckets)
    input_ids = np.full((len(sequences), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(sequences), length), dtype=np.int32)
    for i, seq in enumerate(sequences):
        span = slice(0, len(seq)) if side == "right" else slice(length - len(seq), length)
        input_ids[i, span] = np.asarray(seq, dtype=np.int32)
        mask[i, span] = 1
    return input_ids, mask


# ---- demo tokenizer: a tiny Qwen2-style byte-level BPE, built offline for tests and demos ----

_CLASSES = (
    "airport", "bare land", "baseball field", "beach", "bridge", "center", "church", "commercial area",
    "dense residential", "desert", "farmland", "forest", "industrial area", "meadow", "medium residential",
    "mountain", "park", "parking lot", "playground", "pond", "port", "railway station", "resort", "river",
    "school", "sparse residential", "square", "stadium", "storage tanks", "viaduct", "harbor", "runway",
    "golf course", "tennis court", "freeway", "overpass", "intersection", "chaparral", "annual crop",
    "permanent crop", "pasture", "herbaceous vegetation", "highway", "sea lake", "wetland", "glacier",
    "island", "lake", "snowberg", "terrace", "roundabout", "ship", "airplane", "vehicle", "small car",
    "large vehicle", "helicopter", "swimming pool", "soccer ball field", "basketball court", "ground track field",
    "container crane", "windmill", "dam", "golf field", "train station", "expressway toll station",
)
_COLOURS = ("white", "red", "blue", "green", "gray", "dark", "bright", "brown", "yellow", "black")
_PLACES = ("near the coast", "along the river", "beside the road", "in the north", "in the south-east corner",
           "at the center of the image", "on the left", "on the right", "next to a lake", "surrounded by trees")
_TEMPLATES = (
    "a satellite image of {cls}.",
    "an aerial photo showing a {col} {cls} {place}.",
    "There are {n} {cls}s {place}.",
    "How many {cls}s are in the image? {n}",
    "Is there a {cls} in this image? {yn}",
    "Find the {cls} {place}.",
    "Represent the given remote sensing image for retrieval: {cls}",
    "Retrieve the image taken at latitude {lat} and longitude {lon}.",
    "latitude: {lat}, longitude: {lon}",
    "The image was captured at lat {lat}, lon {lon} in {year}.",
    "<|object_ref_start|>{cls}<|object_ref_end|><|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>",
    "What is the object present at ({x1},{y1}),({x2},{y2})? A {col} {cls}.",
    "Ground resolution {res} m per pixel; scene size {size} x {size} pixels.",
    "Classify the land use of this scene: {cls}; confidence {conf}%.",
    "A {col} {cls} lies {place}, about {n} km from the {cls2}.",
)
_FIXED_LINES = (
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 0.5 -12.75 +45.125 1e-3",
    ". , ; : ! ? ' \" ( ) [ ] { } - _ / \\ % & * + = < > # @ ~ ^ |",
    "latitude longitude north south east west degrees meters kilometers coordinates geolocation",
    "query candidate image text instruction represent retrieve describe caption region box object",
)


def demo_corpus(seed: int = 0, lines: int = 3000) -> list[str]:
    """Remote-sensing-like English lines from fixed in-code lists; ``seed`` picks the fillers."""
    rng = np.random.RandomState(seed)  # the legacy generator: numpy keeps its stream stable across versions

    def pick(options):
        return options[rng.randint(len(options))]

    corpus = list(_FIXED_LINES)
    for _ in range(lines):
        x1, y1 = rng.randint(0, 900, size=2)
        corpus.append(pick(_TEMPLATES).format(
            cls=pick(_CLASSES), cls2=pick(_CLASSES), col=pick(_COLOURS), place=pick(_PLACES),
            n=rng.randint(0, 60), yn=pick(("yes", "no")), lat=f"{rng.uniform(-90, 90):.4f}",
            lon=f"{rng.uniform(-180, 180):.4f}", year=rng.randint(1984, 2026), x1=x1, y1=y1,
            x2=x1 + rng.randint(1, 100), y2=y1 + rng.randint(1, 100), res=pick(("0.3", "0.5", "1", "2", "10", "30")),
            size=pick((64, 120, 224, 256, 512, 600, 800)), conf=rng.randint(0, 101)))
    return corpus


def _qwen_pipeline(backend: _Backend) -> None:
    """Qwen2's normaliser, pre-tokeniser and decoder, so transformers' Qwen2Tokenizer rebuilds it unchanged."""
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)


def _tokenizer_config(special_start: int) -> dict:
    added = {str(special_start + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                      "single_word": False, "special": True}
             for i, t in enumerate(QWEN_SPECIAL_TOKENS)}
    return {
        "add_prefix_space": False, "added_tokens_decoder": added,
        "additional_special_tokens": list(QWEN_SPECIAL_TOKENS[1:]), "bos_token": None,
        "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>", "errors": "replace",
        "model_max_length": 32768, "pad_token": "<|endoftext|>", "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
    }


def build_demo_tokenizer(out_dir: str | os.PathLike, vocab_size: int = 512, seed: int = 0) -> Path:
    """Train a small byte-level BPE offline and write tokenizer.json + tokenizer_config.json to ``out_dir``.

    Qwen2-VL's 14 special tokens take the last 14 ids, in Qwen's order (for 512: <|endoftext|>=498 ...
    <|video_pad|>=511), which the model's tiny preset relies on. Same arguments give byte-identical files,
    and transformers' AutoTokenizer loads the directory offline with the same ids. Returns ``out_dir``.
    """
    base = vocab_size - len(QWEN_SPECIAL_TOKENS)
    if base <= 256:
        raise ValueError(f"vocab_size {vocab_size} too small: need more than 256 byte tokens + "
                         f"{len(QWEN_SPECIAL_TOKENS)} special tokens")
    backend = _Backend(models.BPE())
    _qwen_pipeline(backend)
    trainer = trainers.BpeTrainer(vocab_size=base, min_frequency=2, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(demo_corpus(seed), trainer=trainer)
    if backend.get_vocab_size() != base:
        raise ValueError(f"the demo corpus supports at most {backend.get_vocab_size()} BPE tokens, "
                         f"vocab_size {vocab_size} needs {base}; choose a smaller vocab_size")
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(backend.to_str(pretty=True) + "\n", encoding="utf-8")
    config = json.dumps(_tokenizer_config(base), indent=2, sort_keys=True, ensure_ascii=False)
    (out / "tokenizer_config.json").write_text(config + "\n", encoding="utf-8")
    return out
