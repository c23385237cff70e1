#!/usr/bin/env bash
# Rehearse a lent GPU session on the CPU (issue 24), so that the first lent GPU minutes are not lost.
#
# 1. Builds an environment shaped like the device image (scripts/device_image.txt): its Python, exactly
#    its torch and transformers (PyPI's torch 2.11.0 is the image's cu130 build; it runs on a CPU), the
#    image's other packages the kit imports, and none of the packages the image lacks (removed after the
#    install, and checked absent). Cached under $REHEARSAL_CACHE: the first build downloads ~2.7 GB and
#    takes a few minutes, a rerun reuses it.
# 2. Makes the carried wheels (device_image.txt "carry") in $WHEELS (.whl, git-ignored), as the device
#    tool's README says: --no-deps, Python 3.12, manylinux x86-64.
# 3. Runs scripts/gpu_session.sh end to end in its CPU mode (TINY=1) in that environment, with no
#    PYTHONPATH of ours: only the carried wheels can supply what the image lacks.
# 4. Checks what the session would return ($OUT) against the device tool's limits (at most 8 files,
#    each at most 16 MiB, at most two folders down, names of letters, digits, '.', '_', '-'), and the
#    session's log and summary: any import error or traceback, any model not checked, fails it.
#
# Usage (repo root): bash scripts/rehearse_device.sh           prints "rehearsal: PASS ..." or "rehearsal: FAIL: ..."
#   bash scripts/rehearse_device.sh --wheels                   only make the carried wheels in $WHEELS
# Environment: WHEELS (default .whl), FETCH_WHEELS=0 (use $WHEELS as it is: the tests remove a wheel),
#   REHEARSAL_CACHE (default ~/.cache/energykit-rehearsal), RUN (work folder; default a new /tmp one),
#   SESSION_S (the session's time budget, default 560 as on the device); SHARD_SCRIPT, CHECK, SHARDS (passed to
#   gpu_session.sh; the tests use them to inject a faulty shard).
set -uo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-scripts/device_image.txt}
CACHE=${REHEARSAL_CACHE:-$HOME/.cache/energykit-rehearsal}
WHEELS=${WHEELS:-.whl}
SESSION_S=${SESSION_S:-560}
RUN=${RUN:-$(mktemp -d /tmp/energykit-rehearsal.XXXXXX)}
mkdir -p "$CACHE/wheels" "$RUN"
field() { awk -v k="$1" '$1 == k { $1 = ""; sub(/^ /, ""); print }' "$IMAGE"; }
fail() { echo "rehearsal: FAIL: $*"; exit 1; }
notes=()

# -- the carried wheels ---------------------------------------------------------------------------------
make_wheels() {
  mkdir -p "$WHEELS"
  local spec name have
  for spec in $(field carry); do
    name=${spec%%==*}; name=${name//-/_}
    have=$(ls "$WHEELS" 2>/dev/null | grep -i "^${name}-${spec#*==}-" | head -1)
    [ -n "$have" ] && continue
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEELS" "$spec" \
      || fail "cannot download the carried wheel $spec (pip download, see above)"
  done
}
if [ "${1:-}" = --wheels ]; then make_wheels; ls "$WHEELS"; exit 0; fi
[ "${FETCH_WHEELS:-1}" = 0 ] || make_wheels

# -- the image's Python -----------------------------------------------------------------------------------
want=$(field python)
PY=""
for c in "python$want" $HOME/.pyenv/versions/$want*/bin/python$want /usr/bin/python$want; do
  if command -v "$c" >/dev/null 2>&1 && "$c" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$want'.split('.'))))" 2>/dev/null; then
    PY=$(command -v "$c"); break
  fi
done
if [ -z "$PY" ]; then
  PY=$(command -v python3)
  notes+=("substituted: Python $("$PY" -c 'import platform; print(platform.python_version())') for the image's $want (none found here)")
fi

# -- the image's environment (cached per image file and Python) -----------------------------------------
key=$( (field python; field pinned; field present; "$PY" --version) | sha256sum | cut -c1-12)
VENV=$CACHE/venv-$key
if [ ! -f "$VENV/.complete" ]; then
  echo "rehearsal: building the image environment in $VENV (first time: downloads ~2.7 GB, a few minutes)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" || fail "cannot make a virtual environment with $PY"
  # shellcheck disable=SC2046
  "$VENV/bin/python" -m pip download -q -d "$CACHE/wheels" $(field pinned) $(field present) >"$RUN/pip.log" 2>&1 \
    || fail "pip download of the image's packages failed (see $RUN/pip.log)"
  # shellcheck disable=SC2046
  "$VENV/bin/python" -m pip install -q --no-index --find-links "$CACHE/wheels" $(field pinned) $(field present) >>"$RUN/pip.log" 2>&1 \
    || fail "pip install of the image's packages failed (see $RUN/pip.log)"
  # what the image lacks goes, even where a package above pulled it in (transformers pulls pydantic)
  # shellcheck disable=SC2046
  "$VENV/bin/python" -m pip uninstall -q -y $(field lacks) >>"$RUN/pip.log" 2>&1
  touch "$VENV/.complete"
fi
# every run: what the image lacks, and whatever the install pulled in that the image does not hold, goes
extras=$("$VENV/bin/python" -I - "$IMAGE" <<'PY'
import re, sys
from importlib import metadata
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
fields = {l.split()[0]: l.split()[1:] for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")}
keep = {norm(n) for n in fields["image"]} | {"pip", "setuptools", "wheel"}
have = {norm(d.metadata["Name"]) for d in metadata.distributions()}
print(" ".join(sorted((have - keep) | (have & {norm(n) for n in fields["lacks"]}))))
PY
)
if [ -n "$extras" ]; then
  echo "rehearsal: removing what the image does not hold: $extras"
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip uninstall -q -y $extras >>"$RUN/pip.log" 2>&1
fi
for pkg in $(field lacks); do
  "$VENV/bin/python" -m pip show -q "$pkg" >/dev/null 2>&1 && fail "$pkg is installed in $VENV but the image lacks it: remove $VENV and rerun"
done
for spec in $(field pinned); do
  got=$("$VENV/bin/python" -m pip show "${spec%%==*}" 2>/dev/null | awk '/^Version:/ {print $2}')
  [ "${got%%+*}" = "${spec#*==}" ] || fail "${spec%%==*} is ${got:-missing} in $VENV, the image has ${spec#*==}"
done
echo "rehearsal: environment $VENV: $("$VENV/bin/python" --version), $(field pinned | tr ' ' '\n' | grep -E '^(torch|transformers)==' | tr '\n' ' ')(PyPI's CUDA build of torch, run on the CPU); without: $(field lacks)"

# -- the session, as the device would run it --------------------------------------------------------------
OUT=$RUN/out
rm -rf "$OUT" "$RUN/work" "$RUN/site"
mkdir -p "$OUT"
echo "rehearsal: gpu_session.sh (TINY=1, at most ${SESSION_S} s) in $RUN"
# one thread per process: the CPU is shared (CI, other jobs) and torch's thread pool thrashes on it
env -i HOME="$HOME" PATH="$VENV/bin:/usr/local/bin:/usr/bin:/bin" LANG=C.UTF-8 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TINY=1 OUT="$OUT" WORK="$RUN/work" \
  SITE="$RUN/site" WHEELS="$WHEELS" TOTAL_S="$SESSION_S" ${SHARD_SCRIPT:+SHARD_SCRIPT="$SHARD_SCRIPT"} ${CHECK:+CHECK="$CHECK"} \
  ${SHARDS+SHARDS="$SHARDS"} \
  timeout -k 10 $(( SESSION_S + 120 )) bash scripts/gpu_session.sh >"$RUN/session.log" 2>&1
rc=$?
tail -25 "$RUN/session.log"
"$VENV/bin/python" - "$OUT" "$RUN/session.log" "$rc" "$IMAGE" <<'PY' || fail "$(tail -1 "$RUN/check.txt" 2>/dev/null)"
import os, re, sys
from pathlib import Path

out, log, rc, image = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
limits = {l.split()[0]: int(l.split()[1]) for l in image.read_text().splitlines() if l.startswith("return_")}
problems = []
if rc != 0:
    problems.append(f"gpu_session.sh exited {rc}")
text = log.read_text(errors="replace")
for pattern in ("Traceback", "ModuleNotFoundError", "ImportError", "No module named", " failed: ", "SyntaxError"):
    for line in text.splitlines():
        if pattern in line:
            problems.append(f"the session's log has {pattern!r}: {line.strip()[:200]}")
            break
files = [p for p in out.rglob("*") if p.is_file() or p.is_symlink()]
if len(files) > limits["return_files"]:
    problems.append(f"{len(files)} files under OUT, the device tool returns at most {limits['return_files']}: "
                    + ", ".join(str(p.relative_to(out)) for p in files))
for p in out.rglob("*"):
    rel = p.relative_to(out)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", p.name):
        problems.append(f"{rel} has a name the device tool does not return (letters, digits, '.', '_', '-' only)")
    if p.is_symlink() or not (p.is_file() or p.is_dir()):
        problems.append(f"{rel} is not a plain file or folder")
    elif p.is_file():
        if len(rel.parts) - 1 > limits["return_depth"]:
            problems.append(f"{rel} is {len(rel.parts) - 1} folders down, more than {limits['return_depth']}")
        if p.stat().st_size > limits["return_file_mib"] << 20:
            problems.append(f"{rel} is {p.stat().st_size / 2**20:.1f} MiB, over {limits['return_file_mib']} MiB")
summary = out / "summary.txt"
if not summary.is_file():
    problems.append("no summary.txt came back")
else:
    s = summary.read_text()
    for line in s.splitlines():
        if line.startswith(("model ", "shard ")) and not line.rstrip().endswith(" ok"):
            problems.append(f"summary: {line.strip()}")
    if not re.search(r"^model \S+ ok$", s, re.M):
        problems.append("summary: no model was checked")
    # what the summary calls done is in the tarball: the check's table, each finished shard's windows
    tarball = out / "session.tar.gz"
    want = ["session.log"]
    if re.search(r"^model \S+ ok$", s, re.M):
        want.append("gpu_check/gpu_check.csv")
    want += [f"shard-{k}/windows.jsonl" for k in re.findall(r"^shard (\d+)/\d+ ok$", s, re.M)]
    if not tarball.is_file():
        problems.append("no session.tar.gz came back")
    else:
        import tarfile
        with tarfile.open(tarball) as t:
            names = set(t.getnames())
        problems += [f"session.tar.gz lacks {w}" for w in want if w not in names]
report = "\n".join(problems) or "ok"
Path(log.parent / "check.txt").write_text(report + "\n")
print("\n".join(f"rehearsal: problem: {p}" for p in problems))
sys.exit(1 if problems else 0)
PY
for n in "${notes[@]}"; do echo "rehearsal: $n"; done
echo "rehearsal: PASS: $(ls "$OUT" | wc -l) files came back ($(ls "$OUT" | tr '\n' ' ')); work folder $RUN"
