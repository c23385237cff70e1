#!/usr/bin/env bash
# Everything one lent GPU session should do, in one bounded command (the device tool gives one run of at
# most 10 minutes): first the decode-loop check (scripts/gpu_check.sh), then as many shards of the
# paper-families sweep (scripts/gpu_paper.sh) as the time left allows.
#
# Before the first Python import the carried wheels (.whl: what the image lacks, scripts/device_image.txt)
# are installed and PYTHONPATH is set (scripts/device_env.sh). Everything is written under $WORK (/tmp),
# the compile cache included; what comes back is at most 8 plain files in $OUT, never a folder (the
# device tool returns at most 8 files of at most 16 MiB each, two folders down):
#   $OUT/summary.txt        one line per model checked and per shard ("model NAME ok", "shard K/N ok",
#                           or why not), the time budget's stops, the files returned
#   $OUT/gpu_check.csv      the check's table (one row per model)
#   $OUT/session.tar.gz     the data and logs of the check and of every shard (windows.jsonl,
#                           measurements.nc, provenance, ...), at most 16 MiB (logs are cut first)
#   $OUT/compile_cache.tar.gz   the Inductor/Triton cache, only if it fits 16 MiB
# Every finished window is kept (the sweep's log is crash-safe): a shard cut short resumes next time
# with RESUME_FROM=<its folder, unpacked from session.tar.gz>.
# Usage (repo root, on the GPU machine):
#   OUT=dir TOTAL_S=560 SHARDS="0/4 1/4" bash scripts/gpu_session.sh
#   CHECK=0 skips the check (once it has passed and its CSV is committed); SHARDS="" runs the check only
#   (then it gets the whole budget: the first lent session should run OUT=$OUT SHARDS="" TOTAL_S=570).
#   MODELS="opt-1.3b ..." checks only those (the ones a budget stopped last time).
#   TINY=1: the CPU mode (tiny models, meter none, params/measure_cpu_tiny.yaml): what
#   scripts/rehearse_device.sh runs in an environment shaped like the image.
set -u
OUT=${OUT:-runs/gpu_session}
WORK=${WORK:-/tmp/energykit-session}
TOTAL_S=${TOTAL_S:-560}
MIN_SHARD_S=${MIN_SHARD_S:-90} # below this a shard would only load and compile: stop instead
SHARD_SCRIPT=${SHARD_SCRIPT:-scripts/gpu_paper.sh}
if [ -n "${TINY:-}" ]; then
  SHARDS=${SHARDS-0/2 1/2}; PARAMS_SRC=${PARAMS:-params/measure_cpu_tiny.yaml}; MIN_SHARD_S=${TINY_MIN_SHARD_S:-20}
else
  SHARDS=${SHARDS-0/4 1/4 2/4 3/4}; PARAMS_SRC=${PARAMS:-params/measure_paper_families.yaml}
fi
# the check's share: five models need ~115 s for the first and ~90 s each next (estimate): with shards
# it gets 400 s and its budget stops the models that cannot finish; alone (SHARDS="") it gets all
if [ -n "$SHARDS" ]; then CHECK_S=${CHECK_S:-400}; reserve=$(( MIN_SHARD_S + 20 )); else CHECK_S=${CHECK_S:-$(( TOTAL_S - 30 ))}; reserve=20; fi
MAX_FILE=$(( 16 * 1024 * 1024 ))
start=$(date +%s)
left() { echo $(( TOTAL_S - ($(date +%s) - start) )); }
mkdir -p "$OUT" "$WORK"
export SESSION_OUT=$OUT   # what comes back: the steps write under $WORK, never here (pack copies)
exec > >(tee -a "$WORK/session.log") 2>&1   # the whole console, into session.tar.gz
SUMMARY=$WORK/summary.txt
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }

pack() {
  # the data and logs as one tarball (logs cut to their last MiB first if it is too large), the CSV, the summary
  local items=() f
  for f in "$WORK"/session.log "$WORK"/gpu_check "$WORK"/shard-*; do [ -e "$f" ] && items+=("$(basename "$f")"); done
  [ -f "$WORK/gpu_check/gpu_check.csv" ] && cp "$WORK/gpu_check/gpu_check.csv" "$OUT/"
  if [ ${#items[@]} -gt 0 ]; then
    tar -czf "$OUT/session.tar.gz" -C "$WORK" --exclude=compile_cache "${items[@]}"
    if [ "$(stat -c %s "$OUT/session.tar.gz")" -gt "$MAX_FILE" ]; then
      find "$WORK" -name '*.log' -size +1M -exec sh -c 'tail -c 1048576 "$1" > "$1.cut" && mv "$1.cut" "$1"' _ {} \;
      tar -czf "$OUT/session.tar.gz" -C "$WORK" --exclude=compile_cache "${items[@]}"
    fi
    if [ "$(stat -c %s "$OUT/session.tar.gz")" -gt "$MAX_FILE" ]; then
      say "returned: session.tar.gz is $(( $(stat -c %s "$OUT/session.tar.gz") >> 20 )) MiB even with cut logs: only the CSV/JSON/JSONL files kept"
      (cd "$WORK" && find "${items[@]}" -name '*.csv' -o -name '*.json' -o -name '*.jsonl' | tar -czf "$OUT/session.tar.gz" -T -)
    fi
  fi
  local cache=$WORK/compile_cache
  if [ -d "$cache" ] && [ -z "${TINY:-}" ]; then
    tar -czf "$WORK/compile_cache.tar.gz" -C "$WORK" compile_cache 2>/dev/null
    if [ "$(stat -c %s "$WORK/compile_cache.tar.gz")" -le "$MAX_FILE" ]; then
      mv "$WORK/compile_cache.tar.gz" "$OUT/"
    else
      say "returned: compile cache is $(( $(stat -c %s "$WORK/compile_cache.tar.gz") >> 20 )) MiB, over 16 MiB: not returned"
    fi
  fi
  say "returned: $(cd "$OUT" && ls | tr '\n' ' ')(+ summary.txt)"
  say "session done after $(( $(date +%s) - start )) s"
  cp "$SUMMARY" "$OUT/summary.txt"
}

# shellcheck source=scripts/device_env.sh
. scripts/device_env.sh
if ! python3 -c "import energykit.params, energykit.sweep, energykit.engines.hf" >"$WORK/import.log" 2>&1; then
  cat "$WORK/import.log"
  say "import: the kit does not import here: $(tail -1 "$WORK/import.log") (carried wheels: $(ls "$WHEELS" 2>/dev/null | tr '\n' ' '))"
  pack
  exit 1
fi
# the sweep's params, its output and compile cache under $WORK
PARAMS=$WORK/params.yaml
sed -e "s|^output:.*|output: $WORK/sweep|" -e "s|^compile_cache:.*|compile_cache: $WORK/compile_cache|" "$PARAMS_SRC" >"$PARAMS"
export PARAMS
rc_all=0

if [ "${CHECK:-1}" != 0 ]; then
  budget=$(( $(left) - reserve ))
  [ "$budget" -gt "$CHECK_S" ] && budget=$CHECK_S
  if [ "$budget" -lt 30 ]; then
    say "model (all) not checked: budget: ${budget} s left for the check (TOTAL_S=$TOTAL_S)"; pack; exit 1
  fi
  echo "== decode-loop check (at most ${budget} s)"
  OUT="$WORK/gpu_check" CHECK_S="$budget" COMPILE_CACHE="$WORK/compile_cache" bash scripts/gpu_check.sh
  rc=$?
  echo "== check exit $rc after $(( $(date +%s) - start )) s"
  [ "$rc" -ne 0 ] && rc_all=1
  if [ -f "$WORK/gpu_check/summary.txt" ]; then
    cat "$WORK/gpu_check/summary.txt" >>"$SUMMARY"
  else
    say "model (all) not checked: the check wrote no summary (exit $rc)"
  fi
fi

for shard in $SHARDS; do
  budget=$(( $(left) - 20 ))
  if [ "$budget" -lt "$MIN_SHARD_S" ]; then
    say "shard $shard not started: budget: ${budget} s left, a shard needs at least ${MIN_SHARD_S} s"
    continue
  fi
  k=${shard%/*}
  echo "== paper-families shard $shard (at most ${budget} s)"
  OUT="$WORK/shard-$k" SHARD="$shard" SWEEP_S="$budget" bash "$SHARD_SCRIPT"
  rc=$?
  if [ "$rc" -eq 0 ] && grep -q "^sweep exit 0 " "$WORK/shard-$k/sweep.log" 2>/dev/null; then
    say "shard $shard ok"
  else
    rc_all=1
    say "shard $shard not finished (exit $rc; $(grep -c '"energy_j"' "$WORK/shard-$k/windows.jsonl" 2>/dev/null || echo 0) windows kept, resume with RESUME_FROM)"
  fi
done
pack
exit "$rc_all"
