"""Work per inference phase from a model's geometry: parameters, FLOPs and bytes moved.

Notation (arXiv:2602.05695, as summarised in docs/model.md): ``B`` sequences, ``L`` layers, ``d`` hidden size, ``n_q``/``n_kv`` query
and key/value heads of dimension ``d_h``, ``N`` non-embedding parameters, ``V`` vocabulary,
``β`` bytes per element.

Prefill of ``i`` tokens:

.. math::

    F_\\mathrm{prefill} = B\\,(2 N i + 2 L n_q d_h i^2 + 2 d V)

(weight GEMMs, causal attention scores and values, the LM head of the last position).
Decode step at context ``c``:

.. math::

    F_\\mathrm{step} = B\\,(2N + 4 L n_q d_h c + 2 d V), \\qquad
    \\mathrm{bytes}_\\mathrm{step} = \\beta (N + d V) + 2 B L n_{kv} d_h \\beta (c + 1)

(weights once per step; the KV cache of every sequence read, one new position written).
Over ``o`` steps the context runs from ``i`` to ``i + o - 1``. Gemma-2-style sliding-window layers
attend to at most ``sliding_window`` positions; they are every other layer.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BYTES_PER_ELEMENT", "layer_params", "embedding_params", "param_count", "non_embedding_params",
           "cell_work", "kv_bytes_per_token"]

BYTES_PER_ELEMENT = {"bfloat16": 2, "float16": 2, "float32": 4, "fp8": 1}


def _arch(geom: dict) -> str:
    return str(geom.get("arch", "llama"))


def layer_params(geom: dict) -> int:
    """Parameters of one Transformer block (attention, FFN, norms, biases) [count]."""
    d, nq, nkv, dh, ffn = (int(geom[k]) for k in ("hidden_size", "num_heads", "num_kv_heads", "head_dim",
                                                   "intermediate_size"))
    arch = _arch(geom)
    attn = d * nq * dh + 2 * d * nkv * dh + nq * dh * d
    ffn_w = (3 if int(geom.get("ffn_gated", 1)) else 2) * d * ffn
    if arch == "opt":  # biases everywhere, LayerNorm with bias
        return attn + (nq * dh + 2 * nkv * dh + d) + ffn_w + ffn + d + 2 * 2 * d
    if arch == "falcon":  # parallel attention/MLP, one LayerNorm with bias, no linear biases
        return attn + ffn_w + 2 * d
    bias = nq * dh + 2 * nkv * dh if arch == "qwen2" else 0
    norms = 4 * d if arch == "gemma2" else 2 * d
    return attn + bias + ffn_w + norms


def embedding_params(geom: dict) -> int:
    """Token (and learned position) embeddings plus an untied LM head [count]."""
    d, V = int(geom["hidden_size"]), int(geom["vocab_size"])
    n = d * V * (1 if int(geom.get("tied_embeddings", 1)) else 2)
    if _arch(geom) == "opt":
        n += (int(geom.get("max_position_embeddings", 2048)) + 2) * d
    return n


def param_count(geom: dict) -> int:
    """Total parameters of a decoder-only model.

    Examples
    --------
    >>> from energykit.presets import PRESETS
    >>> param_count(PRESETS["llama3.2-1b"])
    1235814400
    """
    d = int(geom["hidden_size"])
    final_norm = 2 * d if _arch(geom) in ("opt", "falcon") else d
    return int(geom["num_layers"]) * layer_params(geom) + embedding_params(geom) + final_norm


def non_embedding_params(geom: dict) -> int:
    """``N``: parameters that every token multiplies through (all but embeddings and LM head)."""
    return int(geom["num_layers"]) * layer_params(geom)


def _attended(geom: dict, c):
    """Σ over layers of attended positions at context ``c`` (sliding-window layers capped)."""
    L = int(geom["num_layers"])
    w = geom.get("sliding_window")
    if not w:
        return L * np.asarray(c, dtype=float)
    local = L // 2
    return (L - local) * np.asarray(c, dtype=float) + local * np.minimum(c, w)


def cell_work(geom: dict, batch_size, input_len, output_len, dtype: str = "bfloat16") -> dict:
    """FLOPs and bytes of one request batch, per phase.

    Parameters
    ----------
    geom : dict
        Geometry (see :mod:`energykit.presets`).
    batch_size : int
        Sequences ``B``.
    input_len, output_len : array_like
        ``i`` and ``o`` [tokens]; arrays broadcast.
    dtype : str
        Element type of weights and KV cache (sets ``β``).

    Returns
    -------
    dict
        ``prefill_flops``, ``decode_flops`` [FLOP]; ``weight_bytes`` (weights read over all decode
        steps), ``kv_read_bytes``, ``kv_write_bytes`` [B]; ``decode_steps``.
    """
    B = float(batch_size)
    i = np.asarray(input_len, dtype=float)
    o = np.asarray(output_len, dtype=float)
    beta = BYTES_PER_ELEMENT[dtype]
    N = float(non_embedding_params(geom))
    d, V = float(geom["hidden_size"]), float(geom["vocab_size"])
    nq, nkv, dh = (float(geom[k]) for k in ("num_heads", "num_kv_heads", "head_dim"))
    w = geom.get("sliding_window")
    # causal prefill attention: Σ_t attended(t) ≈ i²/2 per layer (capped for sliding layers), QK and AV: 4·nq·dh each
    if w:
        L = int(geom["num_layers"])
        local = L // 2
        capped = np.where(i <= w, i * i / 2, w * w / 2 + (i - w) * w)
        pre_attn_pos = (L - local) * i * i / 2 + local * capped
    else:
        pre_attn_pos = float(geom["num_layers"]) * i * i / 2
    prefill = B * (2 * N * i + 4 * nq * dh * pre_attn_pos + 2 * d * V)
    # decode: Σ_{c=i}^{i+o-1} attended(c)
    if w:
        steps = [np.arange(ii, ii + oo) for ii, oo in zip(np.ravel(i).astype(int), np.ravel(o).astype(int))]
        sum_att = np.reshape([_attended(geom, s).sum() for s in steps], np.broadcast(i, o).shape)
    else:
        sum_att = float(geom["num_layers"]) * (o * i + o * (o - 1) / 2)
    decode = B * (2 * N * o + 4 * nq * dh * sum_att + 2 * d * V * o)
    weight_bytes = beta * (N + d * V) * o
    kv_read = B * 2 * nkv * dh * beta * sum_att
    kv_write = B * 2 * float(geom["num_layers"]) * nkv * dh * beta * (i + o)
    return {
        "prefill_flops": prefill,
        "decode_flops": decode,
        "weight_bytes": weight_bytes,
        "kv_read_bytes": kv_read,
        "kv_write_bytes": kv_write,
        "decode_steps": o,
    }


def kv_bytes_per_token(geom: dict, dtype: str = "bfloat16") -> int:
    """KV-cache bytes per token of context: ``2 L n_kv d_h β`` [B/token]."""
    return 2 * int(geom["num_layers"]) * int(geom["num_kv_heads"]) * int(geom["head_dim"]) * BYTES_PER_ELEMENT[dtype]
