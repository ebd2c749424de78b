"""Device policies for a model: one device, an explicit per-layer map, or
``"auto"`` (the planner's choice from measured costs), and the moves that
put each step where its plan says."""

import math
from typing import Callable, NamedTuple

import numpy as np

from ..devices import Device, get_device, gpu_device
from . import costmodel
from .hostspeed import probe
from .planner import Plan, StepPlan, plan_model, repr_step

#: 'auto' times its planned placement against every single-device placement
#: on a few real steps and keeps the fastest (tests with synthetic cost tables
#: turn this off)
CONFIRM_BY_MEASUREMENT = True

#: a placement that splits the model over devices must measure this much
#: faster than the best single-device one to be kept: its transfers make the
#: step wait on both devices, so it suffers the noise of each (a busy host
#: slows it in training where the single-GPU plan is not)
MIXED_MARGIN = 0.10


class Placement:
    """How a model's steps are assigned to devices.

    Parameters
    ----------
    spec : str, Device, or list/tuple
        ``"cpu"``, ``"gpu"``, ``"opencl:P:D"``, ``"numpy"`` or a Device: every
        layer there.  ``"auto"``: the CPU and the first OpenCL GPU, if there is
        one, each layer where the planner predicts the step is fastest.  A
        list with one device spec per layer: that map exactly.
    """

    def __init__(self, spec):
        self.reason = ""
        self.layer_map = None
        if isinstance(spec, (list, tuple)):
            self.policy = "map"
            self.layer_map = [get_device(s) for s in spec]
            self.candidates = list(dict.fromkeys(self.layer_map))
        elif isinstance(spec, str) and spec.strip().lower() == "auto":
            self.policy = "auto"
            gpu, why = gpu_device()
            self.candidates = [get_device("cpu")] + ([gpu] if gpu is not None else [])
            if gpu is None:
                # every line: the list of devices present follows the first
                lines = [l.strip() for l in (why or "").splitlines() if l.strip()]
                first = " ".join(lines) if lines else "none found"
                self.reason = f"no GPU, so every layer runs on the CPU ({first})"
        else:
            self.policy = "fixed"
            self.candidates = [get_device(spec)]
        self.primary = self.candidates[0]
        self._plans = {}

    def build_device(self, layer_index):
        return self.layer_map[layer_index] if self.layer_map is not None else self.primary

    @property
    def needs_costs(self):
        return self.policy == "auto" and len(self.candidates) > 1

    def forget(self, batch, training):
        """Drop the plans kept for ``batch`` and mode ``training`` (with
        any pinned at that size): the next :meth:`plan` makes them again."""
        for key in [k for k in self._plans if k[:2] == (batch, training)]:
            del self._plans[key]

    def plan(self, chain, batch, training, fixed=None, measure_costs=False):
        """The plan for ``batch`` (cached per batch size, mode and pinning).

        Parameters
        ----------
        chain : Chain
            What is placed: the steps (each with ``cost_terms``,
            ``input_shape`` and a ``device``), the per-sample input shape,
            the number of outputs, and ``measure(devices, batch, training,
            repeats) -> seconds``, which places the steps on ``devices``
            and times real steps (:meth:`hetnet.runtime.Runtime.measure_placement`).
        """
        steps = chain.steps
        key = (batch, training, None if fixed is None else tuple(id(d) for d in fixed))
        cached = self._plans.get(key)
        if cached is not None and (not measure_costs or cached.has_predictions):
            return cached
        if cached is not None:
            # predictions for the placement already in use; never a new choice
            fixed = list(cached.devices)
        if self.policy == "map":
            fixed = [step.device for step in steps]
        elif self.policy == "fixed" or not self.needs_costs:
            fixed = [self.primary] * len(steps)
        if self.needs_costs or measure_costs:
            devices = self.candidates if self.policy == "auto" else list(dict.fromkeys(fixed))
            tables = {d.name: costmodel.cost_table(d) for d in devices}
            in_bytes = 4 * batch * math.prod(chain.input_shape)

            def plan_for(pinned):
                return plan_model(steps, batch, devices, tables, training, self.policy, pinned,
                                  input_bytes=in_bytes, label_bytes=4 * batch,
                                  output_bytes=4 * batch * chain.n_outputs)
            plan = plan_for(fixed)
            if cached is not None:
                plan.policy, plan.reason = cached.policy, cached.reason
                self._plans[key] = plan
                return plan
            if self.needs_costs and fixed is None and CONFIRM_BY_MEASUREMENT:
                plan = self._confirm(chain, plan, plan_for, batch, training)
        else:
            plan = Plan(batch, training, self.policy, list(fixed))
            plan.steps = [StepPlan(repr_step(s), d.name, float("nan"), 0.0, 0)
                          for s, d in zip(steps, fixed)]
        plan.reason = "; ".join(r for r in (self.reason, plan.reason) if r)
        self._plans[key] = plan
        return plan


    def _confirm(self, chain, planned, plan_for, batch, training, repeats=5, rounds=5):
        """Time the planned placement and each single-device one on a few
        real steps; return the plan of the fastest, its reason saying what
        was measured.  Cost models miss what only a run shows (caches,
        threads waking, driver overheads); this keeps 'auto' from ever being
        much slower than the best single device."""
        options = [("planned", planned)]
        for dev in self.candidates:
            alt = plan_for([dev] * len(chain.steps))
            if alt.devices != planned.devices:
                options.append((dev.name, alt))
        if len(options) == 1:
            return planned
        timed = [[[], label, plan] for label, plan in options]
        # interleaved rounds, so a drift of the host's speed hits all; one
        # more first, not counted: a placement's first window can run slow
        # (first use of its buffers, devices waking up; docs/performance.md,
        # "First timing window")
        probes = []             # the host's speed at each round (hetnet.sched.hostspeed)
        for _ in range(rounds + 1):
            probes.append(probe())
            for entry in timed:
                entry[0].append(chain.measure(entry[2].devices, batch, training, repeats))
        every_round = {label: list(ts) for ts, label, _ in timed}
        for entry in timed:         # the median: one slow (or lucky) window weighs nothing
            entry[0] = float(np.median(entry[0][1:]))
        best = min(timed, key=lambda t: t[0])
        single = min((t for t in timed if len(set(t[2].devices)) == 1), key=lambda t: t[0],
                     default=None)
        note = ""
        if single is not None and best is not single and best[0] > (1 - MIXED_MARGIN) * single[0]:
            note = f" (a mixed placement must be {MIXED_MARGIN:.0%} faster)"
            best = single
        # in-step factors: what a real step of this model takes on each device
        # over what its tables predict (caches, threads, launch paths that
        # isolated operations do not show); they correct the chosen plan's
        # predictions, the table-only figure is kept beside them
        factors = {t[2].devices[0].name: t[0] / t[2].predicted_step_s for t in timed
                   if len(set(t[2].devices)) == 1 and t[2].predicted_step_s > 0}
        best[2].apply_step_factors(factors)
        best[2].confirm_rounds_s = every_round
        best[2].host_probe_s = float(np.median(probes[1:]))
        best[2].reason = "measured per step: " + ", ".join(
            f"{label} {t * 1e3:.3f} ms" for t, label, _ in timed) + f"; chose {best[1]}{note}"
        best[2].reason += "; in-step factors " + ", ".join(
            f"{name.split(':')[-1]} x{f:.2f}" for name, f in factors.items())
        return best[2]


class Chain(NamedTuple):
    """What the scheduler places: no model, only what planning reads.

    Attributes
    ----------
    steps : list
        The steps in order, each with ``cost_terms(batch, need_dx)``,
        ``input_shape`` (per sample) and ``device``.
    input_shape : tuple
        Per-sample input shape of the first step.
    n_outputs : int
        Outputs per sample of the last step.
    measure : callable
        ``measure(devices, batch, training, repeats) -> seconds``: place
        step ``i`` on ``devices[i]`` and time real steps there.
    """
    steps: list
    input_shape: tuple
    n_outputs: int
    measure: Callable


__all__ = ["Placement", "Chain", "CONFIRM_BY_MEASUREMENT", "MIXED_MARGIN"]
