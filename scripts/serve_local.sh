#!/usr/bin/env bash
# A real OpenAI-compatible server for the serve engine's tests: `transformers serve` (PyPI: transformers[serving])
# serving a tiny random-weight Llama written here (scripts/tiny_model.py; no model hub), on the CPU.
#
#   bash scripts/serve_local.sh install      # pip-install the server's extra into the venv (pip caches the wheels)
#   bash scripts/serve_local.sh start [PORT] # write the model, start the server, wait until it answers
#   bash scripts/serve_local.sh stop
#
# Where it cannot run, it prints one "serve-local: skip: ..." line and exits 3.
# Env: PYTHON (default .venv/bin/python), SERVE_LOCAL_DIR (default /tmp/energykit-serve).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DIR=${SERVE_LOCAL_DIR:-/tmp/energykit-serve}
PORT=${2:-8471}
skip() { echo "serve-local: skip: $*"; exit 3; }

installed() { "$PY" -c "from transformers.utils.import_utils import is_serve_available as f; import sys; sys.exit(0 if f() else 1)" 2>/dev/null; }

case "${1:-}" in
  install)
    [ -x "$PY" ] || skip "no python at $PY"
    "$PY" -c "import transformers, torch" 2>/dev/null || skip "transformers and torch are not installed in $PY (make setup)"
    installed && exit 0
    ver=$("$PY" -c "import transformers; print(transformers.__version__)")
    "$PY" -m pip install -q "transformers[serving]==$ver" >"$DIR.pip.log" 2>&1 \
      || skip "pip install transformers[serving]==$ver failed (see $DIR.pip.log)"
    installed || skip "transformers[serving] installed but transformers.is_serve_available() is false"
    ;;
  start)
    installed || skip "transformers serve is not installed (bash scripts/serve_local.sh install)"
    mkdir -p "$DIR"
    [ -f "$DIR/model/config.json" ] || "$PY" scripts/tiny_model.py "$DIR/model" >"$DIR/model.log" 2>&1 \
      || skip "could not write the tiny model (see $DIR/model.log)"
    if [ -f "$DIR/server.pid" ] && kill -0 "$(cat "$DIR/server.pid")" 2>/dev/null; then
      echo "serve-local: already running (pid $(cat "$DIR/server.pid"), port $(cat "$DIR/server.port"))"; exit 0
    fi
    bin="$(dirname "$PY")/transformers"
    nohup "$bin" serve "$DIR/model" --port "$PORT" --host 127.0.0.1 --device cpu --dtype float32 \
      >"$DIR/server.log" 2>&1 &
    echo $! >"$DIR/server.pid"; echo "$PORT" >"$DIR/server.port"
    for _ in $(seq 120); do
      if "$PY" -c "import httpx,sys; sys.exit(0 if httpx.get('http://127.0.0.1:$PORT/health').status_code==200 else 1)" 2>/dev/null; then
        echo "serve-local: transformers serve on http://127.0.0.1:$PORT (pid $(cat "$DIR/server.pid")), model $DIR/model"
        exit 0
      fi
      kill -0 "$(cat "$DIR/server.pid")" 2>/dev/null || skip "the server exited (see $DIR/server.log)"
      sleep 1
    done
    skip "the server did not answer in 120 s (see $DIR/server.log)"
    ;;
  stop)
    if [ -f "$DIR/server.pid" ]; then
      pid=$(cat "$DIR/server.pid")
      kill "$pid" 2>/dev/null
      for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done  # its port is free again
      rm -f "$DIR/server.pid"
    fi
    ;;
  *) echo "usage: $0 install|start [PORT]|stop"; exit 2 ;;
esac
