"""energykit: find the energy-efficiency sweet spots of LLM inference.

Measure the energy of LLM requests as a function of input and output length, fit the
SweetSpot analytical model (Pizzini Cavagna et al., arXiv:2602.05695), locate the sweet spots
and estimate what a production workload would save by moving toward them.

Heavy and optional dependencies (torch, transformers, tensorrt_llm, pynvml) are imported lazily.
"""

__version__ = "0.1.0"
