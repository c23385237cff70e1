"""The hf engine's decode loop on the CPU (the same loop as on CUDA, without graph capture).

Written against transformers 5.24 (``cache_utils.StaticLayer``, ``integrations/flex_attention.py``)
and torch 2.13 (``nn/attention/flex_attention.py``; ``_inductor/kernel/flex/flex_decoding.py`` refuses
a non-power-of-two GQA ratio, which the loop folds into the query length).
"""

import pytest

from energykit.engines import make_engine
from energykit.engines import hf_decode
from energykit.errors import EngineError
from energykit.presets import PRESETS

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")


def tiny(arch, heads=4, kv_heads=2, **extra):
    """A tiny geometry of a family; weights are drawn wide so that greedy tokens differ step to step."""
    g = dict(arch=arch, num_layers=2, hidden_size=16 * heads, num_heads=heads, num_kv_heads=kv_heads, head_dim=16,
             intermediate_size=128, ffn_gated=0 if arch == "opt" else 1, vocab_size=128, tied_embeddings=1,
             max_position_embeddings=512)
    if arch == "gemma2":
        g["sliding_window"] = 16  # shorter than the requests below: generate() would slide, the loop never does
    g.update(extra)
    return g


WIDTH = 1.0
"""Std of the weights x sqrt(fan-in)."""


def engine(geom, max_len=96, **kw):
    eng = make_engine("hf", name=geom["arch"], geometry=geom, dtype="float32", device="cpu", max_len=max_len, **kw)
    eng.load()
    with torch.no_grad():  # wide weights: distinct greedy tokens (the default init gives one repeated token)
        for p in eng.model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, (0.3 if geom["arch"] == "gemma2" else WIDTH) / p.shape[-1] ** 0.5)
    return eng


def family_geometries():
    """One tiny geometry per family of the presets, with each preset's head ratio (12/2, 24/8, ...)."""
    seen = {}
    for name, g in PRESETS.items():
        if g["arch"] == "falcon":
            continue
        ratio = g["num_heads"] // g["num_kv_heads"]
        key = (g["arch"], ratio)
        if key not in seen:
            seen[key] = pytest.param(tiny(g["arch"], heads=2 * ratio if ratio > 1 else 4,
                                          kv_heads=2 if ratio > 1 else 4), id=f"{name}-ratio{ratio}")
    return list(seen.values())


@pytest.mark.parametrize("geom", family_geometries())
def test_loop_generates_the_tokens_of_transformers_generate(geom):
    eng = engine(geom)
    ids = torch.randint(0, geom["vocab_size"], (2, 21), generator=torch.Generator().manual_seed(3))
    req = eng.request(2, 21, 12)
    req._ready.append(ids)
    assert req().output_tokens == 12
    ours = eng.last_tokens.clone()
    eng.model.set_attn_implementation("eager")  # transformers' reference attention and generate()
    ref = eng.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, min_new_tokens=12,
                             do_sample=False, pad_token_id=0, eos_token_id=None)[:, 21:]
    assert ref.unique().numel() >= 2  # a real sequence, not one token repeated (Gemma-2's softcaps flatten most)
    assert torch.equal(ours, ref)


def test_loop_repeats_calls_on_one_cache_and_matches_itself():
    eng = engine(tiny("llama"))
    ids = torch.randint(0, 128, (3, 30), generator=torch.Generator().manual_seed(1))
    outs = []
    for i, o in ((30, 9), (5, 3), (30, 9)):  # a short call between two equal ones: stale slots must not matter
        req = eng.request(3, i, o)
        req._ready.append(ids[:, :i])
        req()
        outs.append(eng.last_tokens.clone())
    assert list(eng._loop._slots) == [3]
    assert torch.equal(outs[0], outs[2])


def _attention_calls(monkeypatch, eng):
    """(query, key, value, enable_gqa, cache key tensors) of every flex attention call of the loop."""
    seen = []
    real = eng._loop.flex

    def spy(q, k, v, **kw):
        seen.append((q.shape, k, v, kw["enable_gqa"]))
        return real(q, k, v, **kw)

    monkeypatch.setattr(eng._loop, "flex", spy)
    return seen


@pytest.mark.parametrize("heads, kv_heads, folded", [(12, 2, True), (24, 8, True), (8, 2, False)])
def test_gqa_reads_the_cache_as_stored_without_an_expanded_copy(monkeypatch, heads, kv_heads, folded):
    eng = engine(tiny("qwen2", heads, kv_heads))
    seen = _attention_calls(monkeypatch, eng)
    from transformers.integrations import flex_attention as integration
    monkeypatch.setattr(integration, "repeat_kv", lambda *a: pytest.fail("repeat_kv called"))
    req = eng.request(2, 40, 4)
    req.prepare(1)
    req()
    slot = eng._loop._slots[2]
    stored = {layer.keys.data_ptr() for layer in slot.cache.layers} | {l.values.data_ptr() for l in slot.cache.layers}
    assert len(seen) == 2 * 4  # 2 layers x (prefill + 3 decode steps)
    g = heads // kv_heads
    for n, (q_shape, k, v, gqa) in enumerate(seen):
        assert k.shape[1] == v.shape[1] == kv_heads  # grouped heads, as stored
        assert k.data_ptr() in stored and v.data_ptr() in stored  # the cache itself, not a copy
        assert gqa is (not folded)
        q_len = 40 if n < 2 else 1
        assert tuple(q_shape) == ((2, kv_heads, q_len * g, 16) if folded else (2, heads, q_len, 16))
    assert hf_decode.folded(heads, kv_heads) is folded


def test_a_later_cache_slot_does_not_change_earlier_logits():
    """Causality: the decode mask's position never runs ahead of the slot being written."""
    eng = engine(tiny("llama"))
    loop = eng._loop
    ids = torch.randint(0, 128, (2, 20), generator=torch.Generator().manual_seed(5))

    def step_logits(poison):
        slot = loop.slot(2)
        with torch.inference_mode():
            slot.position.zero_()
            loop._init_cache(slot)
            loop._run(loop._forward, loop.prefill_mask(20), slot, ids, torch.arange(20).expand(2, 20), True)
            if poison:
                for layer in slot.cache.layers:  # every slot after the one the step writes (20)
                    layer.keys[:, :, 21:] = 1e4
                    layer.values[:, :, 21:] = 1e4
            slot.position.fill_(20)
            slot.token.fill_(7)
            slot.position_ids.fill_(20)
            slot.kv_num_blocks.fill_(20 // hf_decode.BLOCK_SIZE + 1)
            return loop._run(loop._forward, slot.mask, slot, slot.token, slot.position_ids).clone()

    assert torch.allclose(step_logits(False), step_logits(True), atol=0, rtol=0)
    # and within the prefill: changing a later token leaves the earlier positions' logits alone
    slot = loop.slot(2)

    def prefill_logits(x):
        with torch.inference_mode():
            slot.position.zero_()
            _ACTIVE_prefill = loop.prefill_mask(20)
            hf_decode._ACTIVE.update(mask=_ACTIVE_prefill, flex=loop.flex)
            try:
                out = eng.model(input_ids=x, position_ids=torch.arange(20).expand(2, 20), use_cache=True,
                                **{loop.cache_kw: slot.cache}).logits
            finally:
                hf_decode._ACTIVE["mask"] = None
        return out[:, :15].clone()

    later = ids.clone()
    later[:, 15:] = (later[:, 15:] + 1) % 128
    assert torch.equal(prefill_logits(ids), prefill_logits(later))


def test_gemma2_never_rolls_its_window(monkeypatch):
    eng = engine(tiny("gemma2", 8, 4))
    assert "sliding_window" in eng.versions()["deviations"]
    assert eng.model.config.sliding_window >= eng.max_len
    monkeypatch.setattr(torch.Tensor, "roll", lambda *a, **k: pytest.fail("the cache rolled a window"))
    monkeypatch.setattr(torch, "roll", lambda *a, **k: pytest.fail("the cache rolled a window"))
    req = eng.request(2, 30, 20)  # 50 positions > the geometry's 16-slot window
    req.prepare(1)
    assert req().output_tokens == 20


def test_reset_sets_the_length_only(monkeypatch):
    eng = engine(tiny("llama"))
    req = eng.request(2, 10, 3)
    req.prepare(2)
    req()
    zeroed = []
    monkeypatch.setattr(torch.Tensor, "zero_", lambda self: zeroed.append(tuple(self.shape)) or self.fill_(0))
    req()
    assert zeroed == [(1,)]  # the position tensor; never a [B, H, max_len, D] key/value tensor


def test_falcon_is_refused_in_one_line_naming_sdpa():
    with pytest.raises(EngineError, match="falcon.*sdpa.*decode: generate"):
        make_engine("hf", name="f", geometry=tiny("falcon", 4, 1), dtype="float32", device="cpu")


def test_loop_and_generate_are_recorded():
    assert engine(tiny("llama")).versions()["decode"] == "loop"
    eng = engine(tiny("llama"), decode="generate")
    assert eng.versions()["decode"] == "generate" and eng._loop is None
    with pytest.raises(EngineError, match="needs decode: generate"):
        make_engine("hf", name="x", geometry=tiny("llama"), attention="sdpa", decode="loop")


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_in_tiny_mode(tmp_path):
    """The GPU check's smoke test: same code, tiny geometry, meter none (figures mean nothing)."""
    import csv
    import subprocess
    import sys

    from conftest import ROOT

    p = subprocess.run([sys.executable, "scripts/gpu_check.py", str(tmp_path), "--tiny", "--models", "qwen2-1.5b"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "gpu_check.csv").open()))
    assert len(rows) == 1 and rows[0]["model"] == "tiny-qwen2-1.5b" and rows[0]["decode"] == "loop"
    for key in ("prep_cold_s", "prep_warm_s", "ms_step_40", "floor_ms_40", "ratio_40", "spread_pct", "copy_gb_s"):
        assert rows[0][key] not in ("", "nan"), key
    assert rows[0]["replay_matches_eager"] == "True" and rows[0]["replay_first_mismatch"] == ""
    assert (tmp_path / "summary.txt").read_text() == "model qwen2-1.5b ok\n"
    # the compile cache's many files never land where the device tool returns files from
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.csv", "gpu_check.json", "summary.txt"]


@pytest.mark.parametrize("arch, heads, kv_heads", [("llama", 4, 2), ("qwen2", 12, 2), ("opt", 4, 4), ("gemma2", 8, 4)])
def test_one_host_synchronisation_per_call(monkeypatch, arch, heads, kv_heads):
    """Nothing in prefill or the decode steps reads a device value on the host; the call's end does, once.

    On CUDA each of these reads (``item``, ``bool``, ``int``, ``float``, ``tolist``) waits for the GPU; in a
    captured step it would fail the capture. Reads inside torch's flex attention are left out: the CPU
    runs its unfused reference (traced by dynamo with automatic dynamic floats: once two models with
    different scales ran, it reads ``scale`` from a tensor),
    where CUDA runs it compiled with ``dynamic=False`` (floats specialised).
    """
    import traceback

    eng = engine(tiny(arch, heads, kv_heads))
    req = eng.request(2, 20, 6)
    req.prepare(2)
    req()  # first call: masks are built (outside the window, in a sweep's pilot)
    reads = []
    for name in ("item", "__bool__", "__int__", "__float__", "tolist"):
        real = getattr(torch.Tensor, name)

        def spy(self, *a, _real=real, _name=name, **k):
            if not any("nn/attention/flex_attention.py" in f.filename for f in traceback.extract_stack()):
                reads.append(_name)
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    req()
    assert reads == ["item"]


def _inductor_decode_kernel_fits(q_len, hq, hkv, enable_gqa, kernel_options, sparse_q_block=hf_decode.BLOCK_SIZE):
    """Whether Inductor can compile this flex attention call on CUDA, as far as its kernel choice goes.

    From torch 2.13 ``_inductor/kernel/flex/flex_decoding.py`` (same rule in the main branch):
    ``_use_flex_decoding`` picks the decode kernel for fewer than 128 query rows (static batch and heads,
    power-of-two ratio) unless ``FORCE_USE_FLEX_ATTENTION``; ``create_flex_decoding_kernel`` then sets
    ``BLOCK_M = max(next_power_of_2(q_len * g), 16)`` and drops every config whose
    ``SPARSE_Q_BLOCK_SIZE % BLOCK_M != 0`` (no choice left: the compile fails).
    """
    g = hq // hkv if enable_gqa else 1
    if (kernel_options or {}).get("FORCE_USE_FLEX_ATTENTION") or q_len >= 128 or g & (g - 1):
        return True  # the main kernel: BLOCK_M from the tuning table, which divides 128
    block_m = max(1 << (q_len * g - 1).bit_length(), 16)
    return sparse_q_block % block_m == 0


@pytest.mark.parametrize("heads, kv_heads", [(8, 2), (16, 2), (12, 2), (4, 4)])
def test_every_flex_call_has_a_cuda_kernel(monkeypatch, heads, kv_heads):
    """A prefill shorter than 128 tokens with 4 query heads per KV head (Llama-3.2-1B and Granite-3-2B at
    context 64) would get the decode kernel with BLOCK_M 256 > the mask's 128-row block: no kernel."""
    eng = engine(tiny("llama", heads, kv_heads))
    calls = []
    real = eng._loop.flex

    def spy(q, k, v, **kw):
        calls.append((q.shape[-2], q.shape[1], k.shape[1], kw["enable_gqa"], kw.get("kernel_options")))
        return real(q, k, v, **kw)

    monkeypatch.setattr(eng._loop, "flex", spy)
    req = eng.request(2, 64, 3)
    req.prepare(1)
    req()
    assert len(calls) == 2 * 3
    for q_len, hq, hkv, gqa, options in calls:
        assert _inductor_decode_kernel_fits(q_len, hq, hkv, gqa, options), (q_len, hq, hkv, gqa, options)
    assert calls[-1][-1] is None  # decode steps keep the decode kernel (one tile of query rows)


def test_dynamo_can_fail_on_its_recompile_limit():
    """On CUDA the loop sets this knob: past the limit dynamo would run flex attention unfused, silently."""
    cfg = torch._dynamo.config
    assert any(hasattr(cfg, k) for k in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit"))


def test_the_captured_step_reads_the_same_tensors_every_call():
    """A CUDA graph replays the addresses it captured: the step must update its state in place, never
    rebind it, and the block mask must hold the loop's own tensors (``BlockMask.from_kv_blocks`` stores
    them as given, torch ``nn/attention/flex_attention.py``), or replays would read stale positions."""
    eng = engine(tiny("llama", 8, 2))
    loop = eng._loop

    def addresses(slot):
        cache = [t.data_ptr() for layer in slot.cache.layers for t in (layer.keys, layer.values)]
        own = [getattr(slot, n).data_ptr() for n in ("position", "token", "position_ids", "generated", "kv_indices",
                                                     "kv_num_blocks")]
        return own + cache

    req = eng.request(2, 30, 5)
    req.prepare(1)
    req()
    slot = loop._slots[2]
    before = addresses(slot)
    assert slot.mask.kv_indices is slot.kv_indices and slot.mask.kv_num_blocks is slot.kv_num_blocks
    assert slot.mask.full_kv_num_blocks is None and slot.mask.full_kv_indices is None  # partial blocks only
    for i, o in ((7, 9), (50, 3)):
        req = eng.request(2, i, o)
        req.prepare(1)
        req()
        assert loop._slots[2] is slot and addresses(slot) == before


def test_replay_check_tells_a_bad_replay_from_a_good_one():
    """``replay_matches_eager`` (run by gpu_check on CUDA) with stand-in graphs: one replaying the real step,
    one whose replay also corrupts the next token (what reading stale state would do)."""
    eng = engine(tiny("llama", 8, 2))
    loop = eng._loop
    ids = torch.randint(0, 128, (2, 20), generator=torch.Generator().manual_seed(7))
    slot = loop.slot(2)

    class Graph:
        def __init__(self, corrupt):
            self.corrupt = corrupt

        def replay(self):
            loop._step(slot)
            if self.corrupt:
                slot.token.add_(1).remainder_(128)

    for corrupt in (False, True):
        slot.graph = graph = Graph(corrupt)
        assert loop.replay_matches_eager(ids, 6) is (not corrupt)
        assert slot.graph is graph and loop.capture is False  # restored (the CPU never captures)
        # the first step whose tokens differ is named (token 0 is the prefill's): the stand-in corrupts the
        # token after the first replay recorded it, so the second replay's token is the first that differs
        assert loop.first_mismatch(ids, 6) == (2 if corrupt else None)


def test_decode_mask_lists_live_blocks_only_and_the_cache_is_a_multiple_of_128():
    """torch 2.11's flex decode kernel (``_inductor/kernel/flex/templates/flex_decode.py.jinja``) splits
    the key/value length over its programs by ``cdiv(KV_LEN, SPLIT_KV)`` (the static cache) when full
    blocks are given, and by the listed blocks only when all are partial: the step lists
    ``position // 128 + 1`` partial blocks and no full ones. A cache length that is not a multiple of
    128 would load its last block unmasked (``IS_DIVISIBLE``): it is rounded up."""
    eng = engine(tiny("llama", 8, 2), max_len=300)
    loop = eng._loop
    assert loop.max_len == hf_decode.cache_len(300) == 384 and loop.n_blocks == 3
    for i, o, blocks in ((100, 3, 1), (200, 3, 2), (126, 4, 2), (290, 10, 3)):
        req = eng.request(2, i, o)
        req.prepare(1)
        req()
        slot = loop._slots[2]
        last_position = i + o - 2  # the last step's query position
        assert int(slot.kv_num_blocks.flatten()[0]) == last_position // 128 + 1 == blocks
        assert slot.mask.full_kv_num_blocks is None
        assert slot.cache.layers[0].keys.shape[2] == 384
    assert eng.versions()["kv_cache"].startswith("static 384 positions")


@pytest.mark.slow
@pytest.mark.parametrize("arch, heads, kv_heads", [("llama", 4, 2), ("qwen2", 12, 2), ("opt", 4, 4), ("gemma2", 8, 4)])
def test_the_whole_step_and_prefill_trace_as_one_graph(arch, heads, kv_heads):
    """On CUDA the decode step and the prefill are compiled whole (Inductor) and the step captured: a
    graph break would split the compiled step (and launch its pieces eagerly). Dynamo traces them here
    with ``fullgraph=True`` (backend ``eager``: the CPU cannot run Inductor's flex kernels), and the
    traced loop gives the tokens of the untraced one."""
    eng = engine(tiny(arch, heads, kv_heads))
    loop = eng._loop
    ids = torch.randint(0, 128, (2, 21), generator=torch.Generator().manual_seed(3))
    ref = loop.generate(ids, 8).clone()
    loop._step_fn = torch.compile(loop._step_body, backend="eager", fullgraph=True, dynamic=False)
    loop._prefill_fn = torch.compile(loop._prefill_body, backend="eager", fullgraph=True, dynamic=False)
    try:
        assert torch.equal(loop.generate(ids, 8), ref)
    finally:
        torch._dynamo.reset()
