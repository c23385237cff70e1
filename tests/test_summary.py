"""The key-results boxes say what the numbers say (issue #19): provenance, mean vs max, the cells of a
best/worst ratio, GQA vs MHA by efficiency first, one sign for savings."""

import re

import pandas as pd
import pytest

import energykit.fit as ekfit
from energykit import dataset, hardware, summary, sweetspots, workloads

from conftest import ROOT

MAIN = "data/h200_hf_energykit/measurements.nc"
PILOT = "data/h100_paper_families_pilot/measurements.nc"


@pytest.fixture(scope="module")
def main():
    ds = dataset.load_many([MAIN])
    return ds, ekfit.fit_dataset(ds)


def test_every_box_names_the_file_loaded_gpu_engine_attention_dtype_batch_and_weights(main):
    ds, fits = main
    line = summary.dataset_line(ds)
    for word in (f"`{MAIN}`", "NVIDIA H200", "compiled", "attention", "sdpa", "bfloat16", "batch 16", "weights random"):
        assert word in line, word
    assert "runs/h200_hf/windows.jsonl" not in line  # where it was measured, not the file loaded
    pilot = summary.dataset_line(dataset.load_many([PILOT]))
    assert "attention flex_attention" in pilot and "H100" in pilot
    lomo = hardware.leave_one_model_out(ds)
    fit = fits.get("llama3.2-1b")
    trace = pd.read_csv(ROOT / "data" / "azure_llm_inference_trace_2023_code.csv").rename(
        columns={"ContextTokens": "input_len", "GeneratedTokens": "output_len"})[["input_len", "output_len"]].head(500)
    pol = workloads.policies_from_params([1024], [128])
    text, _ = summary.workload_results(fit, {"code": workloads.trace_summary(fit, trace)},
                                       {"code": workloads.policy_savings(fit, trace, pol)}, ds)
    assert line in text
    assert line in summary.planning_results(lomo, ds)[0]


def test_planning_box_names_the_mean_and_the_max_error(main):
    ds, _ = main
    lomo = hardware.leave_one_model_out(ds)
    text, numbers = summary.planning_results(lomo, ds)
    assert f"mean of up to **{lomo['mape_pct'].max():.0f} %**" in text
    assert f"worst cell" in text and f"**{lomo['max_ape_pct'].max():.0f} %**" in text
    assert numbers["lomo_max_cell_ape_pct"] == pytest.approx(lomo["max_ape_pct"].max())


def test_best_worst_names_its_cells_and_how_each_is_known(main):
    ds, fits = main
    ratios = sweetspots.ratio_table(ds, fits)
    for r in ratios.itertuples():
        for cell in (r.paper_grid_best_cell, r.paper_grid_worst_cell):
            assert re.fullmatch(r"i=\d+, o=\d+ \((measured|extrapolated|fitted, inside the measured range)\)", cell)
    text, _ = summary.sweetspot_results(ds, fits)
    assert "worst cell" in text and "cells extrapolated" in text
    assert "outside the paper's grid (16)" in text  # the measured ratio includes o = 16


def test_gqa_vs_mha_reads_efficiency_at_matched_cells_first():
    ds = dataset.load_many([PILOT])
    text = summary._attention_verdict(ds, ekfit.fit_dataset(ds))
    # the pilot's chart shows MHA ahead (3.24 vs 3.11 tokens/J): the words must say so, whatever θ2 does
    assert "GQA (llama3.2-1b) is **below** MHA (opt-1.3b) in efficiency" in text
    assert "unlike the paper" in text
    assert text.index("efficiency") < text.index("θ2")
    assert "vocabulary 128256" in text and "24 layers" in text


def test_probe_models_of_different_engines_are_not_compared():
    ds = dataset.load_many(["data/h200_transformers_compiled_b16.csv", "data/h200_transformers_eager_b16.csv"])
    text = summary._attention_verdict(ds, ekfit.fit_dataset(ds))
    assert "llama3.2-1b-shape," not in text and "(llama3.2-1b-shape)" not in text  # the compiled one stays out
    assert "llama3.2-1b-shape [transformers-5.17-eager]" in text


def test_paper_findings_give_each_verdict_its_reason():
    """The landing table's rows: reproduced inside the interval, differs with the engine's reason, not yet where the
    data cannot say (extrapolated cells, no GQA/MHA pair, a page not rendered), kit only for the workload."""
    from energykit.engines import HFEngine
    from energykit.summary import paper_findings

    fit = {"mape_pct": 6.1, "cv_mape_pct": 12.4, "mape_min_pct": 4.3, "mape_max_pct": 7.9, "repeat_spread_pct": 5.5,
           "source": "pilot.nc · attention flex_attention"}
    sweet = {"best_worst": 30.0, "best_worst_low": 25.0, "best_worst_high": 40.0, "best_worst_model": "m",
             "best_worst_extrapolated_cells": 0, "paper_grid_cells": 49, "source": "x.nc · attention flex_attention",
             "gqa_vs_mha": {"verdict": "above", "gmean": {"g": 4.0, "h": 3.0}, "kinds": {"g": "GQA", "h": "MHA"},
                            "cells": 9}}
    work = {"code": {"best_policy": "cap", "per_token_saving_pct": 5.0, "per_token_saving_pct_low": 4.0,
                     "per_token_saving_pct_high": 6.0, "saving_pct": 9.0, "extrapolated_pct": 12.0}, "source": "traces"}
    rows = {r["finding"]: r for r in paper_findings({"02_fit": fit, "03_sweetspots": sweet, "04_workloads": work})}
    mape, ratio, gqa, saving = rows.values()
    assert mape["verdict"] == "differs" and "repeats spread 5.5 %" in mape["why"]
    assert ratio["verdict"] == "reproduced" and ratio["kit"] == "30.0x [25.0, 40.0]"
    assert gqa["verdict"] == "reproduced" and "g (GQA) 4.00" in gqa["kit"]
    assert saving["verdict"] == "kit only" and "+5.0 % per token [+4.0, +6.0]" in saving["kit"]
    sdpa = dict(sweet, best_worst=2.6, best_worst_low=2.6, best_worst_high=2.7, best_worst_extrapolated_cells=14,
                source="x.nc · attention sdpa", gqa_vs_mha={"verdict": "below", "gmean": {}, "kinds": {}},
                paper_difference=HFEngine.paper_difference("hf transformers-5.17.0 compiled sdpa"))
    rows = paper_findings({"03_sweetspots": sdpa})
    assert [r["verdict"] for r in rows] == ["not yet", "differs", "differs", "not yet"]
    assert "sdpa attends over the whole static cache" in rows[1]["why"] and "14 of 49" in rows[1]["why"]
    flex = dict(sdpa, source="x.nc · attention flex_attention", gqa_vs_mha={"verdict": ""},
                paper_difference=HFEngine.paper_difference("hf transformers-5.17.0 compiled flex_attention"))
    rows = paper_findings({"03_sweetspots": flex})
    assert rows[1]["verdict"] == "not yet" and rows[2]["verdict"] == "not yet"
    assert "02_fit was not rendered" in rows[0]["why"] and "04_workloads was not rendered" in rows[3]["why"]
