"""The SweetSpot paper's published figures, in one place (data only).

Pizzini Cavagna et al., "Understanding Efficiency Sweet Spots in Production LLM Inference",
arXiv:2602.05695 (ICPE 2026): TensorRT-LLM on an H100 over 13 models of 1–9 B parameters. The report's
key results (:mod:`energykit.summary`) and its landing page (:mod:`energykit.report`) compare the kit's
numbers with these; nothing here is computed.

>>> f"{MAPE_PCT} % over {MODELS} models, best/worst up to {BEST_WORST}x on {GRID[0]}–{GRID[-1]}"
'1.79 % over 13 models, best/worst up to 33.41x on 64–4096'
"""

from __future__ import annotations

__all__ = ["ARXIV", "CITATION", "HARDWARE", "SETUP", "MODELS", "MAPE_PCT", "BEST_WORST", "GRID", "GQA_FINDING",
           "WORKLOAD_FINDING"]

ARXIV = "arXiv:2602.05695"
"""The paper's arXiv identifier."""
CITATION = f"Pizzini Cavagna et al., {ARXIV}"
"""How pages cite it."""
HARDWARE = "TensorRT-LLM, H100"
"""The engine and GPU its figures were measured with."""
SETUP = f"{HARDWARE}, 13 models of 1–9 B parameters"
"""Where its figures were measured, and on what."""
MODELS = 13
"""Models the paper measured."""
MAPE_PCT = 1.79
"""Mean MAPE of the analytical model over the paper's 13 models [%]."""
BEST_WORST = 33.41
"""The paper's largest best/worst efficiency ratio on its 64–4096 grid [-]."""
GRID = (64, 128, 256, 512, 1024, 2048, 4096)
"""Input and output lengths of the paper's grid [tokens]."""
GQA_FINDING = "GQA above MHA"
"""The paper's finding on attention kinds (grouped-query attention more efficient than multi-head)."""
WORKLOAD_FINDING = "“aligning lengths with the sweet spots can substantially reduce energy”; no production-trace figure"
"""What the paper says of production workloads (it publishes no trace-level figure)."""
