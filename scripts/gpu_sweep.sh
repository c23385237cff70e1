#!/usr/bin/env bash
# All the GPU work of the measurement issue, in one bounded run (about 8-9 minutes on an H200):
#   1. a 30 s smoke test of the compiled hf engine and the NVML meter on a tiny geometry;
#   2. the real sweep of params/measure_h200_hf.yaml (Llama-3.2-1B and OPT-1.3B geometries, bf16,
#      batch 16, inputs 64..4096, outputs 16..1024, 3 repeats, 2 s windows), stopped after
#      SWEEP_S seconds if it runs long — the raw log is crash-safe, so what finished is kept;
#   3. the raw log turned into runs/h200_hf/measurements.nc, everything copied to $OUT.
# Usage (repo root, on the GPU machine): OUT=/some/dir bash scripts/gpu_sweep.sh
# Wheels for packages the GPU image lacks may be placed in .whl/ (installed to /tmp/site).
set -u
OUT=${OUT:-runs/gpu_out}
SWEEP_S=${SWEEP_S:-450}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,uuid,driver_version,power.limit,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$OUT/nvidia-smi.csv"
python3 -c "import torch, transformers, pynvml; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"

compile=true
if ! python3 -m energykit measure params/measure_gpu_smoke.yaml --no-progress > "$OUT/smoke.log" 2>&1; then
  echo "smoke test with compile failed; sweeping eagerly instead"; tail -5 "$OUT/smoke.log"; compile=false
fi
tail -3 "$OUT/smoke.log"
params=params/measure_h200_hf.yaml
if [ "$compile" = false ]; then sed 's/^compile: true/compile: false/' $params > /tmp/sweep.yaml; params=/tmp/sweep.yaml; fi

start=$(date +%s)
timeout --signal=KILL "$SWEEP_S" python3 -m energykit measure "$params" --no-progress > "$OUT/sweep.log" 2>&1
echo "sweep exit $? after $(( $(date +%s) - start )) s"; tail -5 "$OUT/sweep.log"
python3 -c "
from pathlib import Path
from energykit import sweep
from energykit.params import load_measure_params
p = load_measure_params('$params')
print('dataset', sweep.finalize(Path(p.output), p))
"
cp runs/h200_hf/windows.jsonl runs/h200_hf/measurements.nc runs/h200_hf/provenance.json "$OUT/" 2>/dev/null
cp runs/gpu_smoke/windows.jsonl "$OUT/smoke_windows.jsonl" 2>/dev/null
ls -la "$OUT"
