#!/usr/bin/env bash
# The engines issue's GPU check, in one bounded run (about 4-6 minutes on an H100 or H200):
# decode ms/step and J/step at batch 16 for contexts 64, 1024 and 4096, sdpa vs flex_attention,
# for the Llama-3.2-1B and OPT-1.3B geometries (random weights, bf16, compiled decode).
# Usage (repo root, on the GPU machine): OUT=/some/dir bash scripts/gpu_check.sh
set -u
OUT=${OUT:-runs/gpu_check}
CHECK_S=${CHECK_S:-450}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,uuid,driver_version,power.limit,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$OUT/nvidia-smi.csv"
python3 -c "import torch, transformers, pynvml; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
timeout --signal=KILL "$CHECK_S" python3 scripts/gpu_check.py "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
echo "exit ${PIPESTATUS[0]}"
ls -la "$OUT"
