"""The ``hf`` engine's own greedy decode loop: one prefill, then one captured decode step replayed.

What a call does (``decode: loop``, the default):

- **Prefill**: one forward over exactly ``i`` tokens per sequence, writing cache slots ``0..i-1``;
  only the last position's logits are computed; greedy argmax on the device.
- **Decode**: ``o − 1`` steps, each one forward of one token per sequence over the static cache.
  Everything a step changes lives in device tensors updated in place by the step itself: the write
  position, the block mask (which key/value blocks are read), the position ids, the next token. On
  CUDA the whole step (the model's one-token forward, argmax and state updates, not only flex
  attention) is compiled by Inductor, so elementwise work is fused, and captured once per (model,
  batch size) as a CUDA graph and replayed; on the CPU the same step runs uncompiled and uncaptured
  (Inductor's CPU code generation fails on flex attention), so tests see the same host interaction.
- **Prefill** is compiled the same way on CUDA, one variant per (batch size, input length), so that a
  short prefill is not launch-bound (an eager Gemma-2 prefill launches ~2,600 kernels).
- **One host synchronisation per call**, at its end: reading the final position, which also checks
  that every step ran.

Attention (``energykit_flex``, registered with transformers' ``AttentionInterface``) is PyTorch flex
attention over the static cache, compiled with the step on CUDA:

- Decode reads ⌈(position + 1) / 128⌉ key/value blocks, as a paged-KV production engine does, all
  listed as *partial* blocks (``kv_num_blocks = position // 128 + 1``, no full blocks): torch 2.11's
  flex decode kernel (``_inductor/kernel/flex/templates/flex_decode.py.jinja``) splits its work over
  ``SPLIT_KV`` programs by ``cdiv(KV_LEN, SPLIT_KV)`` — the static cache's length — whenever full
  blocks are given, but by ``cdiv(kv_num_blocks · 128, SPLIT_KV)`` when only partial blocks are, so
  only then does a step's work grow with the position and not with ``max_len``. The cache length is
  rounded up to a multiple of 128 (:func:`cache_len`), so no block is loaded unmasked past its end
  (the kernel's ``IS_DIVISIBLE``).
- **GQA is read as stored, for every head ratio.** The key/value handed to flex attention are the
  cache's own tensors, with their ``H_kv`` heads (never ``repeat_kv``). When the ratio
  ``g = H_q / H_kv`` is a power of two, flex attention gets ``enable_gqa=True``; its decode kernel
  loads each key/value block once for the ``g`` query heads that share it. Its decode kernel refuses
  other ratios (torch ``_inductor/kernel/flex/flex_decoding.py``: "Number of shared query heads
  sharing the same KV head must be power of 2"), which is why transformers' own integration
  (``integrations/flex_attention.py``) expands the cache with ``repeat_kv`` whenever the head count is
  not a power of two (Qwen2 12/2, Llama-3.2-3B 24/8). Here the ``g`` query heads of a group are folded
  into the query length instead: queries ``[B, H_q, L, D]`` become ``[B, H_kv, L·g, D]`` (row ``t·g + j``
  is head ``j`` of the group at token ``t``), and the mask gives every row its token's position
  (``row // g``). Each key/value head is then read once per step for all its query heads.
- The mask positions come from the loop's own position tensor, which advances only after the whole
  forward: the query offset never aliases the cache length as it is written (transformers' flex mask
  reads ``cumulative_length`` after the layer incremented it in place).

The cache (:class:`PositionedCache`) is transformers' :class:`~transformers.StaticLayer` storage,
written at the loop's position; "resetting" it sets that position to 0 — the keys and values are
never zeroed (stale slots are beyond the position, never read).
"""

from __future__ import annotations

import inspect
import warnings

from ..errors import EngineError

__all__ = ["ATTENTION_NAME", "BLOCK_SIZE", "cache_len", "folded", "register_attention", "PositionedCache",
           "DecodeLoop"]

ATTENTION_NAME = "energykit_flex"
BLOCK_SIZE = 128
"""Key/value block of the block masks [positions]."""

_ACTIVE: dict = {"mask": None, "flex": None}
"""The block mask and flex function of the forward in flight (set by :class:`DecodeLoop`)."""


def cache_len(max_len: int) -> int:
    """The static cache's length for requests of up to ``max_len`` tokens: a multiple of :data:`BLOCK_SIZE`.

    >>> cache_len(4352), cache_len(4353), cache_len(48)
    (4352, 4480, 128)
    """
    return -(-int(max_len) // BLOCK_SIZE) * BLOCK_SIZE


def folded(num_heads: int, num_kv_heads: int) -> bool:
    """Whether a head ratio is folded into the query length (not a power of two, so no ``enable_gqa``)."""
    g = num_heads // num_kv_heads
    return g > 1 and (g & (g - 1)) != 0


def energykit_flex_attention(module, query, key, value, attention_mask, scaling=None, softcap=None,
                             sliding_window=None, dropout=0.0, **kwargs):
    """transformers attention function: flex attention over the grouped cache, as stored.

    ``attention_mask`` is ignored (transformers builds none for this implementation); the loop's
    block mask is used. ``key``/``value`` are ``[B, H_kv, max_len, D]``, the cache itself.
    """
    mask, flex = _ACTIVE["mask"], _ACTIVE["flex"]
    if mask is None:
        raise EngineError(f"attention {ATTENTION_NAME!r} runs only inside the hf engine's decode loop")
    b, hq, q_len, d = query.shape
    hkv = key.shape[1]
    g = hq // hkv
    fold = folded(hq, hkv)
    if fold:
        query = query.reshape(b, hkv, g, q_len, d).transpose(2, 3).reshape(b, hkv, q_len * g, d)

    score_mod = _softcap_mod(softcap) if softcap is not None else None
    # a prefill (more than one token) runs flex attention's main kernel: below 128 query rows Inductor
    # would pick its decode kernel, whose tile BLOCK_M = next_pow2(q_len * g) must divide the mask's
    # 128-row query block; at q_len 64 with g = 4 (Llama-3.2-1B, Granite-3-2B) it is 256 and no kernel
    # config remains (torch _inductor/kernel/flex/flex_decoding.py, create_flex_decoding_kernel)
    options = dict(_PREFILL_KERNEL) if q_len > 1 else None
    out = flex(query, key, value, score_mod=score_mod, block_mask=mask, enable_gqa=g > 1 and not fold,
               scale=scaling, kernel_options=options)
    if fold:
        out = out.reshape(b, hkv, q_len, g, -1).transpose(2, 3).reshape(b, hq, q_len, -1)
    return out.transpose(1, 2).contiguous(), None


_PREFILL_KERNEL = {"FORCE_USE_FLEX_ATTENTION": True}
"""Flex attention kernel options of a prefill: its main (tiled) kernel, never the decode kernel."""

_SOFTCAPS: dict = {}


def _softcap_mod(cap: float):
    """Gemma-2's logit soft-capping as a flex ``score_mod``; one function per value, so that the
    compiled flex attention sees the same function at every call (no recompilation)."""
    if cap not in _SOFTCAPS:
        import torch

        def softcap(score, batch_idx, head_idx, q_idx, kv_idx):
            return cap * torch.tanh(score / cap)

        _SOFTCAPS[cap] = softcap
    return _SOFTCAPS[cap]


def register_attention() -> str:
    """Register :func:`energykit_flex_attention` with transformers; returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, energykit_flex_attention)
    return ATTENTION_NAME


def _layer_class():
    from transformers.cache_utils import StaticLayer

    class PositionedLayer(StaticLayer):
        """transformers' static layer written at the loop's position tensor (shared by every layer)."""

        def __init__(self, max_cache_len, position):
            super().__init__(max_cache_len=max_cache_len)
            self.position = position

        def update(self, key_states, value_states, *args, **kwargs):
            import torch

            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            where = self.position + torch.arange(key_states.shape[-2], device=self.device)
            self.keys.index_copy_(2, where, key_states)
            self.values.index_copy_(2, where, value_states)
            return self.keys, self.values

        def get_seq_length(self):
            # positions are always given to the model (position_ids); a tensor here would make models
            # that size tensors by it (OPT) synchronise with the host
            return 0

    return PositionedLayer


def PositionedCache(num_layers: int, max_len: int, position):
    """A transformers :class:`~transformers.Cache` of static layers written at ``position`` (a device tensor)."""
    from transformers import Cache

    layer = _layer_class()
    return Cache(layers=[layer(max_len, position) for _ in range(num_layers)])


class _Slot:
    """Everything of one batch size: cache, device state, decode mask, and the captured step."""

    def __init__(self, loop: "DecodeLoop", batch_size: int):
        torch = loop.torch
        dev, n_blocks = loop.device, loop.n_blocks
        self.batch_size = batch_size
        self.position = torch.zeros(1, dtype=torch.long, device=dev)
        self.cache = PositionedCache(loop.num_layers, loop.max_len, self.position)
        self.token = torch.zeros(batch_size, 1, dtype=torch.long, device=dev)
        self.position_ids = torch.zeros(batch_size, 1, dtype=torch.long, device=dev)
        self.generated = torch.zeros(batch_size, loop.max_len + 1, dtype=torch.long, device=dev)
        i32 = dict(dtype=torch.int32, device=dev)
        # partial blocks only (see the module docstring): blocks 0..position // 128, the mask applied to each
        self.kv_num_blocks = torch.ones(1, 1, 1, **i32)
        self.kv_indices = torch.arange(n_blocks, **i32).view(1, 1, 1, n_blocks)
        position, rows = self.position, loop.rows

        def visible(b, h, q_idx, kv_idx):
            return kv_idx <= position[0]

        from torch.nn.attention.flex_attention import BlockMask

        self.mask = BlockMask.from_kv_blocks(self.kv_num_blocks, self.kv_indices, None, None,
                                             BLOCK_SIZE=BLOCK_SIZE, mask_mod=visible,
                                             seq_lengths=(rows, loop.max_len), compute_q_blocks=False)
        self.graph = None


class DecodeLoop:
    """Greedy decoding of a transformers causal LM with the kit's loop (see the module docstring).

    Parameters
    ----------
    model : transformers PreTrainedModel
        Loaded with ``attn_implementation=`` :data:`ATTENTION_NAME`.
    max_len : int
        The longest request, input plus output [tokens]; the static cache holds :func:`cache_len` of it.
    capture : bool
        Compile the decode step and the prefill whole and capture the step as a CUDA graph (CUDA only).
    """

    def __init__(self, model, max_len: int, capture: bool):
        import torch

        self.torch = torch
        self.model = model
        self.max_len = cache_len(max_len)
        self.device = next(model.parameters()).device
        self.capture = bool(capture) and self.device.type == "cuda"
        cfg = model.config
        heads = cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        self.rows = heads // kv_heads if folded(heads, kv_heads) else 1
        self.num_layers = cfg.num_hidden_layers
        self.n_blocks = -(-self.max_len // BLOCK_SIZE)
        from torch.nn.attention.flex_attention import flex_attention

        self.flex = flex_attention  # inside the compiled step and prefill on CUDA (Inductor fuses it there)
        self._step_fn, self._prefill_fn = self._step_body, self._prefill_body
        if self.capture:
            self._step_fn = torch.compile(self._step_body, dynamic=False)
            self._prefill_fn = torch.compile(self._prefill_body, dynamic=False)
        elif self.device.type == "cuda":  # compile: false keeps flex attention fused, the rest eager
            self.flex = torch.compile(flex_attention, dynamic=False)
        if self.device.type == "cuda":
            # past dynamo's recompile limit the compiled function silently runs flex attention unfused
            # (the full score matrix): fail instead of measuring that (torch _dynamo/config.py)
            cfg = torch._dynamo.config
            for knob in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit"):
                if hasattr(cfg, knob):
                    setattr(cfg, knob, True)
                    break
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.keep_kw = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self._slots: dict[int, _Slot] = {}
        self._prefill_masks: dict[int, object] = {}

    # -- masks -----------------------------------------------------------------------------------
    def prefill_mask(self, input_len: int):
        """Causal block mask of a prefill of ``input_len`` tokens over the static cache (kept per length)."""
        if input_len not in self._prefill_masks:
            from torch.nn.attention.flex_attention import create_block_mask

            rows = self.rows

            def causal(b, h, q_idx, kv_idx):
                return kv_idx <= q_idx // rows

            self._prefill_masks[input_len] = create_block_mask(causal, None, None, input_len * rows, self.max_len,
                                                               device=self.device, BLOCK_SIZE=BLOCK_SIZE)
        return self._prefill_masks[input_len]

    # -- the loop --------------------------------------------------------------------------------
    def slot(self, batch_size: int) -> _Slot:
        if batch_size not in self._slots:
            self._slots[batch_size] = _Slot(self, batch_size)
        return self._slots[batch_size]

    def _run(self, fn, mask, *args):
        """Run ``fn`` (the step or the prefill, compiled or not) with ``mask`` as the attention's block mask."""
        _ACTIVE["mask"], _ACTIVE["flex"] = mask, self.flex
        try:
            with warnings.catch_warnings():
                if self.device.type == "cpu":  # unfused on purpose (tests); on CUDA the warning means a fallback
                    warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
                return fn(*args)
        finally:
            _ACTIVE["mask"] = None

    def _forward(self, slot: _Slot, ids, position_ids, keep=False):
        out = self.model(input_ids=ids, position_ids=position_ids, use_cache=True,
                         **{self.cache_kw: slot.cache}, **(self.keep_kw if keep else {}))
        return out.logits[:, -1]

    def _prefill_body(self, slot: _Slot, ids, positions) -> None:
        """The prefill's forward and its greedy token, on the device (compiled per (B, i) on CUDA)."""
        logits = self._forward(slot, ids, positions, keep=True)
        slot.token.copy_(logits.argmax(-1, keepdim=True))

    def _step_body(self, slot: _Slot) -> None:
        """One decode step, all on the device: mask, positions, forward, argmax, advance (compiled on CUDA)."""
        torch = self.torch
        block = torch.div(slot.position, BLOCK_SIZE, rounding_mode="floor").to(torch.int32)
        slot.kv_num_blocks.copy_((block + 1).view(1, 1, 1))
        slot.position_ids.copy_(slot.position.expand(slot.batch_size, 1))
        logits = self._forward(slot, slot.token, slot.position_ids)
        slot.token.copy_(logits.argmax(-1, keepdim=True))
        slot.generated.index_copy_(1, slot.position + 1, slot.token)
        slot.position.add_(1)

    def _step(self, slot: _Slot) -> None:
        """One decode step (compiled on CUDA, eager on the CPU), uncaptured."""
        self._run(self._step_fn, slot.mask, slot)

    def _init_cache(self, slot: _Slot) -> None:
        """Allocate the slot's cache before anything is compiled or captured (so no graph allocates it)."""
        layers = slot.cache.layers
        if all(layer.is_initialized for layer in layers):
            return
        cfg = self.model.config
        heads = cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        dtype = next(self.model.parameters()).dtype
        kv = self.torch.zeros(slot.batch_size, kv_heads, 1, head_dim, dtype=dtype, device=self.device)
        for layer in layers:
            if not layer.is_initialized:
                layer.lazy_initialization(kv, kv)

    def _capture(self, slot: _Slot) -> None:
        """Capture the decode step of this batch size (at position 0, before this call's prefill)."""
        torch = self.torch
        slot.position.zero_()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm up: compile flex attention's decode kernel outside the capture
                self._step(slot)
        torch.cuda.current_stream().wait_stream(stream)
        slot.position.zero_()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step(slot)  # the compiled step: Inductor's fused kernels, captured
        slot.graph = graph

    def generate(self, ids, output_len: int):
        """Greedy tokens ``[B, output_len]`` after prompts ``ids`` ``[B, i]`` (device tensor)."""
        torch = self.torch
        b, i = ids.shape
        if i + output_len > self.max_len:
            raise EngineError(f"request of {i}+{output_len} tokens exceeds the static cache of {self.max_len}")
        slot = self.slot(b)
        with torch.inference_mode():
            self._init_cache(slot)
            if self.capture and slot.graph is None and output_len > 1:
                self._capture(slot)
            slot.position.zero_()  # the cache's "reset": its length only
            positions = torch.arange(i, device=self.device).expand(b, i)
            self._run(self._prefill_fn, self.prefill_mask(i), slot, ids, positions)
            slot.generated[:, i:i + 1].copy_(slot.token)
            slot.position.fill_(i)
            for _ in range(output_len - 1):
                if slot.graph is not None:
                    slot.graph.replay()
                else:
                    self._step(slot)
            end = int(slot.position.item())  # the call's one host synchronisation
        if end != i + output_len - 1:
            raise EngineError(f"decode loop ended at position {end}, expected {i + output_len - 1}")
        return slot.generated[:, i:i + output_len]

    def replay_matches_eager(self, ids, output_len: int) -> bool:
        """Whether the captured step's replays give the tokens of the same step run uncaptured."""
        return self.first_mismatch(ids, output_len) is None

    def first_mismatch(self, ids, output_len: int) -> int | None:
        """The first decode step whose tokens differ between the captured step's replays and the same
        step run uncaptured, or None where all match (token 0 is the prefill's, so steps count from 1).

        A check of the CUDA graph (state read at stale addresses, work left out of the capture): the
        same compiled kernels in the same order, so the tokens should be identical. Trivially None
        where nothing is captured (the CPU, ``compile: false``).
        """
        captured = self.generate(ids, output_len).clone()
        slot = self.slot(ids.shape[0])
        graph, capture = slot.graph, self.capture
        slot.graph, self.capture = None, False
        try:
            eager = self.generate(ids, output_len)
        finally:
            slot.graph, self.capture = graph, capture
        differs = (captured != eager).any(0).nonzero().flatten().tolist()
        return differs[0] if differs else None

    def close(self) -> None:
        self._slots.clear()
        self._prefill_masks.clear()
