#!/usr/bin/env bash
# The checks that need a GPU, in one short run (a lent GPU machine is held by the minute):
#   1. the gpu-marked tests: cuDNN attention against a float64 brute force and its gradients against the
#      xla kernel, the encoder with cuDNN against transformers in bf16;
#   2. bench.encoder: embeddings/s of ours (xla and cudnn kernels) against transformers on the GPU, bf16,
#      and float32 at full precision on both sides (JAX would otherwise use TF32, PyTorch does not);
#   3. bench.train: train-step examples/s and MFU against a PyTorch step, bf16 mixed precision;
#   4. bench.attention: the kernels alone, bf16, at the tiny, ~100M and 2B shapes.
# Each stage has its own time limit, so one that hangs cannot eat the rest. Logs go to $OUT (or ./gpu_logs).
#
#   bash tests/scripts/gpu_checks.sh            # on a machine with a CUDA GPU, from the repository root
set -o pipefail
OUT=${OUT:-gpu_logs}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda} XLA_PYTHON_CLIENT_PREALLOCATE=false \
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
quiet() { grep -v "^W0\|^E0\|^I0\|Writing model shards\|bos_token_id\|eos_token_id"; }

$PY -c "import jax, flax, torch, transformers; print('jax', jax.__version__, jax.devices(), '| flax', \
flax.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)" 2>&1 | quiet
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm \
  --format=csv,noheader

echo "== 1. gpu tests"
timeout 150 $PY -m pytest -p no:cacheprovider -n 0 -q -rs -m gpu tests/test_attention.py \
  tests/test_encoder_parity.py 2>&1 | quiet | tee "$OUT/tests.log" | tail -25

echo "== 2. bench.encoder"
timeout 100 $PY -m vlm2geovec_jax.bench.encoder --presets tiny,small_100m --batch 64 --iters 20 \
  --dtype bfloat16 --attention xla,cudnn --skip-import-memory 2>&1 | quiet | tee "$OUT/encoder.log"
JAX_DEFAULT_MATMUL_PRECISION=highest timeout 60 $PY -m vlm2geovec_jax.bench.encoder --presets small_100m \
  --batch 64 --iters 20 --dtype float32 --attention xla --skip-import-memory 2>&1 | quiet | tee -a "$OUT/encoder.log"

echo "== 3. bench.train"
timeout 120 $PY -m vlm2geovec_jax.bench.train --presets small_100m --batch 64 --length 256 --steps 10 \
  --dtype bfloat16 2>&1 | quiet | tee "$OUT/train.log"

echo "== 4. bench.attention"
timeout 60 $PY -m vlm2geovec_jax.bench.attention --presets tiny,small_100m,qwen2vl_2b --batch 32 --iters 20 \
  --dtype bfloat16 2>&1 | quiet | tee "$OUT/attention.log"
