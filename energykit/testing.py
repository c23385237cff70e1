"""Fakes of the hardware libraries, for tests without a GPU.

- :class:`FakeNvml`: the subset of ``pynvml`` (nvidia-ml-py) that :mod:`energykit.meters` calls,
  driven by a clock: an energy counter that advances in steps of ``counter_period_s`` at a constant
  power, optionally missing, optionally going down; or no GPU at all. :func:`fake_api_names` lists
  what it fakes, so a test can check each name exists in the real module.
- :class:`FakeTensorRTLLM`: a stand-in ``tensorrt_llm`` module that records every ``LLM``,
  ``SamplingParams`` and ``generate`` call and answers like the LLM API.
"""

from __future__ import annotations

import time
import types
from dataclasses import dataclass, field


class FakeNVMLError(Exception):
    """Stands for ``pynvml.NVMLError``."""


class FakeNVMLErrorNotSupported(FakeNVMLError):
    """Stands for ``pynvml.NVMLError_NotSupported``."""


@dataclass
class _FieldValue:
    nvmlReturn: int
    value: types.SimpleNamespace


class FakeNvml:
    """Counter-driven fake of ``pynvml``.

    Parameters
    ----------
    power_w : float
        Constant board power [W].
    counter_period_s : float
        The energy counter advances every this many seconds (0.1 on an H200).
    has_counter : bool
        False: ``nvmlDeviceGetTotalEnergyConsumption`` raises NotSupported (fallback path).
    counter_drop_after : int, optional
        After this many counter reads the counter goes back to zero (driver reload).
    gpus : int
        Number of GPUs; 0 makes ``nvmlInit`` fail as on a machine without a driver.
    """

    NVMLError = FakeNVMLError
    NVMLError_NotSupported = FakeNVMLErrorNotSupported
    NVML_SUCCESS = 0
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, power_w=300.0, counter_period_s=0.1, has_counter=True, counter_drop_after=None, gpus=1,
                 instant_field=True, clock=time.perf_counter):
        self.power_w = power_w
        self.counter_period_s = counter_period_s
        self.has_counter = has_counter
        self.counter_drop_after = counter_drop_after
        self.gpus = gpus
        self.instant_field = instant_field
        self.clock = clock
        self.t0 = clock()
        self.calls: list[str] = []
        self.counter_reads = 0
        self.initialised = False

    def _log(self, name):
        self.calls.append(name)

    def nvmlInit(self):
        self._log("nvmlInit")
        if self.gpus == 0:
            raise FakeNVMLError("Driver Not Loaded")
        self.initialised = True

    def nvmlShutdown(self):
        self._log("nvmlShutdown")
        self.initialised = False

    def nvmlDeviceGetCount(self):
        self._log("nvmlDeviceGetCount")
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, index):
        self._log("nvmlDeviceGetHandleByIndex")
        if index >= self.gpus:
            raise FakeNVMLError("Invalid Argument")
        return ("handle", index)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self._log("nvmlDeviceGetHandleByUUID")
        if not str(uuid).startswith("GPU-fake-"):
            raise FakeNVMLError("Not Found")
        return ("handle", int(str(uuid).rsplit("-", 1)[1]))

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-fake-{handle[1]}"

    def nvmlDeviceGetName(self, handle):
        return "Fake H200"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        """Energy since 'driver load' [mJ], advancing in steps of ``counter_period_s``."""
        self._log("nvmlDeviceGetTotalEnergyConsumption")
        if not self.has_counter:
            raise FakeNVMLErrorNotSupported("Not Supported")
        self.counter_reads += 1
        if self.counter_drop_after is not None and self.counter_reads > self.counter_drop_after:
            self.t0 = self.clock()  # driver reload: the counter starts from zero again
            self.counter_drop_after = None
        elapsed = self.clock() - self.t0
        steps = int(elapsed / self.counter_period_s)
        return int(steps * self.counter_period_s * self.power_w * 1000) + 10_000_000

    def nvmlDeviceGetPowerUsage(self, handle):
        """Average power [mW]."""
        self._log("nvmlDeviceGetPowerUsage")
        return int(self.power_w * 1000)

    def nvmlDeviceGetFieldValues(self, handle, field_ids):
        self._log("nvmlDeviceGetFieldValues")
        out = []
        for fid in field_ids:
            ok = fid == self.NVML_FI_DEV_POWER_INSTANT and self.instant_field
            out.append(_FieldValue(self.NVML_SUCCESS if ok else self.NVML_ERROR_NOT_SUPPORTED,
                                   types.SimpleNamespace(uiVal=int(self.power_w * 1000) if ok else 0)))
        return out

    def nvmlSystemGetDriverVersion(self):
        return "580.159.04"

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return 700_000

    def nvmlDeviceGetClockInfo(self, handle, clock_type):
        return 1980 if clock_type == self.NVML_CLOCK_SM else 3201

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 35


def fake_api_names() -> list[str]:
    """Names of the ``pynvml`` API that :class:`FakeNvml` fakes."""
    return [n for n in dir(FakeNvml) if n.startswith(("nvml", "NVML")) and not n.startswith("NVMLError")]


# ---------------------------------------------------------------------------------------------------
@dataclass
class _Completion:
    token_ids: list
    request_perf_metrics: object = None


@dataclass
class _RequestOutput:
    request_id: int
    prompt_token_ids: list
    outputs: list


@dataclass
class FakeSamplingParams:
    """Records its keyword arguments like ``tensorrt_llm.SamplingParams``."""

    max_tokens: int = 32
    ignore_eos: bool = False
    temperature: float | None = None
    detokenize: bool = True
    return_perf_metrics: bool = False
    extra: dict = field(default_factory=dict)


class FakeTensorRTLLM(types.ModuleType):
    """A ``tensorrt_llm`` stand-in: ``LLM``, ``SamplingParams``, ``__version__``; records calls.

    ``short_by`` makes ``generate`` return that many tokens fewer than asked (to test verification).
    """

    def __init__(self, short_by=0, with_metrics=True):
        super().__init__("tensorrt_llm")
        self.__version__ = "fake-1.0"
        self.calls: list[tuple] = []
        fake = self

        class LLM:
            def __init__(self, **kwargs):
                fake.calls.append(("LLM", kwargs))
                self.kwargs = kwargs
                self._next = 0

            def generate(self, inputs, sampling_params=None, use_tqdm=True, **kwargs):
                fake.calls.append(("generate", {"inputs": inputs, "sampling_params": sampling_params,
                                                "use_tqdm": use_tqdm, **kwargs}))
                n = sampling_params.max_tokens - short_by
                outs = []
                for prompt in inputs:
                    metrics = None
                    if with_metrics and sampling_params.return_perf_metrics:
                        timing = types.SimpleNamespace(arrival_time=1.0, first_token_time=1.05,
                                                       first_scheduled_time=1.0, last_token_time=2.0)
                        metrics = types.SimpleNamespace(timing_metrics=timing)
                    outs.append(_RequestOutput(self._next, prompt, [_Completion([7] * n, metrics)]))
                    self._next += 1
                return outs

            def shutdown(self):
                fake.calls.append(("shutdown", {}))

        def sampling_params(**kwargs):
            fake.calls.append(("SamplingParams", dict(kwargs)))
            known = {k: kwargs.pop(k) for k in list(kwargs) if k in FakeSamplingParams.__dataclass_fields__}
            return FakeSamplingParams(**known, extra=kwargs)

        self.LLM = LLM
        self.SamplingParams = sampling_params
