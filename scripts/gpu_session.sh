#!/usr/bin/env bash
# Everything one lent GPU session should do, in one bounded command (the device tool gives one run of at
# most 10 minutes): first the decode-loop check (scripts/gpu_check.sh, issue #16), then as many shards of
# the paper-families sweep (scripts/gpu_paper.sh, issue #17) as the time left allows. Every finished
# window is kept (the sweep's log is crash-safe), so a shard cut short resumes next time with
# RESUME_FROM=data/<its folder>. Results land under $OUT:
#   $OUT/gpu_check/   the check's CSV, log and nvidia-smi line
#   $OUT/shard-K/     each shard's windows.jsonl, measurements.nc, provenance, fingerprint, plan
#   $OUT/compile_cache.tar.gz   the Inductor/Triton cache, when small enough to carry to the next run
# Usage (repo root, on the GPU machine):
#   OUT=dir TOTAL_S=560 SHARDS="0/4 1/4" bash scripts/gpu_session.sh
#   CHECK=0 skips the check (once it has passed and its CSV is committed).
set -u
OUT=${OUT:-runs/gpu_session}
TOTAL_S=${TOTAL_S:-560}
SHARDS=${SHARDS-0/4 1/4 2/4 3/4}   # SHARDS="" runs the check only
CHECK_S=${CHECK_S:-470}      # the check of 5 models needs ~6-10 min (estimate): it comes first
MIN_SHARD_S=${MIN_SHARD_S:-90}     # below this a shard would only load and compile: stop instead
mkdir -p "$OUT"
start=$(date +%s)
left() { echo $(( TOTAL_S - ($(date +%s) - start) )); }

if [ "${CHECK:-1}" != 0 ]; then
  budget=$(( $(left) - MIN_SHARD_S ))
  [ "$budget" -gt "$CHECK_S" ] && budget=$CHECK_S
  echo "== decode-loop check (at most ${budget} s)"
  OUT="$OUT/gpu_check" CHECK_S="$budget" bash scripts/gpu_check.sh
  echo "== check exit $? after $(( $(date +%s) - start )) s"
  # its cold/warm compile cache is many small files: keep it off what comes back
  [ -d "$OUT/gpu_check/compile_cache" ] && mv "$OUT/gpu_check/compile_cache" "/tmp/gpu_check_compile_cache.$$"
fi

for shard in $SHARDS; do
  budget=$(( $(left) - 20 ))
  if [ "$budget" -lt "$MIN_SHARD_S" ]; then
    echo "== stop: ${budget} s left, too little for shard $shard"
    break
  fi
  k=${shard%/*}
  echo "== paper-families shard $shard (at most ${budget} s)"
  OUT="$OUT/shard-$k" SHARD="$shard" SWEEP_S="$budget" bash scripts/gpu_paper.sh
done

cache=$(python3 -c "from energykit.params import load_measure_params as l; print(l('${PARAMS:-params/measure_paper_families.yaml}').engine_options.compile_cache or '')" 2>/dev/null)
if [ -n "$cache" ] && [ -d "$cache" ]; then
  tar -czf "$OUT/compile_cache.tar.gz" -C "$(dirname "$cache")" "$(basename "$cache")"
  size=$(stat -c %s "$OUT/compile_cache.tar.gz")
  if [ "$size" -gt $(( 40 * 1024 * 1024 )) ]; then
    echo "== compile cache is $(( size / 1048576 )) MiB: too large to carry, not kept"
    rm -f "$OUT/compile_cache.tar.gz"
  fi
fi
echo "== session done after $(( $(date +%s) - start )) s"
