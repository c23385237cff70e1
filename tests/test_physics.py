import numpy as np
import pandas as pd
import pytest

from energykit import physics
from energykit.presets import PRESETS

from conftest import COMPILED, EAGER


def test_published_parameter_counts():
    assert physics.param_count(PRESETS["llama3.2-1b"]) == 1_235_814_400
    assert physics.param_count(PRESETS["opt-1.3b"]) == 1_315_758_080
    assert physics.param_count(PRESETS["qwen2-1.5b"]) == 1_543_714_304


def test_counts_match_the_measured_files_geometry_columns():
    for path in (COMPILED, EAGER):
        df = pd.read_csv(path).drop_duplicates("model")
        for _, row in df.iterrows():
            geom = row.to_dict()
            if geom["arch"] == "opt":
                geom["max_position_embeddings"] = 8192  # the probe extended OPT's learned positions
            assert physics.param_count(geom) == row["params"], row["model"]


def test_flops_hand_computed_tiny():
    g = dict(arch="llama", num_layers=2, hidden_size=8, num_heads=2, num_kv_heads=1, head_dim=4,
             intermediate_size=16, ffn_gated=1, vocab_size=10, tied_embeddings=1)
    # per layer: q 8·8, k,v 8·4 each, o 8·8, mlp 3·8·16, norms 2·8
    per_layer = 64 + 32 + 32 + 64 + 384 + 16
    assert physics.layer_params(g) == per_layer
    N = 2 * per_layer
    w = physics.cell_work(g, batch_size=3, input_len=5, output_len=2)
    assert w["prefill_flops"] == pytest.approx(3 * (2 * N * 5 + 4 * 2 * 4 * (2 * 25 / 2) + 2 * 8 * 10))
    # decode contexts 5 and 6: Σc = 11
    assert w["decode_flops"] == pytest.approx(3 * (2 * N * 2 + 4 * 2 * 4 * 2 * 11 + 2 * 8 * 10 * 2))
    assert w["kv_read_bytes"] == pytest.approx(3 * 2 * 1 * 4 * 2 * 2 * 11)
    assert w["weight_bytes"] == pytest.approx(2 * (N + 80) * 2)


def test_sum_of_contexts_closed_form_equals_brute_force():
    g = dict(PRESETS["llama3.2-1b"])
    for i, o in [(64, 16), (1000, 333), (4096, 1024)]:
        w = physics.cell_work(g, 1, i, o)
        brute = sum(range(i, i + o))
        assert w["kv_read_bytes"] == pytest.approx(2 * 16 * 8 * 64 * 2 * brute)


def test_gqa_reads_less_kv_than_mha_and_sliding_window_caps():
    assert physics.kv_bytes_per_token(PRESETS["llama3.2-1b"]) * 6 == physics.kv_bytes_per_token(PRESETS["opt-1.3b"])
    g = dict(PRESETS["gemma2-2b"])
    full = dict(g)
    full.pop("sliding_window")
    short = physics.cell_work(g, 1, 1000, 10)["kv_read_bytes"]
    assert short == pytest.approx(physics.cell_work(full, 1, 1000, 10)["kv_read_bytes"])  # below the window
    long_sw = physics.cell_work(g, 1, 8000, 10)["kv_read_bytes"]
    assert long_sw < physics.cell_work(full, 1, 8000, 10)["kv_read_bytes"]


def test_arrays_broadcast():
    w = physics.cell_work(PRESETS["qwen2-1.5b"], 16, np.array([64, 128]), np.array([16, 32]))
    assert w["decode_flops"].shape == (2,)
