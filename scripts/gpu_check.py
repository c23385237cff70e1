"""Decode cost against context, per attention implementation (the engines issue's GPU check).

For each geometry and attention, at batch 16 and contexts 64, 1024 and 4096, two windows run the
same prompts length with a short and a long output; their difference removes the prefill, so
    ms/step = (t(o_long) − t(o_short)) / (o_long − o_short)   and likewise J/step.
What the bytes predict with context-proportional attention: the step-time rise from 64 to 4096 is
about 6x larger for OPT-1.3B (196 KB of KV per token) than for Llama-3.2-1B (32 KB); with sdpa over
a static cache it stays flat. Writes gpu_check.json/.csv under OUT and prints a table.
Each row is appended to gpu_check.csv as it is measured, so a run stopped early keeps what it did.
The static cache holds --max-len positions (default 4352, as params/measure_paper_families.yaml, so
that a sweep on the same machine reuses the compiled decode graphs).
Usage: python scripts/gpu_check.py OUT [--models llama3.2-1b opt-1.3b] [--attention sdpa flex_attention]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from energykit.engines import make_engine  # noqa: E402
from energykit.meters import make_meter  # noqa: E402
from energykit.physics import kv_bytes_per_token  # noqa: E402
from energykit.presets import resolve  # noqa: E402
from energykit.windows import measure  # noqa: E402

BATCH = 16
CONTEXTS = (64, 1024, 4096)
O_SHORT, O_LONG = 16, 80


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--models", nargs="+", default=["llama3.2-1b", "opt-1.3b"])
    ap.add_argument("--attention", nargs="+", default=["sdpa", "flex_attention"])
    ap.add_argument("--min-window-s", type=float, default=1.0)
    ap.add_argument("--max-len", type=int, default=4352)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    holder = {}
    meter = make_meter("nvml", sync=lambda: holder["e"].synchronize() if "e" in holder else None)
    rows = []
    for spec in a.models:
        name, geom, _ = resolve(spec)
        for attention in a.attention:
            t_load = time.time()
            eng = make_engine("hf", name=name, geometry=geom, dtype="bfloat16", device="cuda", compile=True,
                              attention=attention, max_len=max(a.max_len, max(CONTEXTS) + O_LONG))
            try:
                eng.load()
            except Exception as e:  # report and go on with the next combination
                print(f"{name} {attention}: load failed: {e}", flush=True)
                continue
            holder["e"] = eng
            warm = eng.request(BATCH, 512, O_LONG)
            warm.prepare(3)
            for _ in range(3):
                warm()
            print(f"{name} {attention}: loaded and warmed in {time.time() - t_load:.0f} s", flush=True)
            for c in CONTEXTS:
                w = {o: measure(meter, eng.request(BATCH, c, o), a.min_window_s) for o in (O_SHORT, O_LONG)}
                steps = O_LONG - O_SHORT
                row = dict(model=name, attention=attention, batch_size=BATCH, context=c,
                           ms_per_step=1e3 * (w[O_LONG].duration_s - w[O_SHORT].duration_s) / steps,
                           j_per_step=(w[O_LONG].energy_j - w[O_SHORT].energy_j) / steps,
                           kv_bytes_per_token=kv_bytes_per_token(geom, "bfloat16"),
                           windows_valid=all(x.reading.valid for x in w.values()))
                rows.append(row)
                print(json.dumps(row), flush=True)
                import pandas as pd

                pd.DataFrame(rows).to_csv(out / "gpu_check.csv", index=False)
            holder.pop("e")
            eng.close()
    meter_info = meter.info()
    meter.close()
    (out / "gpu_check.json").write_text(json.dumps({"meter": meter_info, "rows": rows}, indent=2, default=str))
    if rows:
        import pandas as pd

        df = pd.DataFrame(rows)
        print(df.pivot_table(index=["model", "attention"], columns="context", values="ms_per_step").round(2))
        rise = df.pivot_table(index=["model", "attention"], columns="context", values="ms_per_step")
        rise = (rise[max(CONTEXTS)] - rise[min(CONTEXTS)]).rename("rise_ms_64_to_4096")
        print(rise.round(2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
