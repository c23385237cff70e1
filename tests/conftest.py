from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
COMPILED = DATA / "h200_transformers_compiled_b16.csv"
EAGER = DATA / "h200_transformers_eager_b16.csv"

TRUE_THETA = {"theta1": 3e-6, "theta2": 4e-4, "theta3": 0.05, "theta4": 2e-4, "theta5": 3.5, "theta0": 20.0}
GRID_I = (64, 256, 1024, 2048, 4096)
GRID_O = (16, 64, 256, 1024)

TINY = dict(name="tiny", arch="llama", num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, head_dim=8,
            intermediate_size=64, ffn_gated=1, vocab_size=128, tied_embeddings=1, max_position_embeddings=512)
"""A two-layer Llama geometry that sweeps on the CPU in seconds."""


def tiny_params(**over):
    """Measure params of a tiny CPU sweep (no meter, no warm-up), with ``over`` replacing keys."""
    p = dict(engine="hf", models=[TINY], dtype="float32", device="cpu", batch_sizes=[2], input_lens=[8, 16],
             output_lens=[2, 4], repeats=2, min_window_s=0.0, meter="none", warmup=0, idle_s=0, output="out")
    p.update(over)
    return p


def synthetic_frame(theta=TRUE_THETA, noise=0.01, repeats=3, seed=0, model="synthetic"):
    """Tidy windows simulated from the analytical model with multiplicative noise."""
    from energykit.fit import sweetspot_energy

    rng = np.random.default_rng(seed)
    rows = []
    for i in GRID_I:
        for o in GRID_O:
            e = sweetspot_energy(i, o, **theta)
            for r in range(repeats):
                rows.append(
                    dict(model=model, engine="sim", gpu="none", dtype="bf16", batch_size=16, input_len=i,
                         output_len=o, repeat=r, output_tokens=o, duration_s=0.01 * o + 1e-4 * i,
                         energy_j=e * (1 + noise * rng.standard_normal()))
                )
    return pd.DataFrame(rows)


@pytest.fixture
def synthetic_csv(tmp_path):
    path = tmp_path / "synthetic.csv"
    synthetic_frame().to_csv(path, index=False)
    return path
