"""transformers/PyTorch engine: random weights from a geometry or a local checkpoint.

On a GPU it runs in bf16 with one static KV cache, allocated once for the sweep's longest request
and reset between calls, and lets transformers compile the decode step (CUDA graphs); ``compile:
false`` gives eager decoding. It also runs on the CPU, for tests.
"""

from __future__ import annotations

import inspect
import warnings

from ..errors import EngineError, MissingExtraError
from . import Engine, Generation


def _import():
    try:
        import torch
        import transformers
    except ImportError as e:
        raise MissingExtraError(e.name or "torch/transformers", "hf") from None
    return torch, transformers


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
    max_len : int
        Longest request of the sweep, input plus output [tokens]: the static cache's size.
    seed : int
        Seed of the random weights and prompt token ids.
    """

    name = "hf"

    def __init__(self, name, geometry, checkpoint=None, dtype="bfloat16", device="auto", compile=True,
                 max_len=2048, seed=0):
        self.model_name = name
        self.geometry = geometry
        self.checkpoint = checkpoint
        self.dtype_name = dtype
        self.device_name = device
        self.compile = compile
        self.max_len = int(max_len)
        self.seed = seed
        self.model = None
        self._caches = {}

    def load(self) -> None:
        torch, tf = _import()
        from ..presets import hf_config

        self.torch = torch
        dev = self.device_name
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        if dev == "cuda" and not torch.cuda.is_available():
            raise EngineError("device 'cuda' asked for but torch sees no CUDA GPU; use device: cpu or auto")
        self.device = torch.device(dev)
        dtype = getattr(torch, self.dtype_name)
        torch.manual_seed(self.seed)
        if self.checkpoint:
            model = tf.AutoModelForCausalLM.from_pretrained(self.checkpoint, dtype=dtype, local_files_only=True)
            model = model.to(self.device)
        else:
            cfg = hf_config(self.geometry, self.max_len)
            with self.device:
                model = tf.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
        self.model = model.eval()
        self.vocab_size = int(self.model.config.vocab_size)
        self.cache_cls = tf.StaticCache

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

    def request(self, batch_size, input_len, output_len):
        torch = self.torch
        if input_len + output_len > self.max_len:
            raise EngineError(f"request of {input_len}+{output_len} tokens exceeds the static cache of {self.max_len}")
        gen = torch.Generator(device="cpu").manual_seed(self.seed + input_len)
        ids = torch.randint(0, self.vocab_size, (batch_size, input_len), generator=gen).to(self.device)
        mask = torch.ones_like(ids)
        kwargs = dict(max_new_tokens=output_len, min_new_tokens=output_len, do_sample=False,
                      pad_token_id=0, eos_token_id=None)
        if not self.compile:
            kwargs["disable_compile"] = True

        def call() -> Generation:
            with torch.inference_mode(), warnings.catch_warnings():
                # transformers >= 5.2x renames past_key_values to cache; the old name still works
                warnings.filterwarnings("ignore", message="`past_key_values` is deprecated", category=FutureWarning)
                out = self.model.generate(input_ids=ids, attention_mask=mask, past_key_values=self._cache(batch_size),
                                          **kwargs)
            new = out.shape[1] - input_len
            if new != output_len:
                raise EngineError(f"asked for {output_len} new tokens per sequence, got {new}")
            return Generation(output_tokens=int(new))

        return call

    def synchronize(self) -> None:
        if self.model is not None and self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def recover(self) -> None:
        if self.model is not None and self.device.type == "cuda":
            self._caches.clear()
            self.torch.cuda.empty_cache()

    def versions(self) -> dict:
        torch, tf = _import()
        return {"torch": torch.__version__, "transformers": tf.__version__,
                "cuda": str(torch.version.cuda), "compile": bool(self.compile and self.device.type == "cuda")}

    def close(self) -> None:
        self.model = None
        self._caches.clear()
        if getattr(self, "device", None) is not None and self.device.type == "cuda":
            self.torch.cuda.empty_cache()
