#!/usr/bin/env bash
# The paper-families sweep (issue #12) in one bounded device run:
#   python -m energykit measure params/measure_paper_families.yaml, stopped after SWEEP_S seconds if
#   it runs long (the raw log is crash-safe: every finished window is kept, and a second run resumes),
#   then the log turned into measurements.nc and everything copied to $OUT.
# Usage (repo root, on the GPU machine): OUT=/some/dir SWEEP_S=480 bash scripts/gpu_paper.sh
# COMPILE=false sweeps with eager decoding (noisy: see README). RESUME_FROM=folder continues an earlier
# run's sweep folder (e.g. one committed under data/); a changed setup is refused by its fingerprint.
# SHARD=K/N measures shard K of N only (balanced by tokens moved): on the paper's grid (outputs up to
# 4096) with the decode loop the five models need four device sessions, SHARD=0/4 .. 3/4 (each
# prepares 2 models; ~7.5 min estimated from the bytes floor, not yet measured; `energykit plan
# params/measure_paper_families.yaml --shards 4` lists them); then: python -m energykit merge ...
# The params' compile_cache (runs/compile_cache) is kept between shards of one session only.
# Wheels for packages the GPU image lacks (scripts/device_image.txt) are installed from .whl/ first
# (scripts/device_env.sh). TINY=1 skips nvidia-smi (the CPU rehearsal, with PARAMS=params/measure_cpu_tiny.yaml).
set -u
OUT=${OUT:-runs/gpu_out}
SWEEP_S=${SWEEP_S:-480}
PARAMS=${PARAMS:-params/measure_paper_families.yaml}
mkdir -p "$OUT"
# shellcheck source=scripts/device_env.sh
. scripts/device_env.sh
[ -z "${TINY:-}" ] && nvidia-smi --query-gpu=name,uuid,driver_version,power.limit,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader | tee "$OUT/nvidia-smi.csv"
if [ "${COMPILE:-true}" = false ]; then sed 's/^compile: true/compile: false/' "$PARAMS" > /tmp/sweep.yaml; PARAMS=/tmp/sweep.yaml; fi
out=$(python3 -c "from energykit.params import load_measure_params as l; print(l('$PARAMS').output)") || exit 1
shard_args=()
if [ -n "${SHARD:-}" ]; then
  shard_args=(--shard "$SHARD"); out="$out/shard-${SHARD%/*}-of-${SHARD#*/}"
fi
if [ -n "${RESUME_FROM:-}" ]; then
  mkdir -p "$out" && for f in windows.jsonl fingerprint.json provenance.json params.json; do cp "$RESUME_FROM/$f" "$out/" 2>/dev/null; done
fi
start=$(date +%s)
timeout -k 5 "$SWEEP_S" python3 -m energykit measure "$PARAMS" "${shard_args[@]}" --no-progress 2>&1 | tee "$OUT/sweep.log"
rc=${PIPESTATUS[0]}
echo "sweep exit $rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/sweep.log"
python3 -c "
from pathlib import Path
from energykit import sweep
from energykit.params import load_measure_params
print('dataset', sweep.finalize(Path('$out'), load_measure_params('$PARAMS')))
" 2>&1 | tail -2 | tee -a "$OUT/sweep.log"
[ "${PIPESTATUS[0]}" -ne 0 ] && [ "$rc" -eq 0 ] && rc=1
for f in windows.jsonl measurements.nc provenance.json fingerprint.json params.json shard.json; do cp "$out/$f" "$OUT/" 2>/dev/null; done
ls -la "$OUT"
exit "$rc"
