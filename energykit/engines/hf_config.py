"""transformers configs for random weights of a geometry (shared by the ``hf`` and ``trtllm`` engines)."""

from __future__ import annotations

from ..errors import ParamsError

__all__ = ["ARCHITECTURES", "hf_config"]

ARCHITECTURES = {
    "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "gemma2": "Gemma2ForCausalLM",
    "granite": "GraniteForCausalLM", "opt": "OPTForCausalLM", "falcon": "FalconForCausalLM",
}
"""The transformers class (``config.json``'s ``architectures``) of each arch with a recipe."""


def hf_config(geom: dict, max_len: int | None = None):
    """A transformers config for random weights of this geometry (context at least ``max_len``).

    Its ``architectures`` names the model class, as a released ``config.json`` does.
    """
    cfg = _config(geom, max_len)
    cfg.architectures = [ARCHITECTURES.get(geom["arch"], "LlamaForCausalLM")]
    return cfg


def _config(geom: dict, max_len: int | None):
    import transformers as tf

    ctx = max(geom.get("max_position_embeddings", 2048), max_len or 0)
    common = dict(vocab_size=geom["vocab_size"], hidden_size=geom["hidden_size"],
                  num_hidden_layers=geom["num_layers"], num_attention_heads=geom["num_heads"],
                  tie_word_embeddings=bool(geom["tied_embeddings"]), max_position_embeddings=ctx)
    arch = geom["arch"]
    if arch == "opt":
        return tf.OPTConfig(ffn_dim=geom["intermediate_size"], word_embed_proj_dim=geom["hidden_size"],
                            enable_bias=True, **common)
    if arch == "falcon":
        return tf.FalconConfig(multi_query=geom["num_kv_heads"] == 1, num_kv_heads=geom["num_kv_heads"],
                               new_decoder_architecture=geom["num_kv_heads"] not in (1, geom["num_heads"]),
                               parallel_attn=True, bias=False, **common)
    gqa = dict(num_key_value_heads=geom["num_kv_heads"], intermediate_size=geom["intermediate_size"],
               head_dim=geom["head_dim"])
    if arch == "qwen2":
        return tf.Qwen2Config(**gqa, **common)
    if arch == "gemma2":
        return tf.Gemma2Config(sliding_window=geom.get("sliding_window", 4096), **gqa, **common)
    if arch == "granite":
        return tf.GraniteConfig(**gqa, **common)
    if arch == "llama" or geom.get("ffn_gated", 1):
        return tf.LlamaConfig(**gqa, **common)
    raise ParamsError(f"no random-weight recipe for arch {arch!r}; use llama, qwen2, gemma2, granite, opt or falcon")
