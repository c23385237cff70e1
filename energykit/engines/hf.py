"""transformers/PyTorch engine: random weights from a geometry or a local checkpoint.

Decoding (``decode``, recorded in provenance and in a sweep's fingerprint):

- ``loop`` (default): the kit's own greedy loop (:mod:`energykit.engines.hf_decode`): one prefill
  forward over exactly ``i`` tokens, then ``o − 1`` one-token steps over one static cache per batch
  size, everything on the device; on CUDA the step is a CUDA graph captured once per (model, batch
  size) and replayed, the whole step and the prefill compiled by Inductor (``compile: false`` runs
  them uncaptured, only flex attention compiled).
  One host synchronisation per call. Its attention is the kit's flex attention (grouped KV heads read
  as stored for every head ratio). Gemma-2's sliding window is widened to the static cache
  (``max_len``), so its layers never roll a window; recorded in provenance as a deviation. Falcon has
  no flex path in transformers and is refused.
- ``generate``: transformers ``generate()`` with the same static cache (reset, i.e. zeroed, before
  every call) and transformers' attention (``attention``); on a GPU transformers compiles the decode
  step (CUDA graphs) unless ``compile: false``. The host reads a flag after every step. Kept to
  measure the old path side by side.

It also runs on the CPU, for tests.

Attention of ``decode: generate`` (``attention``, recorded in provenance):

- ``flex_attention`` (default): PyTorch flex attention over the static cache with a block mask.
  Key/value blocks (128 positions) that lie wholly beyond the current context are skipped, so each
  decode step reads ⌈context/128⌉ blocks of the cache, not the whole preallocated cache, and the
  grouped key/value heads of GQA/MQA are read as they are (no copy) — except where the query-head
  count is not a power of two (Qwen2-1.5B, Llama-3.2-3B): transformers then expands them
  (``repeat_kv``, ``integrations/flex_attention.py``); ``decode: loop`` does not. This is what paged-KV
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
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..errors import EngineError, MissingExtraError, ParamsError
from .base import Engine, Generation, Request
from .hf_config import hf_config
from . import hf_decode

__all__ = ["ATTENTIONS", "DECODES", "use_compile_cache", "BLOCK_SIZE", "RECOMPILE_LIMIT", "import_torch",
           "cpu_threads", "raise_recompile_limits", "HFOptions", "HFEngine"]

ATTENTIONS = ("flex_attention", "sdpa", "eager")
DECODES = ("loop", "generate")


def use_compile_cache(directory: str | os.PathLike) -> Path:
    """Keep Inductor's and Triton's compiled kernels in ``directory`` (created), so reruns skip compiling.

    Sets ``TORCHINDUCTOR_CACHE_DIR`` and ``TRITON_CACHE_DIR`` (read by Inductor and Triton when they
    first compile) and Inductor's FX-graph cache, before any compilation of this process.
    """
    path = Path(directory).expanduser().resolve()
    try:
        (path / "triton").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EngineError(f"compile_cache {str(directory)!r} cannot be created ({e.strerror}); give a writable folder") from None
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    os.environ["TRITON_CACHE_DIR"] = str(path / "triton")
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    try:
        import torch._inductor.config as inductor

        inductor.fx_graph_cache = True
    except ImportError:
        pass
    return path
BLOCK_SIZE = 128
"""Key/value block of flex attention's block mask [positions]."""


def cpu_threads() -> int:
    """CPUs this process may use: its affinity, capped by Slurm's allocation (``SLURM_CPUS_PER_TASK``, else
    ``SLURM_CPUS_ON_NODE``), so that shards sharing a node's cores do not oversubscribe them."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    given = [os.environ.get(k, "") for k in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE")]
    slurm = next((int(v) for v in given if v.isdigit() and int(v) > 0), n)
    return max(1, min(n, slurm))


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
    decode: Literal[DECODES] | None = None
    """``loop`` (the kit's decode loop; the default with flex attention) or ``generate`` (the default otherwise)."""
    compile_cache: str = ""
    """Folder of Inductor's and Triton's caches: reruns and array tasks on the same GPU type skip compiling."""

    @property
    def decode_mode(self) -> str:
        """``decode``, or by default ``loop`` with flex attention and ``generate`` with another."""
        if self.decode is not None:
            return self.decode
        return "loop" if self.attention == "flex_attention" else "generate"


class HFEngine(Engine):
    """Engine on transformers models: the kit's decode loop, or ``generate()``.

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
    decode : str, optional
        ``loop`` (the kit's decode loop) or ``generate`` (transformers ``generate()``); by default
        ``loop`` with flex attention, ``generate`` with another attention.
    compile_cache : str, optional
        Folder of Inductor's and Triton's caches (see :func:`use_compile_cache`).
    """

    name = "hf"
    Options = HFOptions
    attentions = ATTENTIONS
    requires = ("torch", "transformers")
    extra = "hf"

    @classmethod
    def check_model(cls, params, name, geometry, checkpoint) -> None:
        options = params.engine_options
        if options.decode_mode == "loop" and options.attention != "flex_attention":
            raise ParamsError(f"decode: loop runs the kit's flex attention; attention {options.attention!r} "
                              "needs decode: generate")
        if options.decode_mode == "loop" and geometry.get("arch") == "falcon":
            raise ParamsError(f"model {name!r} (falcon) has no flex attention in transformers: its sdpa path attends "
                              "over the whole static cache and expands the KV heads, so decode cost would not follow "
                              "the context; drop it, or use decode: generate with attention: sdpa")
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
        options = params.engine_options.model_dump()
        options.update(decode=params.engine_options.decode_mode, compile_cache=options["compile_cache"] or None)
        return {"device": params.device, **options}

    @classmethod
    def fingerprint(cls, options) -> dict:
        """compile and attention; ``decode`` where it is the loop (folders measured with ``generate()``
        before the loop existed have no such key and resume); not the compile cache's folder."""
        out = {"compile": options.compile, "attention": options.attention}
        if options.decode_mode == "loop":
            out["decode"] = "loop"
        return out

    @classmethod
    def label(cls, versions: dict) -> str:
        """E.g. ``hf transformers-5.17.0 compiled flex_attention`` or ``hf transformers-5.24.0 loop cuda-graph energykit_flex``."""
        mode = "compiled" if versions.get("compile") else "eager"
        attn = versions.get("attention", "sdpa")  # datasets measured before the attention choice used sdpa
        if versions.get("decode") == "loop":
            mode = "loop cuda-graph" if versions.get("cuda_graph") else "loop"
        return f"hf transformers-{versions.get('transformers')} {mode} {attn}"

    @classmethod
    def caveat(cls, label: str) -> str:
        if cls._whole_cache(label):
            return (" **Caveat:** this engine's decode attention reads the whole static cache and expands GQA's "
                    "KV heads (sdpa), so KV-cache savings do not show; see docs/engines.md.")
        return ""

    @classmethod
    def paper_difference(cls, label: str) -> str:
        if cls._whole_cache(label):
            return ("sdpa attends over the whole static cache every step and expands GQA's KV heads, so decode cost stops "
                    "following the context")
        return ""

    @classmethod
    def _whole_cache(cls, label: str) -> bool:
        """Whether data with this label ran an attention that reads the whole static cache (sdpa, or eager)."""
        versions = cls.from_label(label)
        return versions is not None and cls.attention(versions) != "flex_attention"

    @classmethod
    def attention(cls, versions: dict) -> str:
        """The recorded attention; data that recorded none ran transformers' default, sdpa."""
        return str(versions.get("attention") or "not recorded (transformers' default: sdpa)")

    @classmethod
    def from_label(cls, label: str) -> dict | None:
        """``hf transformers-X MODE ATTENTION``, or the probe files' ``transformers-5.17-…`` (no attention named:
        transformers' default, sdpa)."""
        words = label.replace("-", " ").split()
        if not words or words[0] not in ("hf", "transformers"):
            return None
        found = [w if w in ATTENTIONS else "flex_attention" for w in label.split() if w in ATTENTIONS or "flex" in w]
        return {"engine": cls.name, **({"attention": found[-1]} if found else {})}

    def __init__(self, name, geometry, checkpoint=None, dtype="bfloat16", device="auto", compile=True,
                 attention="flex_attention", max_len=2048, seed=0, decode=None, compile_cache=None):
        if attention not in ATTENTIONS:
            raise EngineError(f"attention {attention!r} is not one of {', '.join(ATTENTIONS)}")
        if decode is None:
            decode = "loop" if attention == "flex_attention" else "generate"
        if decode not in DECODES:
            raise EngineError(f"decode {decode!r} is not one of {', '.join(DECODES)}")
        if decode == "loop" and attention != "flex_attention":
            raise EngineError(f"decode: loop runs the kit's flex attention; attention {attention!r} needs decode: generate")
        if decode == "loop" and geometry.get("arch") == "falcon":
            raise EngineError(f"model {name!r} (falcon) has no flex attention in transformers: its sdpa path attends "
                              "over the whole static cache and expands the KV heads, so decode cost would not follow "
                              "the context; drop it, or measure it with decode: generate, attention: sdpa (not comparable)")
        self.decode = decode
        self.compile_cache = compile_cache
        self.deviations = {}
        self._loop = None
        self.last_tokens = None
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
        if self.compile_cache:
            use_compile_cache(self.compile_cache)
        torch, tf = import_torch()
        self.torch = torch
        dev = self.device_name
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        if dev == "cuda" and not torch.cuda.is_available():
            raise EngineError("device 'cuda' asked for but torch sees no CUDA GPU; use device: cpu or auto")
        self.device = torch.device(dev)
        if self.device.type == "cpu" and torch.get_num_threads() > (cores := cpu_threads()):
            torch.set_num_threads(cores)  # more threads than cores: each step waits on the others
        if self.device.type == "cpu" and self.attention == "flex_attention" and self.decode == "generate":
            _uncompiled_flex_attention()
        dtype = getattr(torch, self.dtype_name)
        torch.manual_seed(self.seed)
        attn = hf_decode.register_attention() if self.decode == "loop" else self.attention
        try:
            if self.checkpoint:
                model = tf.AutoModelForCausalLM.from_pretrained(self.checkpoint, dtype=dtype, local_files_only=True,
                                                                attn_implementation=attn)
                model = model.to(self.device)
            else:
                cfg = hf_config(self.geometry, self.max_len)
                with self.device:
                    model = tf.AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation=attn)
        except ValueError as e:
            if "attention" not in str(e).lower() and "attn" not in str(e).lower():
                raise
            others = ", ".join(a for a in ATTENTIONS if a != self.attention)
            raise EngineError(f"model {self.model_name!r} ({self.geometry.get('arch')}) has no {self.attention} in "
                              f"transformers {tf.__version__}; set attention: to one of {others}") from None
        self.model = model.eval()
        window = getattr(model.config, "sliding_window", None)
        if self.decode == "loop" and window is not None and "gemma" in str(model.config.model_type):
            # the loop's mask is causal over the whole static cache: a window of at least its length, never rolled
            model.config.sliding_window = max(int(window), hf_decode.cache_len(self.max_len))
            self.deviations["sliding_window"] = (f"{window} -> {model.config.sliding_window} (>= max_len "
                                                 f"{self.max_len}: the cache never rolls a window)")
        if self.decode == "loop":
            self._loop = hf_decode.DecodeLoop(model, self.max_len, capture=self.compile)
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

        def run_loop(ids) -> Generation:
            self.last_tokens = tokens = self._loop.generate(ids, output_len)
            return Generation(output_tokens=int(tokens.shape[1]))

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

        return Request(make_prompts, run_loop if self._loop is not None else run)

    def synchronize(self) -> None:
        if self.model is not None and self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def recover(self) -> None:
        if self.model is not None and self.device.type == "cuda":
            self._caches.clear()
            if self._loop is not None:
                self._loop.close()
            self.torch.cuda.empty_cache()

    def versions(self) -> dict:
        torch, tf = import_torch()
        on_gpu = getattr(self, "device", None) is not None and self.device.type == "cuda"
        out = {"torch": torch.__version__, "transformers": tf.__version__, "cuda": str(torch.version.cuda),
               "compile": bool(self.compile and on_gpu), "attention": self.attention,
               "kv_cache": f"static {self.max_len} positions", "decode": self.decode}
        if self.decode == "loop":
            out.update(attention=hf_decode.ATTENTION_NAME, cuda_graph=bool(self.compile and on_gpu),
                       compiled=("none (CPU)" if not on_gpu else "whole decode step and prefill (Inductor)"
                                 if self.compile else "flex attention only"),
                       kv_cache=f"static {hf_decode.cache_len(self.max_len)} positions; reset sets the length only",
                       decode_mask="live context: partial blocks only, position // 128 + 1",
                       gqa="grouped KV heads as stored" + (" (query heads folded into the query length)"
                                                          if hf_decode.folded(self.geometry.get("num_heads", 1),
                                                                              self.geometry.get("num_kv_heads", 1))
                                                          else ""))
        if getattr(self, "device", None) is not None and self.device.type == "cpu":
            out["cpu_threads"] = torch.get_num_threads()
        if self.deviations:
            out["deviations"] = dict(self.deviations)
        if self.compile_cache:
            out["compile_cache"] = str(self.compile_cache)
        return out

    def close(self) -> None:
        self.model = None
        self._caches.clear()
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        if getattr(self, "device", None) is not None and self.device.type == "cuda":
            self.torch.cuda.empty_cache()
