"""A replayed request stream: read it, predict its energy from a fit, attribute the energy to each request.

``energykit replay`` (issue 29) replays a production trace against a server and writes a folder:

- ``requests.jsonl``: one object per request (``request_id``, ``arrival_s``, ``sent_s``,
  ``first_token_s``, ``last_token_s``, ``input_len``, ``output_len``, ``prompt_tokens``,
  ``completion_tokens``, ``ok``, ``error``), times [s] from the replay's start on the meter's clock;
- ``energy.jsonl``: one object per contiguous meter window (``start_s``, ``end_s``, ``energy_j``, ``method``);
- ``replay.json``: the trace, its time scale or rate, ``idle_power_w`` measured before, meter, GPUs,
  server fingerprint, start time, kit version.

This package reads that folder (:func:`read_replay`), reconstructs the batch occupancy from the token
times (:func:`occupancy`), predicts the energy of the stream from a fit of the batch-aware model
:data:`energykit.model.BATCHED` (:func:`predict`) and attributes the measured energy to each request
(:func:`attribute`). :func:`simulate` is a continuous-batching simulator driven by a known
:math:`E(i, o, B)`: the page's default replay, and the test that the attribution recovers known energies.

**The stream model.** :data:`~energykit.model.BATCHED` is fitted on isolated batches of ``B`` requests,

.. math:: E(i, o, B) = B (\\theta_1 i^2 + \\theta_2 i o + \\theta_3 i + \\theta_4 o^2 + \\theta_5' o) + \\theta_w o + \\theta_0.

In a stream, a request's *own* terms are its per-request part, :math:`\\theta_1 i^2 + \\theta_3 i`
(prefill, at its first token) and :math:`\\theta_2 i + \\theta_4 (2k + 1) + \\theta_5'` at its ``k``-th
token (``k = 0 … o-1``), which sum to :math:`\\theta_2 i o + \\theta_4 o^2 + \\theta_5' o`. The
*shared* terms are paid once per step whoever is in it: :math:`\\theta_w` per decode step and
:math:`\\theta_0` per admission (a step that prefills newly arrived requests). An isolated batch
(``B`` requests admitted together, ``o`` steps) gives back :math:`E(i, o, B)` exactly. Between
requests, the board draws ``idle_power_w`` (the fit's energies are whole-board, idle included).

**Occupancy.** Request ``r`` emits ``o_r`` tokens, taken as evenly spaced between its first and
last token. The time axis is cut at every first- and last-token time and every meter-window
boundary; the number of steps :math:`s_k \\ge 0` in each piece solves :math:`\\sum_{k \\in r} s_k = o_r - 1`
for every request in least squares (``scipy.optimize.lsq_linear``), pulled towards a prior from the
pieces' durations: steps times a step time linear in the batch, plus a prefill time per prompt token
admitted, fitted (non-negative) on the pieces and refined four times. Admissions are the distinct
first-token times (within a quarter of the shortest step); one into an empty server opens a busy
stretch from the request's sending to its first token. A reply that arrived in one chunk (not
streamed) is taken as decoded over the typical step time before it arrived; a replay where every
reply did is refused.

**Attribution.** (a) *Equal split*: own terms plus, for each step, its shared energy divided equally
among the requests in it; (b) *Shapley*: own terms plus the Shapley value of the shared energy in the
game "serve only the requests ``S`` of this busy period at their arrival times", rescheduled by a
continuous-batching scheduler with the step time fitted on the replay. Where every request's steps
would stay as they were, (b) equals (a) (a step's cost paid once if any member is present is split
equally by Shapley); they differ where removing a request would change who shares steps. Both are
then scaled to what was *measured*: the energy above idle-over-gaps of each run of meter windows
linked by active requests is shared in proportion to each request's modelled energy, so
attributions sum to the measured busy energy, and the residual against the model is reported
beside them.

One module per step, each re-exported here:

- :mod:`~energykit.replay.folder`: the folder read and validated, and written (:class:`Replay`);
- :mod:`~energykit.replay.reconstruction`: batch occupancy from token times (:class:`Occupancy`);
- :mod:`~energykit.replay.features`: the model's features of the stream per window and request (helpers);
- :mod:`~energykit.replay.prediction`: the batch-aware fit to use and the predicted energy;
- :mod:`~energykit.replay.scheduling`: the continuous-batching scheduler, its step time, Shapley values;
- :mod:`~energykit.replay.attribution`: equal split and Shapley, scaled to what was measured;
- :mod:`~energykit.replay.simulation`: the simulated server and a trace's first requests as a stream.

The runner that writes the folder against a live server is :mod:`energykit.replay_run` (a layer above:
it imports the engines and meters; nothing here does).

References
----------
Pizzini Cavagna et al., "Determining Energy Efficiency Sweet Spots in Production LLM Inference",
arXiv:2602.05695 (ICPE 2026) — the per-batch model this extends to a stream.
Shapley, "A value for n-person games", Contributions to the Theory of Games II (1953).
Castro, Gómez and Tejada, "Polynomial calculation of the Shapley value based on sampling",
Computers & Operations Research 36 (2009), doi:10.1016/j.cor.2008.04.004 — the permutation sampling.
"""

from __future__ import annotations

from .attribution import attribute, summary_numbers
from .folder import REQUEST_FIELDS, WINDOW_FIELDS, Replay, read_replay, write_replay
from .prediction import batched_fit, predict, server_fit
from .reconstruction import Occupancy, occupancy
from .scheduling import EXACT_SHAPLEY_MAX, SHAPLEY_MAX, StepTime, schedule, shapley, step_time
from .simulation import SIM_BATCHES, simulate, simulated_server, trace_stream

__all__ = ["REQUEST_FIELDS", "WINDOW_FIELDS", "EXACT_SHAPLEY_MAX", "SHAPLEY_MAX", "Replay", "read_replay", "write_replay",
           "Occupancy", "occupancy", "StepTime", "step_time", "schedule", "predict", "attribute", "shapley",
           "simulate", "batched_fit", "summary_numbers", "trace_stream", "simulated_server", "SIM_BATCHES", "server_fit"]
