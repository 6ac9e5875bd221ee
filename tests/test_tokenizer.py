"""Tokenisation: image-pad expansion, bucketed padding, the demo tokenizer, parity with transformers."""
import json

import numpy as np
import pytest
from PIL import Image

from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.inputs.image import ImageConfig, preprocess
from vlm2geovec_jax.inputs.tokenizer import (
    QWEN_SPECIAL_TOKENS, Tokenizer, bucket_length, build_demo_tokenizer, pad_batch)

IMG = "<|vision_start|><|image_pad|><|vision_end|>"
PROMPTS = [
    f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{IMG}Represent the given "
    "image for retrieval.<|im_end|>\n<|im_start|>assistant\n",
    "Retrieve the image at latitude 51.5074, longitude -0.1278 (London).",
    "  two  spaces\tand tabs\n\nnewlines, café Ångström 東京 −12° ",
    "<|object_ref_start|>ship<|object_ref_end|><|box_start|>(12,34),(560,999)<|box_end|> in the harbor",
    "",
]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return build_demo_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def tok(demo_dir):
    return Tokenizer.from_dir(demo_dir)


# ---- demo tokenizer ----

def test_special_ids_are_the_last_fourteen_in_qwen_order(tok, demo_dir):
    sp = tok.special_ids
    assert (sp.endoftext, sp.im_start, sp.im_end, sp.object_ref_start, sp.object_ref_end, sp.box_start,
            sp.box_end, sp.quad_start, sp.quad_end, sp.vision_start, sp.vision_end, sp.vision_pad,
            sp.image_pad, sp.video_pad) == tuple(range(498, 512))
    assert sp.pad == 498 and tok.vocab_size == 512
    data = json.loads((demo_dir / "tokenizer.json").read_text())
    assert [(t["id"], t["content"], t["special"]) for t in data["added_tokens"]] == [
        (498 + i, t, True) for i, t in enumerate(QWEN_SPECIAL_TOKENS)]
    assert len(data["model"]["vocab"]) == 498 and max(data["model"]["vocab"].values()) == 497


def test_demo_tokenizer_is_deterministic(tmp_path, demo_dir):
    again = build_demo_tokenizer(tmp_path / "again")
    other = build_demo_tokenizer(tmp_path / "other", seed=1)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (again / name).read_bytes() == (demo_dir / name).read_bytes()
    assert (other / "tokenizer.json").read_bytes() != (demo_dir / "tokenizer.json").read_bytes()
    small = Tokenizer.from_dir(build_demo_tokenizer(tmp_path / "small", vocab_size=300))
    assert small.special_ids.endoftext == 286 and small.special_ids.video_pad == 299


def test_demo_tokenizer_learned_domain_merges(tok):
    ids = tok.backend.encode(" the image latitude").ids
    assert len(ids) < len(" the image latitude") / 2
    assert tok.decode(ids) == " the image latitude"


def test_demo_tokenizer_size_errors(tmp_path):
    with pytest.raises(ValueError, match="vocab_size 270 too small"):
        build_demo_tokenizer(tmp_path, vocab_size=270)
    with pytest.raises(ValueError, match=r"the demo corpus supports at most \d+ BPE tokens, vocab_size 100000"):
        build_demo_tokenizer(tmp_path, vocab_size=100000)


# ---- encode ----

def test_encode_expands_each_image_pad(tok):
    sp = tok.special_ids
    prompt = f"one {IMG} two {IMG} end"
    ids = tok.encode(prompt, [np.array([1, 4, 6]), (1, 2, 2)])
    plain = tok.backend.encode(prompt).ids
    i, j = [k for k, t in enumerate(plain) if t == sp.image_pad]
    expected = plain[:i] + [sp.image_pad] * 6 + plain[i + 1:j] + [sp.image_pad] * 1 + plain[j + 1:]
    assert ids == expected
    assert ids.count(sp.image_pad) == 7 and len(ids) == len(plain) + 5
    assert tok.encode("no images", []) == tok.backend.encode("no images").ids
    # A merge size of 1 keeps every patch as a token.
    assert tok.encode(IMG, [(1, 2, 3)], merge_size=1) == [sp.vision_start] + [sp.image_pad] * 6 + [sp.vision_end]


def test_encode_count_mismatch(tok):
    with pytest.raises(RecordError) as err:
        tok.encode(f"{IMG} and {IMG}", [(1, 2, 2)], where="record 5")
    assert str(err.value) == ("record 5: the prompt has 2 <|image_pad|> tokens but 1 images were "
                              "given; expected one <|vision_start|><|image_pad|><|vision_end|> per image")
    with pytest.raises(RecordError, match="the prompt has 0 <|image_pad|> tokens but 1 images"):
        tok.encode("text only", [(1, 2, 2)])


def test_encode_structure_errors(tok):
    with pytest.raises(RecordError, match=r"<\|image_pad\|> number 0 is not enclosed as"):
        tok.encode("<|image_pad|><|vision_end|>", [(1, 2, 2)])
    with pytest.raises(RecordError, match=r"<\|image_pad\|> number 1 is not enclosed as"):
        tok.encode(f"{IMG}<|vision_start|><|image_pad|>", [(1, 2, 2), (1, 2, 2)])
    with pytest.raises(RecordError, match="videos are not supported"):
        tok.encode("<|vision_start|><|video_pad|><|vision_end|>", [])
    with pytest.raises(ValueError, match=r"image grid_thw \[1, 3, 3\] must be 3 positive ints whose product is "
                                         r"divisible by merge_size\*\*2 = 4"):
        tok.encode(IMG, [(1, 3, 3)])


# ---- padding ----

def test_pad_batch_right_and_left():
    seqs = [[5, 6, 7], [8]]
    ids, mask = pad_batch(seqs, pad_id=0, buckets=(4, 8))
    assert ids.dtype == np.int32 and mask.dtype == np.int32
    np.testing.assert_array_equal(ids, [[5, 6, 7, 0], [8, 0, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 0, 0, 0]])
    ids, mask = pad_batch(seqs, pad_id=9, side="left", buckets=(4, 8))
    np.testing.assert_array_equal(ids, [[9, 5, 6, 7], [9, 9, 9, 8]])
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1], [0, 0, 0, 1]])


def test_bucket_choice_and_overflow(tok):
    assert bucket_length(1) == 64 and bucket_length(64) == 64 and bucket_length(65) == 128
    assert bucket_length(4096) == 4096
    ids, mask = tok.pad_batch([[1] * 65, [2] * 3])
    assert ids.shape == (2, 128) and mask.sum() == 68 and ids[1, 3] == tok.special_ids.pad
    with pytest.raises(ValueError) as err:
        pad_batch([[1] * 3, [1] * 9], pad_id=0, buckets=(4, 8))
    assert str(err.value) == ("sequence 1 of the batch has 9 tokens, more than the largest length bucket 8; add a "
                              "larger bucket or shorten the input (fewer image pixels or less text)")


def test_pad_batch_argument_errors():
    with pytest.raises(ValueError, match="side must be 'right' or 'left', got 'middle'"):
        pad_batch([[1]], pad_id=0, side="middle")
    with pytest.raises(ValueError, match=r"buckets must be positive and strictly increasing, got \(8, 4\)"):
        pad_batch([[1]], pad_id=0, buckets=(8, 4))
    with pytest.raises(ValueError, match="sequence 1 of the batch is empty"):
        pad_batch([[1], []], pad_id=0)
    with pytest.raises(ValueError, match="cannot pad an empty batch"):
        pad_batch([], pad_id=0)


# ---- loading errors ----

def test_from_dir_errors(tmp_path, demo_dir):
    with pytest.raises(FileNotFoundError, match=rf"^{tmp_path}/tokenizer.json: tokenizer file not found"):
        Tokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match=rf"^{tmp_path}/tokenizer.json: cannot parse tokenizer"):
        Tokenizer.from_dir(tmp_path)
    data = json.loads((demo_dir / "tokenizer.json").read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<|image_pad|>"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"tokenizer.json: the vocabulary has no special token <\|image_pad\|>"):
        Tokenizer.from_dir(tmp_path)


def test_pad_token_from_config(tmp_path, demo_dir):
    (tmp_path / "tokenizer.json").write_bytes((demo_dir / "tokenizer.json").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"pad_token": {"content": "<|vision_pad|>"}}))
    assert Tokenizer.from_dir(tmp_path).special_ids.pad == 509


# ---- parity with transformers ----

def test_ids_match_transformers(tok, demo_dir):
    transformers = pytest.importorskip("transformers")
    auto = transformers.AutoTokenizer.from_pretrained(str(demo_dir))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(demo_dir / "tokenizer.json"))
    assert type(auto).__name__ == "Qwen2Tokenizer"
    assert auto.pad_token_id == tok.special_ids.pad and auto.eos_token_id == tok.special_ids.im_end
    assert auto.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS)) == list(range(498, 512))
    for prompt in PROMPTS:
        ours = tok.backend.encode(prompt).ids
        assert auto(prompt)["input_ids"] == ours, prompt
        assert fast(prompt)["input_ids"] == ours, prompt
        assert auto.decode(ours) == prompt


def test_processor_parity_end_to_end(tok, demo_dir):
    """Our preprocess + encode give the ids, pixels and grids of transformers' Qwen2VLProcessor."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class NoVideoProcessor(transformers.Qwen2VLProcessor):
        """The video processor needs torchvision; images do not."""

        def check_argument_for_proper_class(self, name, arg):
            return None if arg is None else super().check_argument_for_proper_class(name, arg)

    limits = dict(min_pixels=56 * 56, max_pixels=28 * 28 * 16)
    processor = NoVideoProcessor(image_processor=Qwen2VLImageProcessorPil(**limits),
                                 tokenizer=transformers.AutoTokenizer.from_pretrained(str(demo_dir)),
                                 video_processor=None)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, hw + (3,), dtype=np.uint8)) for hw in ((90, 61), (30, 200))]
    prompt = f"<|im_start|>user\n{IMG}and{IMG}find the river<|im_end|>"
    ref = processor(text=[prompt], images=images, return_tensors="np")
    ours = [preprocess(image, ImageConfig(**limits)) for image in images]
    grids = [grid for _, grid in ours]
    np.testing.assert_array_equal(np.stack(grids), ref["image_grid_thw"])
    np.testing.assert_allclose(np.concatenate([p for p, _ in ours]), ref["pixel_values"], rtol=0, atol=1e-5)
    assert tok.encode(prompt, grids) == ref["input_ids"][0].tolist()
