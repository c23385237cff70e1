"""Decode attention of the hf engine follows the context, not the static cache (on the CPU).

The default attention (flex attention with a block mask over the static cache) must hand each
decode step a mask whose non-empty key/value blocks number ⌈(context + 1) / 128⌉, with the grouped
key/value heads as they are; ``sdpa`` is handed a mask over every preallocated position.
"""

import math

import pytest

from energykit.engines import make_engine
from energykit.engines.hf import BLOCK_SIZE

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

GQA = dict(arch="llama", num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16,
           intermediate_size=128, ffn_gated=1, vocab_size=128, tied_embeddings=1, max_position_embeddings=1024)
CACHE = 1024


def _decode_masks(monkeypatch, attention, input_len):
    """(key shape, mask) handed to the attention function at each decode step of one request."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    eng = make_engine("hf", name="gqa", geometry=GQA, dtype="float32", device="cpu", max_len=CACHE, attention=attention,
                      decode="generate")  # transformers' attention path (the kit's loop: tests/test_decode.py)
    eng.load()
    seen = []
    real = ALL_ATTENTION_FUNCTIONS[attention]

    def spy(module, query, key, value, attention_mask, **kw):
        if query.shape[2] == 1:  # one new token: a decode step
            seen.append((tuple(key.shape), attention_mask))
        return real(module, query, key, value, attention_mask, **kw)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, attention, spy)
    req = eng.request(2, input_len, 3)
    req.prepare(1)
    req()
    eng.close()
    return seen


def _blocks_read(block_mask) -> int:
    """Key/value blocks flex attention visits for the (single) query block: partial plus full."""
    n = block_mask.kv_num_blocks.flatten()[0].item()
    if block_mask.full_kv_num_blocks is not None:
        n += block_mask.full_kv_num_blocks.flatten()[0].item()
    return int(n)


@pytest.mark.parametrize("input_len", [100, 700])
def test_flex_decode_reads_context_blocks_not_the_cache(monkeypatch, input_len):
    seen = _decode_masks(monkeypatch, "flex_attention", input_len)
    assert len(seen) == 2 * GQA["num_layers"]  # 2 decode steps after the prefill token, 2 layers
    for step, (key_shape, mask) in enumerate(seen):
        context = input_len + 1 + step // GQA["num_layers"]  # positions written before this step, plus itself
        assert mask.BLOCK_SIZE[1] == BLOCK_SIZE
        assert _blocks_read(mask) == math.ceil(context / BLOCK_SIZE) < CACHE // BLOCK_SIZE
        assert key_shape[1] == GQA["num_kv_heads"]  # grouped KV heads as stored, not expanded


def test_flex_blocks_grow_with_context(monkeypatch):
    short = _blocks_read(_decode_masks(monkeypatch, "flex_attention", 100)[0][1])
    long = _blocks_read(_decode_masks(monkeypatch, "flex_attention", 700)[0][1])
    assert (short, long) == (1, 6)


def test_sdpa_decode_spans_the_whole_static_cache(monkeypatch):
    for input_len in (100, 700):
        seen = _decode_masks(monkeypatch, "sdpa", input_len)
        assert seen and all(mask is not None and mask.shape[-1] == CACHE for _, mask in seen)


def test_flex_keeps_a_compiled_variant_per_shape_of_the_sweep():
    """transformers compiles flex attention per shape (dynamic=False) even with ``compile: false``;
    past dynamo's limit it silently runs unfused (full score matrix). Seen on an H100, 2026-11-26,
    in the paper-families sweep's second model. Every prompt length, plus the decode step, of every
    model must fit under the limit."""
    import torch._dynamo

    from energykit.params import load_measure_params

    p = load_measure_params("params/measure_paper_families.yaml")
    variants = len(p.resolved) * (len({i for i, _ in p.grid}) + 1)
    with torch._dynamo.config.patch(recompile_limit=8):  # dynamo's default; restored on exit
        eng = make_engine("hf", name="gqa", geometry=GQA, dtype="float32", device="cpu", max_len=CACHE,
                          attention="flex_attention", compile=False)
        eng.load()
        eng.close()
        assert torch._dynamo.config.recompile_limit >= variants > 8
