"""Decode at the bytes floor: the decode-loop issue's GPU check, one CSV row per model.

For each model (random weights, bf16, the hf engine's decode loop, batch 16):

- ``prep_cold_s``: load plus compile (the whole decode step, prefill per prompt length, the CUDA
  graph) with an empty compile cache; first model only (the others reuse kernels the first compiled);
- ``prep_warm_s``: the same preparation again in a fresh process that reuses the compile cache
  (``compile_cache``), as a rerun or an array task on the same GPU type would; first model only;
- ``ms_step_C`` / ``j_step_C`` at contexts C = 64, 1024, 4096: two windows of the same prompt length
  with a short and a long output; their difference removes the prefill, so
  ms/step = (t(o_long) − t(o_short)) / (o_long − o_short), and likewise J/step;
- ``floor_ms_C``: the bytes floor of one step, (weight bytes + live KV bytes at the steps' mean
  context) ÷ the device's copy bandwidth, measured in the same run (``copy_gb_s``: bytes read plus
  bytes written per second by a large device-to-device copy);
- ``ratio_C`` = ms_step_C / floor_ms_C;
- ``step_ratio_1024_4096`` = ms_step_1024 / ms_step_4096, beside ``floor_ratio_1024_4096`` (the same of
  the floor): a step time flat in the context (ratio near 1 where the floor's is well below) means the
  kernel's work follows the static cache, not the live context;
- ``replay_matches_eager`` and ``replay_first_mismatch``: the captured decode step's tokens against
  those of the same step run uncaptured (one extra call at the first context; a check of the CUDA
  graph, not of the figures), and the first decode step whose tokens differ (empty when none);
- ``spread_pct``: (max − min) / mean of J per call over 5 windows at one cell (context 1024, o_long).

Models run the riskiest first (Gemma-2: head_dim 256, soft-capping), and a time budget
(``--budget-s``) stops starting a model when what is left cannot finish it (the estimate: the
slowest model measured so far, else 130 s for the first and 100 s for each next on a GPU).
``summary.txt`` has one line per model: ``model NAME ok``, ``model NAME failed: ...`` or
``model NAME not checked: budget: ...``.

Rows are appended to ``gpu_check.csv`` under OUT as they are measured, so a run stopped early keeps
what it did; ``gpu_check.json`` adds the meter's provenance.

``--tiny`` runs the same code on the CPU with tiny geometries of the same families, meter none and
short lengths: a smoke test that the script runs before GPU time is spent (its figures mean nothing).

Usage: python scripts/gpu_check.py OUT [--models gemma2-2b qwen2-1.5b ...] [--tiny] [--budget-s S]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from energykit.engines import make_engine  # noqa: E402
from energykit.engines.hf import use_compile_cache  # noqa: E402
from energykit.meters import make_meter  # noqa: E402
from energykit.physics import kv_bytes_per_token  # noqa: E402
from energykit.presets import resolve  # noqa: E402
from energykit.windows import measure  # noqa: E402

MODELS = ["gemma2-2b", "qwen2-1.5b", "llama3.2-1b", "granite3-2b", "opt-1.3b"]  # the riskiest first
GPU = dict(batch=16, contexts=(64, 1024, 4096), o_short=16, o_long=80, max_len=4352, dtype="bfloat16",
           device="cuda", meter="nvml", min_window_s=1.0, copy_bytes=2 << 30, first_s=130.0, next_s=100.0)
TINY = dict(batch=2, contexts=(8, 24, 40), o_short=2, o_long=6, max_len=48, dtype="float32", device="cpu",
            meter="none", min_window_s=0.05, copy_bytes=64 << 20, first_s=60.0, next_s=20.0)
SPREAD_WINDOWS = 5


def tiny_geometry(name: str) -> tuple[str, dict]:
    """A tiny geometry of a preset's family and head ratio (for the CPU smoke test)."""
    _, g, _ = resolve(name)
    ratio = g["num_heads"] // g["num_kv_heads"]
    heads, kv = (2 * ratio, 2) if ratio > 1 else (4, 4)
    geom = dict(g, num_layers=2, hidden_size=16 * heads, num_heads=heads, num_kv_heads=kv, head_dim=16,
                intermediate_size=64, vocab_size=256, max_position_embeddings=512)
    if "sliding_window" in geom:
        geom["sliding_window"] = 16
    return f"tiny-{name}", geom


def copy_bandwidth_b_s(torch, device, n_bytes: int) -> float:
    """Bytes read plus bytes written per second by a device-to-device copy of ``n_bytes`` (best of 5)."""
    src = torch.empty(n_bytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    best = float("inf")
    for _ in range(6):
        sync()
        t0 = time.perf_counter()
        dst.copy_(src)
        sync()
        best = min(best, time.perf_counter() - t0)
    del src, dst
    return 2 * n_bytes / best


def prepare(name, geom, cfg, compile_cache) -> tuple[object, float]:
    """Load the model and compile what the check runs: a call per context (o = 2) at the batch."""
    t0 = time.perf_counter()
    eng = make_engine("hf", name=name, geometry=geom, dtype=cfg["dtype"], device=cfg["device"], compile=True,
                      max_len=cfg["max_len"], decode="loop", compile_cache=compile_cache)
    eng.load()
    for c in cfg["contexts"]:
        req = eng.request(cfg["batch"], c, 2)
        req.prepare(1)
        req()
    eng.synchronize()
    return eng, time.perf_counter() - t0


def replay_first_mismatch(eng, cfg) -> int | None:
    """The captured decode step against the same step uncaptured, at the first context (one extra call):
    the first decode step whose tokens differ, or None."""
    req = eng.request(cfg["batch"], cfg["contexts"][0], cfg["o_short"])
    req.prepare(1)
    return eng._loop.first_mismatch(req._ready.popleft(), cfg["o_short"])


def prep_only(a, cfg) -> int:
    """The warm preparation, in its own process: prints {"prep_s": ...}."""
    name, geom = tiny_geometry(a.prep_only) if a.tiny else resolve(a.prep_only)[:2]
    eng, prep_s = prepare(name, geom, cfg, a.compile_cache)
    eng.close()
    print(json.dumps({"prep_s": prep_s}), flush=True)
    return 0


def warm_prep_s(a, spec: str, cache: str) -> float:
    cmd = [sys.executable, __file__, a.out, "--prep-only", spec, "--compile-cache", cache] + (["--tiny"] if a.tiny else [])
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            return float(json.loads(line)["prep_s"])
    print(f"{spec}: warm preparation failed: {(p.stderr.strip().splitlines() or ['?'])[-1][:300]}", flush=True)
    return float("nan")


def check_model(spec, a, cfg, meter, holder, bandwidth_b_s, cache, first: bool) -> dict:
    import torch

    name, geom = tiny_geometry(spec) if a.tiny else resolve(spec)[:2]
    eng, prep_cold_s = prepare(name, geom, cfg, cache)
    holder["e"] = eng
    mismatch = replay_first_mismatch(eng, cfg)
    row = dict(model=name, batch_size=cfg["batch"], prep_cold_s=round(prep_cold_s, 2) if first else None,
               replay_matches_eager=mismatch is None, replay_first_mismatch=mismatch)
    weights = sum(p.numel() * p.element_size() for p in eng.model.parameters())
    kv_token = kv_bytes_per_token(geom, cfg["dtype"])
    row.update(weights_gb=round(weights / 1e9, 3), kv_bytes_per_token=kv_token,
               copy_gb_s=round(bandwidth_b_s / 1e9, 1))
    steps = cfg["o_long"] - cfg["o_short"]
    valid = True
    for c in cfg["contexts"]:
        w = {o: measure(meter, eng.request(cfg["batch"], c, o), cfg["min_window_s"]) for o in (cfg["o_short"], cfg["o_long"])}
        valid &= all(x.reading.valid for x in w.values())
        ms = 1e3 * (w[cfg["o_long"]].duration_s - w[cfg["o_short"]].duration_s) / steps
        j = (w[cfg["o_long"]].energy_j - w[cfg["o_short"]].energy_j) / steps
        mean_context = c + (cfg["o_short"] + cfg["o_long"]) / 2
        floor_ms = 1e3 * (weights + cfg["batch"] * mean_context * kv_token) / bandwidth_b_s
        row.update({f"ms_step_{c}": round(ms, 4), f"j_step_{c}": round(j, 5), f"floor_ms_{c}": round(floor_ms, 4),
                    f"ratio_{c}": round(ms / floor_ms, 3)})
    if {1024, 4096} <= set(cfg["contexts"]):
        row.update(step_ratio_1024_4096=round(row["ms_step_1024"] / row["ms_step_4096"], 3),
                   floor_ratio_1024_4096=round(row["floor_ms_1024"] / row["floor_ms_4096"], 3))
    c_spread = cfg["contexts"][len(cfg["contexts"]) // 2]
    req = eng.request(cfg["batch"], c_spread, cfg["o_long"])
    first = measure(meter, req, cfg["min_window_s"])
    per_call = [first] + [measure(meter, req, cfg["min_window_s"], pilot_s=first.pilot_s)
                          for _ in range(SPREAD_WINDOWS - 1)]
    values = [x.energy_j if meter.measures_energy else x.duration_s for x in per_call]
    mean = sum(values) / len(values)
    row.update(spread_cell=f"{c_spread}x{cfg['o_long']}", spread_of="J/call" if meter.measures_energy else "s/call",
               spread_pct=round(100 * (max(values) - min(values)) / mean, 3),
               windows_valid=bool(valid and all(x.reading.valid for x in per_call)))
    row["decode"] = eng.versions().get("decode")
    row["compiled"] = eng.versions().get("compiled")
    holder.pop("e")
    eng.close()
    if cfg["device"] == "cuda":
        torch.cuda.empty_cache()
    return row


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny geometries, meter none")
    ap.add_argument("--min-window-s", type=float)
    ap.add_argument("--compile-cache", default="", help="emptied first (cold); default: a new folder under /tmp")
    ap.add_argument("--budget-s", type=float, default=float("inf"),
                    help="stop starting a model when what is left of this cannot finish it")
    ap.add_argument("--prep-only", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    cfg = dict(TINY if a.tiny else GPU)
    if a.min_window_s:
        cfg["min_window_s"] = a.min_window_s
    if a.prep_only:
        use_compile_cache(a.compile_cache)
        return prep_only(a, cfg)
    started = time.monotonic()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # never under OUT: thousands of small files the device tool would not return
    cache = a.compile_cache or tempfile.mkdtemp(prefix="energykit-compile-cache-")
    shutil.rmtree(cache, ignore_errors=True)  # cold: nothing compiled before this run
    use_compile_cache(cache)
    summary = out / "summary.txt"
    summary.write_text("")

    def say(line: str) -> None:
        print(line, flush=True)
        with summary.open("a") as f:
            f.write(line + "\n")

    import pandas as pd
    import torch

    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU: run on a GPU machine, or use --tiny for the CPU smoke test", file=sys.stderr)
        return 2
    holder = {}
    meter = make_meter(cfg["meter"], sync=lambda: holder["e"].synchronize() if "e" in holder else None)
    idle_w = meter.idle_power_w(2.0) if meter.measures_energy else float("nan")
    bandwidth = copy_bandwidth_b_s(torch, cfg["device"], cfg["copy_bytes"])
    gpu = torch.cuda.get_device_name(0) if cfg["device"] == "cuda" else "cpu"
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} {gpu}: copy {bandwidth / 1e9:.0f} GB/s, "
          f"idle {idle_w:.1f} W", flush=True)
    rows, took = [], []
    for n, spec in enumerate(a.models):
        left = a.budget_s - (time.monotonic() - started)
        need = max(took[1:], default=cfg["next_s"]) if n else cfg["first_s"]
        if left < need:
            for rest in a.models[n:]:
                say(f"model {rest} not checked: budget: {left:.0f} s left of {a.budget_s:.0f} s, a model needs ~{need:.0f} s")
            break
        t0 = time.monotonic()
        try:
            row = check_model(spec, a, cfg, meter, holder, bandwidth, cache, first=not n)
        except Exception as e:  # report and go on with the next model
            holder.pop("e", None)
            say(f"model {spec} failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}")
            continue
        row.update(gpu=gpu, date=time.strftime("%Y-%m-%d", time.gmtime()))
        # cold and warm preparation of the first model only (the others reuse what it compiled): the warm
        # one right after its windows (the child runs alone: this process waits), so that a run cut
        # short by its time limit still has complete rows
        row["prep_warm_s"] = round(warm_prep_s(a, spec, cache), 2) if not n else None
        took.append(time.monotonic() - t0)
        problems = [] if row["replay_matches_eager"] else [f"replay differs from eager from step {row['replay_first_mismatch']}"]
        say(f"model {spec} ok" if not problems else f"model {spec} checked, but {'; '.join(problems)}")
        rows.append(row)
        print(json.dumps(row), flush=True)
        pd.DataFrame(rows).to_csv(out / "gpu_check.csv", index=False)
        # the provenance with every row, too: a run killed at its time limit keeps it
        (out / "gpu_check.json").write_text(json.dumps({"meter": meter.info(), "idle_power_w": idle_w,
                                                        "copy_b_s": bandwidth, "config": cfg, "rows": rows},
                                                       indent=2, default=str))
    meter.close()
    if rows:
        df = pd.DataFrame(rows).set_index("model")
        cols = [c for c in df.columns if c.startswith(("prep_", "ms_step_", "ratio_", "step_ratio", "replay_first",
                                                       "spread_pct"))]
        print(df[cols].to_string())
    return 0 if len(rows) == len(a.models) else 1


if __name__ == "__main__":
    raise SystemExit(main())
