#!/usr/bin/env bash
# Decode at the bytes floor (issue 16's GPU check), one bounded command on one GPU (budget: 8 minutes):
# for OPT-1.3B, Llama-3.2-1B, Qwen2-1.5B, Granite-3-2B and Gemma-2-2B (random weights, bf16, the hf
# engine's decode loop, batch 16) one CSV row per model: preparation seconds cold and warm, decode
# ms/step and J/step at contexts 64, 1024 and 4096, the bytes floor from a copy bandwidth measured in
# the same run, the ratio to it, and the spread of 3 windows at one cell. See scripts/gpu_check.py.
# Usage (repo root, on the GPU machine): OUT=/some/dir bash scripts/gpu_check.sh
# CPU smoke test (tiny geometries, meter none; checks that it runs, its figures mean nothing):
#   TINY=1 OUT=/tmp/gc bash scripts/gpu_check.sh
set -u
OUT=${OUT:-runs/gpu_check}
CHECK_S=${CHECK_S:-470}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [ -n "${TINY:-}" ]; then
  timeout --signal=KILL "$CHECK_S" $PY scripts/gpu_check.py "$OUT" --tiny ${MODELS:+--models $MODELS} 2>&1 | tee "$OUT/gpu_check.log"
  exit "${PIPESTATUS[0]}"
fi
nvidia-smi --query-gpu=name,uuid,driver_version,power.limit,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$OUT/nvidia-smi.csv"
$PY -c "import torch, transformers, pynvml; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
timeout --signal=KILL "$CHECK_S" $PY scripts/gpu_check.py "$OUT" ${MODELS:+--models $MODELS} 2>&1 | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
echo "exit $rc"
ls -la "$OUT"
exit "$rc"
