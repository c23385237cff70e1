"""The reader of a Hugging Face ``config.json``, as a geometry."""

from __future__ import annotations

import json
from pathlib import Path


from ..errors import DataError, ParamsError
from .checks import _as_int, check_geometry, check_regular_file

__all__ = ["read_hf_config", "geometry_from_hf_config"]

def read_hf_config(path: str | Path) -> tuple[dict, dict]:
    """A Hugging Face ``config.json`` as a geometry, and metadata (``source``, ``model_type``)."""
    path = Path(path)
    try:
        check_regular_file(path, "a config.json", 16 << 20)
    except DataError as e:
        raise ParamsError(str(e)) from None

    def no_constant(name):
        raise ParamsError(f"{path}: holds {name}, which is not a number of layers, heads or sizes; copy the model's "
                          "config.json again")

    try:
        cfg = json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ParamsError(f"{path}: not valid JSON ({getattr(e, 'msg', type(e).__name__)}); fix the file or use a "
                          "preset") from None
    if not isinstance(cfg, dict):
        raise ParamsError(f"{path}: expected a JSON object of model settings; fix the file or use a preset")
    return geometry_from_hf_config(cfg), {"source": str(path), "model_type": cfg.get("model_type", "unknown")}


def _need(cfg: dict, key: str):
    if key not in cfg:
        raise ParamsError(f"config.json lacks {key}; give a model's full config")
    return cfg[key]


def geometry_from_hf_config(cfg: dict) -> dict:
    """Geometry (:data:`energykit.schema.GEOMETRY_KEYS`) from a Hugging Face ``config.json`` mapping."""
    arch = cfg.get("model_type", "unknown")
    if not isinstance(arch, str):
        raise ParamsError(f"config.json: model_type must be a string; got {arch!r}")
    d = cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model")
    nq = cfg.get("num_attention_heads") or cfg.get("n_head")
    L = cfg.get("num_hidden_layers") or cfg.get("n_layer")
    if not (d and nq and L):
        raise ParamsError("config.json lacks hidden_size / num_attention_heads / num_hidden_layers; give a model's config")
    check_geometry({"hidden_size": d, "num_heads": nq, "num_layers": L}, f"config.json of {arch!r}")
    if arch == "falcon":
        nkv = 1 if cfg.get("multi_query", True) and not cfg.get("new_decoder_architecture") else cfg.get("num_kv_heads", nq)
    else:
        nkv = cfg.get("num_key_value_heads")
        nkv = nq if nkv is None else nkv  # as transformers: absent means one KV head per query head
    ffn = cfg.get("intermediate_size") or cfg.get("ffn_dim") or cfg.get("ffn_hidden_size") or 4 * d
    geom = dict(
        arch=arch, num_layers=L, hidden_size=d, num_heads=nq, num_kv_heads=nkv,
        head_dim=cfg.get("head_dim") or d // nq, intermediate_size=ffn,
        ffn_gated=0 if arch in ("opt", "falcon", "gpt2", "gpt_neox") else 1,
        vocab_size=_need(cfg, "vocab_size"), tied_embeddings=int(cfg.get("tie_word_embeddings", True)),
        max_position_embeddings=cfg.get("max_position_embeddings", 2048),
    )
    if cfg.get("sliding_window") and arch.startswith("gemma"):
        geom["sliding_window"] = cfg["sliding_window"]
    for k in ("max_position_embeddings", "sliding_window"):
        if k in geom and (_as_int(geom[k]) is None or not 1 <= _as_int(geom[k]) <= 1 << 32):
            raise ParamsError(f"config.json of {arch!r}: {k} must be a positive integer of tokens; got {geom[k]!r} — "
                              "copy it from the model's config.json")
    return check_geometry(geom, f"config.json of {arch!r}")
