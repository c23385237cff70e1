"""transformers/PyTorch engine: random weights from a geometry or a local checkpoint.

On a GPU it runs in bf16 with one static KV cache, allocated once for the sweep's longest request
and reset between calls, and lets transformers compile the decode step (CUDA graphs); ``compile:
false`` gives eager decoding. It also runs on the CPU, for tests.

Attention (``attention``, recorded in provenance):

- ``flex_attention`` (default): PyTorch flex attention over the static cache with a block mask.
  Key/value blocks (128 positions) that lie wholly beyond the current context are skipped, so each
  decode step reads ⌈context/128⌉ blocks of the cache, not the whole preallocated cache, and the
  grouped key/value heads of GQA/MQA are read as they are (no copy). This is what paged-KV
  production engines (TensorRT-LLM, vLLM) do, and what the SweetSpot model's i·o and o² terms assume.
- ``sdpa``: transformers' SDPA path. With a static cache it attends over every preallocated
  position at every step (the mask is the cache's size) and expands GQA's key/value heads
  (``repeat_kv``), so decode attention cost does not follow the context. Kept to measure the old
  behaviour side by side.
- ``eager``: the reference implementation (slow; for checks).
"""

from __future__ import annotations

import inspect
import os
import warnings
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..errors import EngineError, MissingExtraError, ParamsError
from .base import Engine, Generation, Request
from .hf_config import hf_config

__all__ = ["ATTENTIONS", "BLOCK_SIZE", "RECOMPILE_LIMIT", "import_torch", "raise_recompile_limits", "HFOptions",
           "HFEngine"]

ATTENTIONS = ("flex_attention", "sdpa", "eager")
BLOCK_SIZE = 128
"""Key/value block of flex attention's block mask [positions]."""


def import_torch():
    """``(torch, transformers)``, or :class:`MissingExtraError` naming the ``hf`` extra."""
    try:
        import torch
        import transformers
    except ImportError as e:
        raise MissingExtraError(e.name or "torch/transformers", "hf") from None
    return torch, transformers


def _uncompiled_flex_attention() -> None:
    """On the CPU, let transformers call flex attention unfused instead of through torch.compile.

    Inductor's CPU code generation fails on flex attention's kernels and on ``create_block_mask``
    (PyTorch 2.13, gcc 12), and the CPU path only serves tests; the block mask, and so which
    key/value blocks are read, is the same. Masks made for a GPU are still compiled.
    """
    import torch
    from torch.nn.attention.flex_attention import flex_attention
    from transformers import masking_utils
    from transformers.integrations import flex_attention as integration

    wrapper = getattr(integration, "WrappedFlexAttention", None)
    if wrapper is not None:
        wrapper._compiled_flex_attention = staticmethod(flex_attention)
        wrapper._is_flex_compiled = True
        wrapper.training = False
    real = getattr(masking_utils, "create_block_mask", None)
    if real is not None and not getattr(real, "_energykit_cpu", False):
        def create_block_mask(*args, device="cpu", _compile=False, **kwargs):
            on_cpu = torch.device(device).type == "cpu"
            return real(*args, device=device, _compile=_compile and not on_cpu, **kwargs)

        create_block_mask._energykit_cpu = True
        masking_utils.create_block_mask = create_block_mask


RECOMPILE_LIMIT = 256
"""Compiled variants dynamo keeps per function before it silently runs the function uncompiled."""


def raise_recompile_limits(torch) -> None:
    """Let dynamo keep a compiled variant for every shape a sweep uses.

    transformers compiles flex attention with ``dynamic=False`` even when decoding is not compiled,
    so every prompt length, the decode step and every geometry of the sweep add one variant of the
    same function. Past dynamo's default limit (8) it falls back, without an error, to *unfused*
    flex attention, which materialises the full score matrix: on an H100 (2026-11-26) this limit
    was hit in the second model of the paper-families sweep. Decode graphs also differ per batch size.
    """
    import torch._dynamo

    cfg = torch._dynamo.config
    for knob in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                 "accumulated_cache_size_limit"):
        if hasattr(cfg, knob):
            setattr(cfg, knob, max(getattr(cfg, knob), RECOMPILE_LIMIT))


class HFOptions(BaseModel):
    """The ``hf:`` section of a params file (its keys may also stand at the top level)."""

    model_config = ConfigDict(extra="forbid")

    compile: bool = True
    """Compile decode steps (CUDA graphs) with the static cache; GPU only."""
    attention: Literal[ATTENTIONS] = "flex_attention"
    """``flex_attention`` (context-proportional, native GQA), ``sdpa`` or ``eager``."""


class HFEngine(Engine):
    """Engine on transformers ``generate()``.

    Parameters
    ----------
    name : str
        Model name recorded in the data.
    geometry : dict
        Model geometry (see :mod:`energykit.presets`); used for random weights.
    checkpoint : str, optional
        Local checkpoint directory; loaded instead of random weights (no download).
    dtype : str
        ``bfloat16``, ``float16`` or ``float32``.
    device : str
        ``auto`` (CUDA when available), ``cuda`` or ``cpu``.
    compile : bool
        Compile decode steps (CUDA graphs) with the static cache; GPU only.
    attention : str
        ``flex_attention`` (context-proportional, native GQA), ``sdpa`` or ``eager``.
    max_len : int
        Longest request of the sweep, input plus output [tokens]: the static cache's size.
    seed : int
        Seed of the random weights and of the stream of prompt token ids.
    """

    name = "hf"
    Options = HFOptions
    requires = ("torch", "transformers")
    extra = "hf"

    @classmethod
    def check_model(cls, params, name, geometry, checkpoint) -> None:
        if params.meter == "nvml" and params.device == "cpu":
            raise ParamsError("meter nvml with device cpu would meter a GPU while the model runs on the CPU; "
                              "use device: cuda (or auto on a GPU machine), or meter: none")

    @classmethod
    def preflight(cls, params) -> None:
        """Refuse to meter a GPU while the model would run on the CPU (``device: auto`` without CUDA)."""
        if params.meter != "nvml" or params.device == "cuda":
            return
        torch, _ = import_torch()
        if not torch.cuda.is_available():
            raise ParamsError("device: auto resolves to the CPU here (torch sees no CUDA GPU; CUDA_VISIBLE_DEVICES="
                              f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}), but meter: nvml would meter a GPU; "
                              "run on a GPU machine or use meter: none")

    @classmethod
    def engine_kwargs(cls, params) -> dict:
        return {"device": params.device, **params.engine_options.model_dump()}

    @classmethod
    def label(cls, versions: dict) -> str:
        """E.g. ``hf transformers-5.17.0 compiled flex_attention``."""
        mode = "compiled" if versions.get("compile") else "eager"
        attn = versions.get("attention", "sdpa")  # datasets measured before the attention choice used sdpa
        return f"hf transformers-{versions.get('transformers')} {mode} {attn}"

    @classmethod
    def caveat(cls, label: str) -> str:
        if "sdpa" in label or ("hf" in label and "flex" not in label):
            return (" **Caveat:** this engine's decode attention reads the whole static cache and expands GQA's "
                    "KV heads (sdpa), so KV-cache savings do not show; see the README's engine table.")
        return ""

    def __init__(self, name, geometry, checkpoint=None, dtype="bfloat16", device="auto", compile=True,
                 attention="flex_attention", max_len=2048, seed=0):
        if attention not in ATTENTIONS:
            raise EngineError(f"attention {attention!r} is not one of {', '.join(ATTENTIONS)}")
        self.model_name = name
        self.geometry = geometry
        self.checkpoint = checkpoint
        self.dtype_name = dtype
        self.device_name = device
        self.compile = compile
        self.attention = attention
        self.max_len = int(max_len)
        self.seed = seed
        self.model = None
        self._caches = {}

    def load(self) -> None:
        torch, tf = import_torch()
        self.torch = torch
        dev = self.device_name
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        if dev == "cuda" and not torch.cuda.is_available():
            raise EngineError("device 'cuda' asked for but torch sees no CUDA GPU; use device: cpu or auto")
        self.device = torch.device(dev)
        if self.device.type == "cpu" and self.attention == "flex_attention":
            _uncompiled_flex_attention()
        dtype = getattr(torch, self.dtype_name)
        torch.manual_seed(self.seed)
        try:
            if self.checkpoint:
                model = tf.AutoModelForCausalLM.from_pretrained(self.checkpoint, dtype=dtype, local_files_only=True,
                                                                attn_implementation=self.attention)
                model = model.to(self.device)
            else:
                cfg = hf_config(self.geometry, self.max_len)
                with self.device:
                    model = tf.AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation=self.attention)
        except ValueError as e:
            if "attention" not in str(e).lower() and "attn" not in str(e).lower():
                raise
            others = ", ".join(a for a in ATTENTIONS if a != self.attention)
            raise EngineError(f"model {self.model_name!r} ({self.geometry.get('arch')}) has no {self.attention} in "
                              f"transformers {tf.__version__}; set attention: to one of {others}") from None
        self.model = model.eval()
        self.vocab_size = int(self.model.config.vocab_size)
        self.cache_cls = tf.StaticCache
        # one prompt stream for the whole sweep: every call and every repeat gets new token ids
        self._prompt_gen = torch.Generator(device="cpu").manual_seed(self.seed + 1)
        if self.compile or self.attention == "flex_attention":
            raise_recompile_limits(torch)

    def _cache(self, batch_size: int):
        """One static cache per batch size, allocated once for the longest request."""
        if batch_size not in self._caches:
            params = inspect.signature(self.cache_cls.__init__).parameters
            kw = dict(config=self.model.config, max_cache_len=self.max_len)
            if "max_batch_size" in params:  # transformers 4.x
                kw.update(max_batch_size=batch_size, device=self.device, dtype=self.model.dtype)
            self._caches[batch_size] = self.cache_cls(**kw)
        cache = self._caches[batch_size]
        cache.reset()
        return cache

    def request(self, batch_size, input_len, output_len) -> Request:
        torch = self.torch
        if input_len + output_len > self.max_len:
            raise EngineError(f"request of {input_len}+{output_len} tokens exceeds the static cache of {self.max_len}")
        kwargs = dict(max_new_tokens=output_len, min_new_tokens=output_len, do_sample=False,
                      pad_token_id=0, eos_token_id=None)
        if not self.compile:
            kwargs["disable_compile"] = True

        def make_prompts():
            ids = torch.randint(0, self.vocab_size, (batch_size, input_len), generator=self._prompt_gen)
            return ids.to(self.device)

        def run(ids) -> Generation:
            with torch.inference_mode(), warnings.catch_warnings():
                # transformers >= 5.2x renames past_key_values to cache; the old name still works
                warnings.filterwarnings("ignore", message="`past_key_values` is deprecated", category=FutureWarning)
                warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
                out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                          past_key_values=self._cache(batch_size), **kwargs)
            new = out.shape[1] - input_len
            if new != output_len:
                raise EngineError(f"asked for {output_len} new tokens per sequence, got {new}")
            return Generation(output_tokens=int(new))

        return Request(make_prompts, run)

    def synchronize(self) -> None:
        if self.model is not None and self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def recover(self) -> None:
        if self.model is not None and self.device.type == "cuda":
            self._caches.clear()
            self.torch.cuda.empty_cache()

    def versions(self) -> dict:
        torch, tf = import_torch()
        on_gpu = getattr(self, "device", None) is not None and self.device.type == "cuda"
        return {"torch": torch.__version__, "transformers": tf.__version__, "cuda": str(torch.version.cuda),
                "compile": bool(self.compile and on_gpu), "attention": self.attention,
                "kv_cache": f"static {self.max_len} positions"}

    def close(self) -> None:
        self.model = None
        self._caches.clear()
        if getattr(self, "device", None) is not None and self.device.type == "cuda":
            self.torch.cuda.empty_cache()
