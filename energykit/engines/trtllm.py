"""TensorRT-LLM engine through its LLM API (PyTorch backend by default).

Prompts are token-id lists of exactly ``input_len``; ``SamplingParams(max_tokens=output_len,
ignore_eos=True)`` forces exactly ``output_len`` new tokens, verified per request; ``batch_size``
requests go to one ``generate()`` call. Time to first token comes from the per-request perf
metrics where the installed version reports them.
"""

from __future__ import annotations

import random
from pathlib import Path

from ..errors import EngineError, MissingExtraError
from . import Engine, Generation

INSTALL_HINT = "its wheels come from NVIDIA's index: see https://nvidia.github.io/TensorRT-LLM/installation/linux.html"


def _import():
    try:
        import tensorrt_llm
    except ImportError:
        raise MissingExtraError("tensorrt_llm", "trtllm", INSTALL_HINT) from None
    return tensorrt_llm


def _seconds(v) -> float | None:
    if v is None:
        return None
    return v.total_seconds() if hasattr(v, "total_seconds") else float(v)


class TrtLlmEngine(Engine):
    """Engine on ``tensorrt_llm.LLM``.

    Parameters
    ----------
    name : str
        Model name recorded in the data.
    geometry : dict
        Geometry; without a checkpoint a random-weight HF checkpoint is written to ``workdir``
        (needs the ``hf`` extra).
    checkpoint : str, optional
        Local HF checkpoint directory (or TensorRT engine directory).
    dtype : str
        Model dtype passed to ``LLM``.
    max_len : int
        Longest request, input plus output [tokens] (``max_seq_len``).
    max_batch_size : int
        Largest batch of the sweep.
    backend : str, optional
        ``LLM(backend=...)``; left to the library's default (PyTorch) when empty.
    """

    name = "trtllm"

    def __init__(self, name, geometry, checkpoint=None, dtype="bfloat16", max_len=2048, max_batch_size=16,
                 backend="", workdir="checkpoints", seed=0, **_ignored):
        self.model_name = name
        self.geometry = geometry
        self.checkpoint = checkpoint
        self.dtype = dtype
        self.max_len = int(max_len)
        self.max_batch_size = int(max_batch_size)
        self.backend = backend
        self.workdir = Path(workdir)
        self.seed = seed
        self.llm = None

    def _random_checkpoint(self) -> str:
        from .hf import _import as import_hf
        from ..presets import hf_config

        torch, tf = import_hf()
        path = self.workdir / self.model_name
        if not (path / "config.json").exists():
            cfg = hf_config(self.geometry, self.max_len)
            model = tf.AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, self.dtype))
            model.save_pretrained(path)
        return str(path)

    def load(self) -> None:
        trt = _import()
        self.trt = trt
        ckpt = self.checkpoint or self._random_checkpoint()
        kwargs = dict(model=ckpt, skip_tokenizer_init=True, dtype=self.dtype,
                      max_batch_size=self.max_batch_size, max_seq_len=self.max_len)
        if self.backend:
            kwargs["backend"] = self.backend
        self.llm = trt.LLM(**kwargs)
        self.vocab_size = int(self.geometry["vocab_size"])

    def request(self, batch_size, input_len, output_len):
        rng = random.Random(self.seed + input_len)
        prompts = [[rng.randrange(self.vocab_size) for _ in range(input_len)] for _ in range(batch_size)]
        params = self.trt.SamplingParams(max_tokens=output_len, ignore_eos=True, temperature=0.0,
                                         detokenize=False, return_perf_metrics=True)

        def call() -> Generation:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
            if len(outputs) != batch_size:
                raise EngineError(f"sent {batch_size} requests, got {len(outputs)} outputs")
            ttfts = []
            for out in outputs:
                n = len(out.outputs[0].token_ids)
                if n != output_len:
                    raise EngineError(f"asked for {output_len} new tokens, request {out.request_id} gave {n}")
                m = getattr(out.outputs[0], "request_perf_metrics", None)
                t = getattr(m, "timing_metrics", None)
                first, arrival = _seconds(getattr(t, "first_token_time", None)), _seconds(getattr(t, "arrival_time", None))
                if first is not None and arrival is not None:
                    ttfts.append(first - arrival)
            ttft = sum(ttfts) / len(ttfts) if ttfts else float("nan")
            return Generation(output_tokens=output_len, ttft_s=ttft)

        return call

    def synchronize(self) -> None:
        # generate() returns when every request has finished; synchronise CUDA too where torch is present
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()
        except ImportError:
            pass

    def versions(self) -> dict:
        return {"tensorrt_llm": getattr(self.trt, "__version__", "unknown"), "backend": self.backend or "default"}

    def close(self) -> None:
        if self.llm is not None:
            self.llm.shutdown()
            self.llm = None
