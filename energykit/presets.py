"""Model geometries: presets for the paper's families, a local ``config.json``, or an inline mapping.

A geometry uses the columns of the measured files (``data/README.md``): ``arch``,
``num_layers``, ``hidden_size``, ``num_heads``, ``num_kv_heads``, ``head_dim``,
``intermediate_size``, ``ffn_gated``, ``vocab_size``, ``tied_embeddings``, plus
``max_position_embeddings`` (the context) and, for Gemma-2, ``sliding_window``.
Energy depends on geometry, not on weight values, so random weights built from a geometry measure
the same energy as the released checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ParamsError
from .iotools import check_geometry, check_model_name, check_text, read_hf_config
from .schema import GEOMETRY_KEYS

__all__ = ["PRESETS", "ALIASES", "resolve"]



def _g(arch, L, d, nq, nkv, dh, ffn, gated, V, tied, ctx, **extra):
    return dict(arch=arch, num_layers=L, hidden_size=d, num_heads=nq, num_kv_heads=nkv, head_dim=dh,
                intermediate_size=ffn, ffn_gated=gated, vocab_size=V, tied_embeddings=tied,
                max_position_embeddings=ctx, **extra)


# Geometries from the models' published config.json files.
PRESETS: dict[str, dict] = {
    "llama3.2-1b": _g("llama", 16, 2048, 32, 8, 64, 8192, 1, 128256, 1, 131072),
    "llama3.2-3b": _g("llama", 28, 3072, 24, 8, 128, 8192, 1, 128256, 1, 131072),
    "llama3.1-8b": _g("llama", 32, 4096, 32, 8, 128, 14336, 1, 128256, 0, 131072),
    "qwen2-1.5b": _g("qwen2", 28, 1536, 12, 2, 128, 8960, 1, 151936, 1, 131072),
    "qwen2-7b": _g("qwen2", 28, 3584, 28, 4, 128, 18944, 1, 152064, 0, 131072),
    "gemma2-2b": _g("gemma2", 26, 2304, 8, 4, 256, 9216, 1, 256000, 1, 8192, sliding_window=4096),
    "gemma2-9b": _g("gemma2", 42, 3584, 16, 8, 256, 14336, 1, 256000, 1, 8192, sliding_window=4096),
    "opt-1.3b": _g("opt", 24, 2048, 32, 32, 64, 8192, 0, 50272, 1, 2048),
    "opt-2.7b": _g("opt", 32, 2560, 32, 32, 80, 10240, 0, 50272, 1, 2048),
    "opt-6.7b": _g("opt", 32, 4096, 32, 32, 128, 16384, 0, 50272, 1, 2048),
    "falcon-7b": _g("falcon", 32, 4544, 71, 1, 64, 18176, 0, 65024, 1, 2048),
    "granite3-2b": _g("granite", 40, 2048, 32, 8, 64, 8192, 1, 49155, 1, 4096),
    "granite3-8b": _g("granite", 40, 4096, 32, 8, 128, 12800, 1, 49155, 1, 4096),
}
ALIASES = {k + "-shape": k for k in PRESETS}  # names used in data/h200_transformers_*.csv


def resolve(spec) -> tuple[str, dict, str | None]:
    """(name, geometry, checkpoint_dir or None) from a preset name, a directory/config.json or a mapping."""
    if isinstance(spec, dict):
        spec = dict(spec)
        name = spec.pop("name", None)
        missing = [k for k in GEOMETRY_KEYS if k not in spec]
        if not name:
            raise ParamsError("an inline model needs a 'name'")
        if missing:
            raise ParamsError(f"inline model {name!r} lacks {', '.join(missing)}; give every geometry column")
        if not isinstance(name, str):
            raise ParamsError(f"an inline model's name must be text; got {name!r}")
        check_model_name(name)
        for k in GEOMETRY_KEYS[1:]:
            v = spec[k]
            lo = 0 if k in ("ffn_gated", "tied_embeddings") else 1
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ParamsError(f"inline model {name!r}: {k} must be an integer >= {lo}; got {v!r}")
        check_geometry(spec, f"inline model {name!r}")
        spec.setdefault("max_position_embeddings", 131072)
        return str(name), spec, None
    if not isinstance(spec, str):
        raise ParamsError(f"a model is a preset name, a path or a mapping; got {spec!r}")
    check_text(spec, "model")
    key = ALIASES.get(str(spec), str(spec))
    if key in PRESETS:
        return key, dict(PRESETS[key]), None
    path = Path(spec)
    cfg_path = path / "config.json" if path.is_dir() else path
    if cfg_path.name == "config.json" and cfg_path.exists():  # read_hf_config refuses a FIFO or a device
        geom, _ = read_hf_config(cfg_path)
        ckpt = str(path) if path.is_dir() and any(path.glob("*.safetensors")) else None
        name = path.resolve().name if path.is_dir() else cfg_path.resolve().parent.name
        return check_model_name(name, f"model folder name (of {spec})"), geom, ckpt
    raise ParamsError(
        f"unknown model {spec!r}; use a preset ({', '.join(PRESETS)}), a directory with config.json, or an inline mapping"
    )
