"""Weight interchange with transformers: round trips, sharded files, placement on a mesh, clear errors."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from hf_utils import hf_model, torch, transformers
from vlm2geovec_jax import load, sharding
from vlm2geovec_jax.inputs.image import ImageConfig
from vlm2geovec_jax.inputs.tokenizer import build_demo_tokenizer
from vlm2geovec_jax.models.presets import model_config
from vlm2geovec_jax.weights import checkpoint, convert
from vlm2geovec_jax.weights.hf import ALIGNMENT, CheckpointError, HFCheckpoint
from safetensors.numpy import load_file, save_file


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf")
    hf_model(model_config("tiny"), seed=1).save_pretrained(path)
    build_demo_tokenizer(path)
    return path


def _tensors(directory) -> dict[str, np.ndarray]:
    out = {}
    for file in sorted(directory.glob("*.safetensors")):
        out.update(load_file(file))
    return out


def test_round_trip_is_bit_identical(hf_dir, tmp_path):
    ckpt = convert.import_hf(hf_dir, tmp_path / "ckpt", progress=False)
    out = convert.export_checkpoint(ckpt, tmp_path / "exported", progress=False)
    before, after = _tensors(hf_dir), _tensors(out)
    assert set(after) == set(before) - {"lm_head.weight"}  # tied: save_pretrained may or may not write it
    for name, value in before.items():
        if name in after:
            assert after[name].dtype == value.dtype and np.array_equal(after[name], value), name
    assert "PyTorch" in (out / "README.md").read_text()
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the artifact carries them through
        assert (out / name).read_bytes() == (hf_dir / name).read_bytes()
    assert ImageConfig.from_preprocessor_config(out / "preprocessor_config.json") == ImageConfig()


def test_bfloat16_round_trip_keeps_dtype_and_bits(tmp_path):
    cfg = model_config("tiny").replace(tie_word_embeddings=False)
    hf_model(cfg, seed=2).to(torch.bfloat16).save_pretrained(tmp_path / "hf")
    build_demo_tokenizer(tmp_path / "hf")
    ckpt = convert.import_hf(tmp_path / "hf", tmp_path / "ckpt", progress=False)
    assert checkpoint.read_model_config(ckpt).param_dtype == "bfloat16"
    out = convert.export_checkpoint(ckpt, tmp_path / "out", progress=False)
    before, after = _tensors(tmp_path / "hf"), _tensors(out)
    assert set(before) == set(after) and "lm_head.weight" in after
    for name in before:
        assert before[name].dtype == after[name].dtype
        assert np.array_equal(before[name].view(np.uint16), after[name].view(np.uint16)), name


def test_export_loads_in_transformers_without_missing_keys(hf_dir, tmp_path):
    """Sharded export (tiny shard limit) -> from_pretrained reports no missing or unexpected keys."""
    model = load(hf_dir).model
    out = convert.export_hf(model, tmp_path / "sharded", max_shard_bytes=40_000, progress=False)
    assert (out / "model.safetensors.index.json").is_file() and len(list(out.glob("*.safetensors"))) > 2
    loaded, info = transformers.Qwen2VLForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    reference = transformers.Qwen2VLForConditionalGeneration.from_pretrained(hf_dir)
    for (name, a), (_, b) in zip(sorted(loaded.state_dict().items()), sorted(reference.state_dict().items())):
        assert torch.equal(a, b), name


def test_sharded_safetensors_checkpoint_imports(hf_dir, tmp_path):
    model = transformers.Qwen2VLForConditionalGeneration.from_pretrained(hf_dir)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="60KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    ids = np.array([[5, 6, 7, 8, 9, 10]])
    np.testing.assert_array_equal(load(tmp_path / "sharded").embed_tokens(ids), load(hf_dir).embed_tokens(ids))


def test_import_places_parameters_on_the_mesh(hf_dir):
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    model, _ = convert.load_hf_model(hf_dir, mesh=mesh, progress=False)
    state = nnx.state(model, nnx.Param)
    wanted = nnx.to_flat_state(sharding.state_shardings(state, mesh))
    for (path, var), (_, want) in zip(nnx.to_flat_state(state), wanted):
        assert var.get_value().sharding.is_equivalent_to(want.get_value(), var.get_value().ndim), path
    gate = model.language.layers.gate_proj.kernel.get_value()
    assert gate.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    assert len(gate.addressable_shards) == 8 and gate.addressable_shards[0].data.shape == (2, 32, 64)
    reference = load(hf_dir).model.language.layers.gate_proj.kernel.get_value()
    np.testing.assert_array_equal(np.asarray(gate), np.asarray(reference))


# ---- errors ------------------------------------------------------------------------------------------------


def _copy(hf_dir, tmp_path):
    return shutil.copytree(hf_dir, tmp_path / "copy")


def test_error_no_config(hf_dir, tmp_path):
    path = _copy(hf_dir, tmp_path)
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        convert.import_hf(path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_error_other_architecture(hf_dir, tmp_path):
    path = _copy(hf_dir, tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(model_type="qwen2_5_vl", architectures=["Qwen2_5_VLForConditionalGeneration"])
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"model_type 'qwen2_5_vl'.*is not Qwen2-VL"):
        convert.import_hf(path, tmp_path / "out", progress=False)


def test_error_missing_tensor(hf_dir, tmp_path):
    path = _copy(hf_dir, tmp_path)
    tensors = load_file(path / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint: \['model\.layers\.1\.mlp\.up_proj"):
        convert.import_hf(path, tmp_path / "out", progress=False)


def test_error_shape_mismatch_names_tensor_and_both_shapes(hf_dir, tmp_path):
    path = _copy(hf_dir, tmp_path)
    tensors = load_file(path / "model.safetensors")
    tensors["visual.blocks.0.mlp.fc1.weight"] = np.zeros((60, 32), np.float32)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"'visual\.blocks\.0\.mlp\.fc1\.weight' has shape \(60, 32\), "
                                              r"but config\.json implies \(64, 32\)"):
        convert.import_hf(path, tmp_path / "out", progress=False)


def test_error_pickle_checkpoint_is_refused(hf_dir, tmp_path):
    path = _copy(hf_dir, tmp_path)
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(CheckpointError, match=r"(?s)pickle.*refused.*safe_serialization=True"):
        convert.import_hf(path, tmp_path / "out", progress=False)


def _header(file) -> tuple[int, dict]:
    raw = Path(file).read_bytes()
    length = int.from_bytes(raw[:8], "little")
    return length, json.loads(raw[8:8 + length])


def test_error_truncated_safetensors_names_file_and_tensor(hf_dir, tmp_path):
    """Data shorter than the header says: the tensor cut off is named (the one whose bytes end last)."""
    path = _copy(hf_dir, tmp_path)
    file = path / "model.safetensors"
    _, header = _header(file)
    last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    with open(file, "r+b") as f:
        f.truncate(file.stat().st_size - 3)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(file))}: tensor '{re.escape(last)}' needs bytes "
                                              r"\d+\.\.\d+ of the data, but the file holds only \d+ bytes after its "
                                              r"header \(truncated\?\)"):
        convert.import_hf(path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def _write_raw_safetensors(file, header: dict, data: bytes) -> None:
    encoded = json.dumps(header).encode()
    file.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)


@pytest.mark.parametrize("entry, data, message", [
    ({"dtype": "X9", "shape": [2], "data_offsets": [0, 8]}, bytes(8), r"tensor 'w': dtype 'X9', expected one of"),
    ({"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}, bytes(8),
     r"tensor 'w': data_offsets \[0, 8\] span 8 bytes, but F32 \(3,\) needs 12"),
    ({"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]}, bytes(8),
     r"tensor 'w': shape \[2, -1\], expected a list of non-negative integers"),
    ({"dtype": "F32", "shape": [2]}, bytes(8), r"tensor 'w': header entry .*expected \{dtype, shape, data_offsets\}"),
])
def test_error_malformed_safetensors_header(hf_dir, tmp_path, entry, data, message):
    path = _copy(hf_dir, tmp_path)
    _write_raw_safetensors(path / "model.safetensors", {"w": entry}, data)
    with pytest.raises(CheckpointError, match=re.escape(str(path / "model.safetensors")) + ": " + message):
        HFCheckpoint(path)


def test_error_header_longer_than_file(hf_dir, tmp_path):
    path = _copy(hf_dir, tmp_path)
    (path / "model.safetensors").write_bytes((10 ** 6).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: header length 1000000 exceeds the file's 10 "
                                              r"bytes \(truncated, or not a safetensors file\)"):
        HFCheckpoint(path)


def test_reader_is_bit_identical_to_safetensors_without_mapping_the_file(hf_dir, tmp_path):
    """Every dtype the reader maps, against safetensors' own loader; buffers fresh, aligned, the file unmapped
    (an mmap keeps every page read in the process's RSS: a second copy of the checkpoint)."""
    import ml_dtypes
    path = _copy(hf_dir, tmp_path)
    rng = np.random.default_rng(0)
    tensors = {"f32": rng.standard_normal((3, 5)).astype(np.float32),
               "bf16": rng.standard_normal((4, 7)).astype(ml_dtypes.bfloat16),
               "f16": rng.standard_normal(9).astype(np.float16), "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
               "u8": np.arange(5, dtype=np.uint8), "empty": np.zeros((0, 4), np.float32),
               "scalar": np.array(2.5, np.float64)}
    (path / "model.safetensors").unlink()
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    reader = HFCheckpoint(path)
    expected = load_file(path / "model.safetensors")
    assert reader.names() == set(expected)
    for name, value in expected.items():
        got = reader.read(name, value.shape)
        assert got.dtype == value.dtype and got.shape == value.shape, name
        assert got.tobytes() == value.tobytes(), name
        assert (got.size == 0 or got.ctypes.data % ALIGNMENT == 0) and got.flags.writeable, name
    maps = Path("/proc/self/maps")
    if maps.is_file():
        assert str(path / "model.safetensors") not in maps.read_text()
    reader.close()


def test_existing_output_is_not_overwritten(hf_dir, tmp_path):
    ckpt = convert.import_hf(hf_dir, tmp_path / "ckpt", progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert.import_hf(hf_dir, ckpt, progress=False)
    assert checkpoint.is_model_checkpoint(ckpt)


# ---- parameter counts of the real presets (meta device: no weights) ----------------------------------------


@pytest.mark.parametrize("preset", ["qwen2vl_2b", "qwen2vl_7b"])
def test_preset_parameter_count_equals_transformers(preset):
    cfg = model_config(preset)
    with torch.device("meta"):
        hf = transformers.Qwen2VLForConditionalGeneration(transformers.Qwen2VLConfig(**cfg.to_hf()))
    expected = sum(p.numel() for p in hf.parameters())  # a tied lm_head is counted once
    ours = sum(v.size for _, v in nnx.to_flat_state(nnx.state(checkpoint.abstract_model(cfg), nnx.Param)))
    assert ours == expected
    assert expected > (2_000_000_000 if preset == "qwen2vl_2b" else 8_000_000_000)


# ---- the command line --------------------------------------------------------------------------------------


def test_cli_import_and_export(hf_dir, tmp_path, capsys):
    from vlm2geovec_jax.cli import main
    assert main(["import-hf", "--hf-dir", str(hf_dir), "--out", str(tmp_path / "ckpt"),
                 "--mesh", "data=1,fsdp=-1,tensor=2"]) == 0
    assert main(["export-hf", "--ckpt", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf")]) == 0
    printed = capsys.readouterr().out
    assert f"written to {tmp_path / 'ckpt'}" in printed and f"written to {tmp_path / 'hf'}" in printed
    assert main(["import-hf", "--hf-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "nowhere: not a directory" in capsys.readouterr().err
