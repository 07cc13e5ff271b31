#!/usr/bin/env bash
# The GPU check of issue 17, in one go (under 8 minutes on an H100/H200-class GPU): the CUDA tests, bf16/fp16
# parity against fp32, the xl step time / MFU inputs / memory (bench), and a full uniform-tiny generate on the GPU.
# Usage: scripts/gpu_check.sh [OUT_DIR]   (from the repository root; writes its reports to OUT_DIR, default gpu-check/)
set -euo pipefail
OUT="${1:-gpu-check}"
PY="${PYTHON:-python}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

echo "== 1. CUDA tests (the sampling loop reads nothing from the GPU; precision policy; pinned offload)"
timeout 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_samplers.py -k cuda tests/test_precision.py \
  tests/test_offload.py \
  | tee "$OUT/tests.txt"

echo "== 2. bf16 / fp16 parity against fp32"
timeout 120 "$PY" scripts/gpu_parity.py | tee "$OUT/parity.txt"

echo "== 3. xl, 4 s at 256x256, 30 steps, CFG 5: every stage, sampler and task, with and without offload"
timeout 240 "$PY" -m uniform_core.cli bench --device cuda --preset xl --seconds 4 --steps 30 --repeats 2 \
  --growth --json "$OUT/xl-cuda.json" | tee "$OUT/xl-cuda.md"

echo "== 4. uniform-tiny t2av end to end on the GPU (auto precision)"
timeout 60 "$PY" -m uniform_core.cli generate --task t2av --prompt "a red ball bounces twice" --device cuda \
  --out "$OUT/t2av.mp4" | tee "$OUT/generate.txt"
test -s "$OUT/t2av.mp4"
echo "gpu check passed; reports in $OUT/"
