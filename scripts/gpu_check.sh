#!/usr/bin/env bash
# Decode at the bytes floor (issues 16 and 24's GPU check), one bounded command on one GPU: for Gemma-2-2B,
# Qwen2-1.5B, Llama-3.2-1B, Granite-3-2B and OPT-1.3B (the riskiest first; random weights, bf16, the hf
# engine's decode loop, batch 16) one CSV row per model: decode ms/step and J/step at contexts 64, 1024
# and 4096 against the bytes floor (copy bandwidth measured in the same run), the ratio 1024/4096,
# replay vs eager tokens (first mismatching step), cold and warm preparation (first model only), the
# spread of 5 windows. A time budget stops starting a model that cannot finish. See scripts/gpu_check.py.
# Writes under $OUT: gpu_check.csv, gpu_check.json, gpu_check.log, summary.txt (and nvidia-smi.csv);
# the compile cache goes to $COMPILE_CACHE (default a new folder under /tmp), never under $OUT.
# Usage (repo root, on the GPU machine): OUT=/some/dir bash scripts/gpu_check.sh
# CPU smoke test (tiny geometries, meter none; checks that it runs, its figures mean nothing):
#   TINY=1 OUT=/tmp/gc bash scripts/gpu_check.sh
set -u
OUT=${OUT:-runs/gpu_check}
CHECK_S=${CHECK_S:-400}
COMPILE_CACHE=${COMPILE_CACHE:-$(mktemp -d /tmp/energykit-compile-cache.XXXXXX)}
mkdir -p "$OUT"
# shellcheck source=scripts/device_env.sh
. scripts/device_env.sh
PY=${PYTHON:-python3}
args=("$OUT" --budget-s $(( CHECK_S - 15 )) --compile-cache "$COMPILE_CACHE")
[ -n "${MODELS:-}" ] && args+=(--models $MODELS)
if [ -n "${TINY:-}" ]; then
  args+=(--tiny)
else
  nvidia-smi --query-gpu=name,uuid,driver_version,power.limit,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$OUT/nvidia-smi.csv"
fi
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
timeout --signal=KILL "$CHECK_S" $PY scripts/gpu_check.py "${args[@]}" 2>&1 | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 137 ] && echo "model (rest) not checked: killed at the check's limit of ${CHECK_S} s" >>"$OUT/summary.txt"
echo "exit $rc"
exit "$rc"
