"""The README's real path with the commands as written, on a tiny GeoScenes world: train with LoRA, evaluate
the trained model, embed a JSONL item with a box and no image_size, export-hf; then the same embedding in
transformers (the merged export) and in peft (the run's base + its adapter)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hf_utils import hf_embed, torch, transformers
from vlm2geovec_jax import cli, demo
from vlm2geovec_jax.inputs.collate import encode_item
from vlm2geovec_jax.inputs.processing import Processing
from vlm2geovec_jax.inputs.jsonl import item_from_dict
from vlm2geovec_jax.inputs.tokenizer import Tokenizer, build_demo_tokenizer

peft = pytest.importorskip("peft")
REPO = Path(__file__).resolve().parents[1]
TRAIN_OVERRIDES = ["--config.trainable=lora", "--config.num_steps=2", "--config.batch_size=8",
                   "--config.data.pipeline.sub_batch_size=8", "--config.log_every=1",
                   "--config.optimizer.warmup_steps=1", "--config.lora.rank=4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(work dir, trained run dir): GeoScenes and the demo tokenizer built, configs/demo.py trained with LoRA."""
    root = tmp_path_factory.mktemp("real_path")
    demo.build_geoscenes(root / "data", dict(demo.DEMO_WORLD, num_train=8, num_test=10))
    tokenizer = build_demo_tokenizer(root / "tokenizer")
    assert cli.main(["train", "--config", str(REPO / "configs" / "demo.py"), "--workdir", str(root / "run"),
                     f"--config.data.pipeline.data_dir={root / 'data'}", f"--config.data.pipeline.tokenizer={tokenizer}",
                     *TRAIN_OVERRIDES]) == 0
    return root, root / "run"


def boxed_item(root: Path) -> dict:
    """A JSONL item with a box and no image_size (the size is read from the image)."""
    pixels = np.random.default_rng(0).integers(0, 256, (96, 120, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "tile.png")
    return {"image": str(root / "tile.png"), "boxes": [{"xyxy": [12, 20, 60, 70], "label": "ship"}],
            "instruction": "Describe the object in the given region of the remote sensing image:"}


def torch_inputs(model_dir: Path, item: dict):
    """The arrays transformers takes, made with the artifact's own tokenizer and processing."""
    processing = Processing.read(model_dir)
    encoded = encode_item(item_from_dict(item), tokenizer=Tokenizer.from_dir(model_dir / "assets"),
                          image_config=processing.image, box_format=processing.box_format)
    ids = encoded.input_ids[None]
    return ids, np.ones_like(ids), encoded.pixel_values, encoded.grid_thw[None]


def test_the_run_writes_a_self_contained_model_and_a_peft_adapter(run):
    _, workdir = run
    for part in ("model_config.json", "params", "processing.json", "assets/tokenizer.json"):
        assert (workdir / "model" / part).exists(), part
    config = json.loads((workdir / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["base_model_name_or_path"] == str(workdir / "base")
    assert len(config["target_modules"]) == 2 * 7  # 2 layers x q, k, v, o, gate, up, down


def test_readme_path_eval_embed_export_and_pytorch(run, tmp_path, capsys):
    root, workdir = run
    model = workdir / "model"
    assert cli.main(["eval", "--ckpt", str(model), "--suite", f"{REPO / 'eval' / 'geoscenes.py'}:demo,quick",
                     "--data-dir", str(root / "data"), "--out", str(tmp_path / "eval"),
                     "--tasks", "referring_expression_retrieval"]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert [t["task"] for t in report["tasks"]] == ["referring_expression_retrieval"]

    item = boxed_item(tmp_path)
    (tmp_path / "items.jsonl").write_text(json.dumps(item) + "\n")
    assert cli.main(["embed", "--ckpt", str(model), "--items", str(tmp_path / "items.jsonl"),
                     "--out", str(tmp_path / "emb.npy")]) == 0
    ours = np.load(tmp_path / "emb.npy")
    assert ours.shape[0] == 1 and np.isfinite(ours).all()

    assert cli.main(["export-hf", "--ckpt", str(model), "--out", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "tokenizer.json").is_file() and (tmp_path / "hf" / "preprocessor_config.json").is_file()
    inputs = torch_inputs(model, item)

    merged = transformers.Qwen2VLForConditionalGeneration.from_pretrained(str(tmp_path / "hf")).eval()
    assert np.abs(hf_embed(merged, *inputs) - ours).max() <= 1e-4

    base = transformers.Qwen2VLForConditionalGeneration.from_pretrained(str(workdir / "base")).eval()
    assert np.abs(hf_embed(base, *inputs) - ours).max() > 1e-3  # the adapter is not a no-op
    adapted = peft.PeftModel.from_pretrained(base, str(workdir / "adapter")).eval()  # wraps base in place
    with torch.no_grad():
        via_peft = hf_embed(adapted.base_model.model, *inputs)
    assert np.abs(via_peft - ours).max() <= 1e-4
