"""`vlm2geovec embed` equals transformers' Qwen2-VL on the documented prompts; collate; bad items."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from hf_utils import hf_embed, hf_model, transformers
from vlm2geovec_jax import cli
from vlm2geovec_jax.inputs.collate import collate, content_ids
from vlm2geovec_jax.inputs.image import ImageConfig
from vlm2geovec_jax.inputs.records import Item
from vlm2geovec_jax.inputs.tokenizer import Tokenizer, build_demo_tokenizer
from vlm2geovec_jax.models.presets import model_config

CFG = model_config("tiny")
IMG = "<|vision_start|><|image_pad|><|vision_end|>\n"


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny random transformers Qwen2-VL directory with the demo tokenizer beside it."""
    path = tmp_path_factory.mktemp("hf")
    hf_model(CFG).save_pretrained(path)
    build_demo_tokenizer(path)
    return path


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """(item JSON, the prompt docs/prompt_layout.md says it becomes, its image or None)."""
    root = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate(((64, 48), (90, 60))):
        paths.append(root / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    text = "Find a remote sensing image that matches the given caption:"
    region = "Describe the object in the given region of the remote sensing image:"
    image = "Represent the given remote sensing image."
    return [
        ({"text": "Many boats moored in a harbour.", "instruction": text},
         f"{text} Many boats moored in a harbour.", None),
        ({"image": str(paths[1]), "instruction": image}, f"{IMG}{image}", paths[1]),
        # box [10, 8, 30, 40] on 64x48: x 10/64*1000 = 156.25 -> 156, y 8/48*1000 = 166.7 -> 167, ...
        ({"image": str(paths[0]), "image_size": [64, 48], "boxes": [{"xyxy": [10, 8, 30, 40]}], "instruction": region},
         f"{IMG}{region} <|box_start|>(156,167),(469,833)<|box_end|>", paths[0]),
        ({"geo": {"lat": -33.8688, "lon": 151.2093}}, "latitude -33.8688, longitude 151.2093", None),
        ({"image": str(paths[0]), "geo": {"lat": 48.35381, "lon": 11.78609}, "instruction": image},
         f"{IMG}{image} latitude 48.3538, longitude 11.7861", paths[0]),
    ]


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]  # after the progress bar


def write_items(path, rows) -> str:
    path.write_text("".join((json.dumps(r) if isinstance(r, dict) else r) + "\n" for r in rows))
    return str(path)


def reference_vectors(hf_dir, cases) -> np.ndarray:
    """transformers' processor + model on the documented prompt strings, one item at a time."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class NoVideoProcessor(transformers.Qwen2VLProcessor):
        def check_argument_for_proper_class(self, name, arg):  # the video processor needs torchvision
            return None if arg is None else super().check_argument_for_proper_class(name, arg)

    processor = NoVideoProcessor(image_processor=Qwen2VLImageProcessorPil(),
                                 tokenizer=transformers.AutoTokenizer.from_pretrained(str(hf_dir)),
                                 video_processor=None)
    model = transformers.Qwen2VLForConditionalGeneration.from_pretrained(str(hf_dir)).eval()
    out = []
    for _, prompt, image in cases:
        images = None if image is None else [Image.open(image).convert("RGB")]
        x = processor(text=[prompt], images=images, return_tensors="np")
        out.append(hf_embed(model, x["input_ids"], x["attention_mask"], x.get("pixel_values"),
                            x.get("image_grid_thw"))[0])
    return np.stack(out)


def test_embed_matches_transformers_on_documented_prompts(hf_dir, cases, tmp_path, capsys):
    items = write_items(tmp_path / "items.jsonl", [c[0] for c in cases])
    out = tmp_path / "emb.npy"
    assert cli.main(["embed", "--ckpt", str(hf_dir), "--items", items, "--out", str(out), "--batch-size", "3"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"embeddings of 5 of 5 items written to {out}")
    ours = np.load(out)
    assert ours.shape == (5, CFG.hidden_size) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    ref = reference_vectors(hf_dir, cases)
    assert np.abs(ours - ref).max() <= 1e-4, np.abs(ours - ref).max(axis=1)
    assert np.abs(ours[2] - ours[4]).max() > 1e-2  # same image, different text: different vectors


def test_collate_renders_the_documented_prompts(hf_dir, cases, tmp_path):
    from vlm2geovec_jax.inputs.jsonl import item_from_dict

    tok = Tokenizer.from_dir(hf_dir)
    items = [item_from_dict(c[0]) for c in cases]
    batch = collate(items, tokenizer=tok, image_config=ImageConfig(), model_cfg=CFG, length_buckets=(64, 128))
    for row, (_, prompt, _) in enumerate(cases):
        ids = batch.input_ids[row][batch.attention_mask[row] > 0]
        text = tok.decode([t for t in ids if t != CFG.image_token_id])
        assert text == prompt.replace("<|image_pad|>", ""), row
    assert batch.input_ids.shape == (5, 64) and batch.pixel_values.shape == (5, 1, 24, 1176)  # 16- and 24-patch images
    ids = content_ids(items)
    assert len(set(ids.tolist())) == 5 and (ids > 0).all()
    same_prompt = content_ids([Item(text="a b"), Item(instruction="a", text="b"), Item(text="a  b")])
    assert same_prompt[0] == same_prompt[1] != same_prompt[2]  # identity = what the model sees
    copy = tmp_path / "copy.png"
    copy.write_bytes(cases[1][2].read_bytes())
    images = content_ids([Item(image=str(cases[1][2])), Item(image=str(copy)), Item(image=cases[1][2].read_bytes()),
                          Item(image=str(cases[0][2]))])
    assert images[0] == images[1] == images[2] != images[3]  # the image's bytes, not its path


def test_boxes_without_image_size_take_the_size_of_the_image(cases):
    from vlm2geovec_jax.inputs.errors import RecordError
    from vlm2geovec_jax.inputs.jsonl import item_from_dict

    given = cases[2][0]
    assert given["image_size"] == [64, 48]
    inferred = item_from_dict({k: v for k, v in given.items() if k != "image_size"})
    assert inferred.image_size == (64, 48) and inferred == item_from_dict(given)
    with pytest.raises(RecordError) as err:
        item_from_dict({**given, "image_size": [48, 64]}, file="items.jsonl", record=7)
    assert str(err.value) == (f"file items.jsonl, record 7, field image_size: [48, 64] disagrees with the image "
                              f"{given['image']}, which is 64x48 pixels")


def test_embed_skip_gives_nan_rows_and_raise_names_the_record(hf_dir, cases, tmp_path, capsys):
    rows = [cases[0][0], '{"geo": {"lat": 91, "lon": 0}}', "", cases[3][0], '{"image": "missing.png"}',
            '{"text": "ok", "image": "' + str(cases[1][2]) + '", "image_size": [90, 60], '
            '"boxes": [{"xyxy": [1, 2, 95, 9]}]}']
    items = write_items(tmp_path / "bad.jsonl", rows)
    out = tmp_path / "bad.npy"
    assert cli.main(["embed", "--ckpt", str(hf_dir), "--items", items, "--out", str(out),
                     "--on-bad-record", "skip"]) == 0
    printed = capsys.readouterr().out
    assert "3 bad records skipped (field boxes[].xyxy: 1, field geo.lat: 1, field image: 1)" in printed
    assert f"embeddings of 2 of 5 items written to {out}" in printed
    vectors = np.load(out)  # row i is record i (the blank line is not a record)
    assert vectors.shape == (5, CFG.hidden_size)
    assert list(np.isnan(vectors).all(1)) == [False, True, False, True, True]
    assert cli.main(["embed", "--ckpt", str(hf_dir), "--items", items, "--out", str(out)]) == 2
    assert last_line(capsys.readouterr().err) == (f"vlm2geovec embed: error: file {items}, record 2, field geo.lat: "
                                               "latitude 91 outside [-90, 90] degrees")
    write_items(tmp_path / "bad.jsonl", rows[:1] + rows[4:5])
    assert cli.main(["embed", "--ckpt", str(hf_dir), "--items", items, "--out", str(out)]) == 2
    assert last_line(capsys.readouterr().err) == ("vlm2geovec embed: error: file missing.png, record 2, field image: "
                                               "image file not found; expected a readable image file")


def test_embed_from_a_model_checkpoint_uses_its_assets(hf_dir, cases, tmp_path, capsys):
    from vlm2geovec_jax.weights.convert import import_hf

    ckpt = import_hf(hf_dir, tmp_path / "ckpt", progress=False)
    items = write_items(tmp_path / "items.jsonl", [c[0] for c in cases[:3]])
    for src, out in ((ckpt, tmp_path / "a.npy"), (hf_dir, tmp_path / "b.npy")):
        assert cli.main(["embed", "--ckpt", str(src), "--items", items, "--out", str(out)]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"), atol=1e-6)
    assert (ckpt / "assets" / "tokenizer.json").is_file()



def test_embed_attention_flag(hf_dir, cases, tmp_path, capsys):
    """--attention splash (interpret mode here) gives XLA's vectors; a kernel this machine lacks: one line, exit 2."""
    items = write_items(tmp_path / "items.jsonl", [c[0] for c in cases[:3]])
    for impl in ("xla", "splash"):
        assert cli.main(["embed", "--ckpt", str(hf_dir), "--items", items, "--out", str(tmp_path / f"{impl}.npy"),
                         "--attention", impl]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "splash.npy"), np.load(tmp_path / "xla.npy"), atol=1e-5)
    capsys.readouterr()
    assert cli.main(["embed", "--ckpt", str(hf_dir), "--items", items, "--out", str(tmp_path / "c.npy"),
                     "--attention", "cudnn"]) == 2
    assert last_line(capsys.readouterr().err) == ("vlm2geovec embed: error: model.attention='cudnn' cannot run on "
                                                  "this cpu: cuDNN needs a GPU; use 'auto' or 'xla'")
