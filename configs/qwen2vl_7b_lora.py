"""The 2B recipe on Qwen2-VL-7B: LoRA r=8, batch 1024 with GradCache, parameters sharded over fsdp.

    vlm2geovec import-hf --hf-dir Qwen2-VL-7B-Instruct --out ckpt/qwen2vl_7b --mesh data=1,fsdp=-1,tensor=1
    vlm2geovec train --config configs/qwen2vl_7b_lora.py --workdir runs/7b --config.init.checkpoint=ckpt/qwen2vl_7b
"""
import importlib.util
import os

from vlm2geovec_jax.models.presets import get_preset


def _base():
    path = os.path.join(os.path.dirname(__file__), "qwen2vl_2b_lora.py")
    spec = importlib.util.spec_from_file_location("qwen2vl_2b_lora", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    c = _base()
    c.model = get_preset("qwen2vl_7b")
    c.model.remat_policy = "full"
    c.grad_cache.num_chunks = 32
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    return c
