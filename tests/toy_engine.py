"""A toy engine for tests: the whole of a new engine in one file (plus one line in ``engines.ENGINES``).

It runs on the CPU with numpy only: every new token is one matrix-vector product over a random
embedding table of the geometry's ``vocab_size`` x ``hidden_size``, repeated ``work`` times, and the
next token is the argmax. It measures nothing real; it shows what an engine must declare and that
the sweep, the params, the fingerprint, the labels and the summary need nothing else.

Tests of the sweep machinery (resume, failures, pilots, shards, merge) run on it: a window takes
microseconds, where the ``hf`` engine builds a transformers model and compiles per shape. In a test,
``monkeypatch.setitem(engines.ENGINES, "toy", ToyEngine)`` registers it; in a subprocess,
``python tests/toy_engine.py ARGS`` is ``energykit ARGS`` with it registered.
"""

from __future__ import annotations

import sys

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from energykit.engines.base import Engine, Generation, Request
from energykit.errors import EngineError


class ToyOptions(BaseModel):
    """The ``toy:`` section of a params file."""

    model_config = ConfigDict(extra="forbid")

    work: StrictInt = Field(1, ge=1)
    """Matrix-vector products per new token."""
    lanes: StrictInt = Field(1, ge=1)
    """Pretend tensor parallelism: the GPUs the meter would read."""


class ToyEngine(Engine):
    """numpy greedy decoding over a random embedding table (CPU, tests only)."""

    name = "toy"
    Options = ToyOptions
    requires = ("numpy",)
    extra = "toy"
    archs = ("llama",)

    @classmethod
    def gpu_count(cls, options: ToyOptions) -> int:
        return options.lanes

    @classmethod
    def fingerprint(cls, options: ToyOptions) -> dict:
        return {"work": options.work}  # lanes only says how many devices are read

    @classmethod
    def label(cls, versions: dict) -> str:
        return f"toy numpy-{versions.get('numpy')} work {versions.get('work')}"

    def __init__(self, name, geometry, checkpoint=None, dtype="float32", max_len=64, seed=0, work=1, lanes=1):
        self.model_name = name
        self.geometry = geometry
        self.max_len = int(max_len)
        self.seed = seed
        self.work = int(work)
        self.gpus = int(lanes)
        self.table = None

    def load(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.table = rng.standard_normal((int(self.geometry["vocab_size"]), int(self.geometry["hidden_size"])))
        self._prompts = np.random.default_rng(self.seed + 1)

    def request(self, batch_size, input_len, output_len) -> Request:
        if input_len + output_len > self.max_len:
            raise EngineError(f"request of {input_len}+{output_len} tokens exceeds max_len {self.max_len}")
        vocab = self.table.shape[0]

        def make_prompts():
            return self._prompts.integers(0, vocab, size=(batch_size, input_len))

        def run(ids) -> Generation:
            state = self.table[ids].mean(axis=1)  # (batch, hidden): the prompt, read once
            new = 0
            for _ in range(output_len):
                for _ in range(self.work):
                    logits = state @ self.table.T
                token = logits.argmax(axis=1)
                state = 0.5 * state + 0.5 * self.table[token]
                new += 1
            return Generation(output_tokens=new)

        return Request(make_prompts, run)

    def versions(self) -> dict:
        return {"numpy": np.__version__, "work": self.work}


def main(argv=None) -> int:
    """The energykit CLI with the toy engine registered (what ``python tests/toy_engine.py ARGS`` runs)."""
    from energykit import engines
    from energykit.cli import main as cli

    engines.ENGINES.setdefault(ToyEngine.name, ToyEngine)
    return cli(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
