"""The window protocol's plausibility checks (issue 26): a window fails when its calls waited in the engine's
request queue, or when its step time is over 10x the pilot's per-step estimate."""

import itertools
import threading
import time

import pytest

from energykit import windows
from energykit.engines import Generation, Request
from energykit.errors import EngineError
from energykit.meters import NullMeter


def _meter():
    with pytest.warns(UserWarning):  # a null meter warns that it measures no energy
        return NullMeter()


def _request(seconds, queue_waits=None, tokens=4, steps=0):
    """A request whose n-th call sleeps ``seconds[n]`` and reports ``queue_waits[n]``."""
    durations = iter(seconds)
    waits = iter(queue_waits or itertools.repeat(0))

    def run(_):
        time.sleep(next(durations))
        return Generation(output_tokens=tokens, steps=steps, queue_waits=next(waits))

    return Request(lambda: None, run)


def test_a_call_that_waited_in_the_queue_fails_its_window_and_closes_it():
    threads = threading.active_count()
    calls = [0.002] * 2 + [0.002, 0.002, 0.002]
    with pytest.raises(EngineError, match=r"1 decode step\(s\) of a call waited in the engine's request queue"):
        windows.measure(_meter(), _request(calls, queue_waits=[0, 0, 0, 1, 0]), min_window_s=0.05)
    assert threading.active_count() == threads  # the meter window was cancelled


def test_a_pilot_that_waited_in_the_queue_fails_too():
    with pytest.raises(EngineError, match="waited in the engine's request queue"):
        windows.measure(_meter(), _request([0.001] * 5, queue_waits=[3, 0, 0, 0, 0]), min_window_s=0.01)


def test_a_step_time_over_ten_times_the_pilots_fails_the_window():
    # pilots: 5 ms per call of 4 steps; the window's calls: 400 ms (80x, and 395 ms over)
    with pytest.raises(EngineError, match=r"implausible window: step time 1\d\d(\.\d)? ms is \d\dx the pilot's per-step "
                                          r"estimate 1.\d+ ms \(over 10x\)"):
        windows.measure(_meter(), _request([0.005, 0.005] + [0.4] * 3), min_window_s=0.1)


def test_plausible_windows_pass_and_record_their_step_times():
    w = windows.measure(_meter(), _request([0.004, 0.004] + [0.012] * 20, steps=5), min_window_s=0.05)
    assert w.step_s == pytest.approx(w.duration_s / 5) and w.pilot_step_s == pytest.approx(w.pilot_s / 5)
    assert w.step_s > w.pilot_step_s  # 3x slower: not implausible
    # a host stall of a tenth of a second on a sub-millisecond call is not a queue wait
    w = windows.measure(_meter(), _request([0.0005, 0.0005, 0.15, 0.0005, 0.0005]), min_window_s=0.02)
    assert w.iterations >= 1
    # plain callables have no tokens: no step time, no check
    w = windows.measure(_meter(), lambda: time.sleep(0.001), min_window_s=0.01)
    assert w.step_s != w.step_s  # NaN


def test_the_factor_uses_the_pilot_given_by_an_earlier_repeat():
    with pytest.raises(EngineError, match="implausible window"):
        windows.measure(_meter(), _request([0.4] * 3), min_window_s=0.2, pilot_s=0.01)


def test_one_slow_stretch_is_measured_again_and_only_a_second_fails_the_window():
    # a host stall of half a second on one call of a 2 ms cell: measured again, and the window passes
    w = windows.measure(_meter(), _request([0.002, 0.002, 0.5] + [0.002] * 100), min_window_s=0.02)
    assert w.duration_s < 0.1 and w.iterations >= 1
    # slow twice in a row (a queue wait recurs on every call): the window fails
    with pytest.raises(EngineError, match="implausible window"):
        windows.measure(_meter(), _request([0.002, 0.002, 0.5, 0.5] + [0.002] * 100), min_window_s=0.02)
