"""Placement: which device runs each layer, chosen so that predicted compute
plus transfer time per step is least.

A model is a chain of steps (layers after activation fusion).  Choosing a
device per step is a shortest path through a layered graph: one node per
(step, device) weighted by that step's compute time there, one edge per pair
of devices between consecutive steps weighted by the time to move the
activation forward (and its gradient back, in training) between them.
:func:`shortest_chain` solves it exactly by dynamic programming in
``O(steps * devices**2)``; :func:`brute_force_chain` enumerates every
assignment (for tests).
"""

import itertools
import math
from dataclasses import dataclass, field

from .hostspeed import speed_note


def shortest_chain(node_costs, edge_costs, start_costs, end_costs):
    """Cheapest assignment of one device per step.

    Parameters
    ----------
    node_costs : list (steps) of list (devices) of float
        Cost of running step i on device d (``math.inf`` forbids it).
    edge_costs : list (steps) of 2-D list
        ``edge_costs[i][a][b]``: cost of going from device a (step i-1) to
        device b (step i); ``edge_costs[0]`` is ignored.
    start_costs, end_costs : list (devices) of float
        Cost of bringing the input to the first step's device, and of the
        output (loss, labels) on the last step's device.

    Returns
    -------
    (total, assignment) : float, list of device indices
    """
    n_dev = len(start_costs)
    best = [start_costs[d] + node_costs[0][d] for d in range(n_dev)]
    back = []
    for i in range(1, len(node_costs)):
        prev, best, choice = best, [], []
        for d in range(n_dev):
            costs = [prev[a] + edge_costs[i][a][d] for a in range(n_dev)]
            a = min(range(n_dev), key=costs.__getitem__)
            best.append(costs[a] + node_costs[i][d])
            choice.append(a)
        back.append(choice)
    final = [best[d] + end_costs[d] for d in range(n_dev)]
    d = min(range(n_dev), key=final.__getitem__)
    total = final[d]
    assignment = [d]
    for choice in reversed(back):
        d = choice[d]
        assignment.append(d)
    return total, assignment[::-1]


def chain_cost(assignment, node_costs, edge_costs, start_costs, end_costs):
    """Total cost of a given assignment (same arguments as :func:`shortest_chain`)."""
    total = start_costs[assignment[0]] + end_costs[assignment[-1]]
    for i, d in enumerate(assignment):
        total += node_costs[i][d]
        if i:
            total += edge_costs[i][assignment[i - 1]][d]
    return total


def brute_force_chain(node_costs, edge_costs, start_costs, end_costs):
    """Every assignment tried; the reference the tests hold the DP to."""
    best = (math.inf, None)
    for assignment in itertools.product(range(len(start_costs)), repeat=len(node_costs)):
        c = chain_cost(list(assignment), node_costs, edge_costs, start_costs, end_costs)
        if c < best[0]:
            best = (c, list(assignment))
    return best


@dataclass
class StepPlan:
    """One step of a plan: where it runs and what it is predicted to cost."""
    name: str
    device: str
    predicted_s: float          # compute (forward [+ backward + update])
    transfer_s: float           # moving its input (and gradient) in from the previous step
    bytes_moved: int
    measured_s: float = None


@dataclass
class Plan:
    """A placement of a model's steps at one batch size."""
    batch_size: int
    training: bool
    policy: str
    devices: list               # Device per step
    steps: list = field(default_factory=list)   # StepPlan per step
    input_s: float = 0.0        # batch (and labels) to the first / last device
    output_s: float = 0.0
    reason: str = ""
    measured_step_s: float = None
    #: the prediction from the cost tables alone, before :meth:`apply_step_factors`
    table_step_s: float = None
    #: what 'auto' timed while choosing: ``{option: [seconds per step, per round]}``,
    #: the warm-up round first (not counted)
    confirm_rounds_s: dict = None
    #: the host's speed (:func:`hetnet.sched.hostspeed.probe`, seconds) while 'auto'
    #: timed its options, and while :meth:`Sequential.explain` measured
    host_probe_s: float = None
    explain_host_probe_s: float = None

    @property
    def has_predictions(self):
        return all(s.predicted_s == s.predicted_s for s in self.steps)   # no NaN

    @property
    def predicted_step_s(self):
        return self.input_s + self.output_s + sum(s.predicted_s + s.transfer_s for s in self.steps)

    def apply_step_factors(self, factors):
        """Correct the predictions with in-step factors: ``factors[device
        name]`` is a real step's time over its table prediction, measured
        on this model and batch size with every step on that device (see
        :meth:`hetnet.sched.placement.Placement._confirm`).  Each step's compute,
        and the input and output costs of the first and last device, are
        scaled by their device's factor; transfers between devices are not.
        The table-only prediction stays in :attr:`table_step_s`."""
        if self.table_step_s is None:
            self.table_step_s = self.predicted_step_s
        for s in self.steps:
            s.predicted_s *= factors.get(s.device, 1.0)
        self.input_s *= factors.get(self.devices[0].name, 1.0)
        self.output_s *= factors.get(self.devices[-1].name, 1.0)

    @property
    def bytes_moved(self):
        return sum(s.bytes_moved for s in self.steps)

    def table(self):
        """The plan as text: layer, device, predicted ms, measured ms, bytes moved."""
        rows = [f"plan for batch {self.batch_size} ({'training' if self.training else 'inference'}),"
                f" policy {self.policy!r}" + (f": {self.reason}" if self.reason else ""),
                f"{'step':<34}{'device':<28}{'pred ms':>9}{'meas ms':>9}{'bytes moved':>13}"]
        for s in self.steps:
            meas = "" if s.measured_s is None else f"{s.measured_s * 1e3:9.3f}"
            rows.append(f"{s.name[:33]:<34}{s.device[:27]:<28}{(s.predicted_s + s.transfer_s) * 1e3:9.3f}"
                        f"{meas:>9}{s.bytes_moved:>13,}")
        meas = "" if self.measured_step_s is None else f"{self.measured_step_s * 1e3:9.3f}"
        rows.append(f"{'input/output transfers, per-step overhead':<62}{(self.input_s + self.output_s) * 1e3:9.3f}")
        rows.append(f"{'total per step':<62}{self.predicted_step_s * 1e3:9.3f}{meas:>9}"
                    f"{self.bytes_moved:>13,}")
        if self.table_step_s is not None:
            rows.append(f"{'  (from the cost tables alone)':<62}{self.table_step_s * 1e3:9.3f}")
        note = speed_note(self.host_probe_s, self.explain_host_probe_s)
        if note:
            rows.append(f"note: {note}")
        return "\n".join(rows)

    def __str__(self):
        return self.table()


def step_costs(step, table, batch, training, need_dx, flat_update=False):
    """Predicted seconds of one step on the device whose cost table is given.

    With ``flat_update`` (the device's parameters are updated in one launch
    a step, :mod:`hetnet.runtime.flatparams`) a step's updates cost only their
    work: the table's time for their size less its time for the smallest
    (the launch).  The one launch a step is part of the device's measured
    per-step overhead (:func:`hetnet.sched.costmodel.measure_overheads` times real
    steps)."""
    fwd, bwd, upd = step.cost_terms(batch, need_dx)
    terms = fwd + (bwd + ([] if flat_update else upd) if training else [])
    seconds = table.predict_terms(terms) + table.overhead("layer", training)
    if training and flat_update and upd:
        size = sum(t[1] for t in upd)
        seconds += max(0.0, table.predict("update", size) - table.predict("update", 1))
    return seconds


def plan_model(steps, batch, devices, tables, training=True, policy="auto", fixed=None,
               input_bytes=0, label_bytes=0, output_bytes=0):
    """Choose a device per step.

    Parameters
    ----------
    steps : list of Layer (built)
    batch : int
    devices : list of Device (candidates)
    tables : dict device name -> CostTable
    fixed : list of (Device or None) per step, optional
        Steps pinned to a device (an explicit map, or parameters that must stay home).
    input_bytes, label_bytes, output_bytes : int
        The batch brought from the host, the labels to the loss, and what
        inference reads back.
    """
    nd = len(devices)
    node, edge = [], []
    act_bytes = []
    for i, step in enumerate(steps):
        need_dx = i > 0
        row = []
        for d, dev in enumerate(devices):
            if fixed is not None and fixed[i] is not None and fixed[i] is not dev:
                row.append(math.inf)
            else:
                row.append(step_costs(step, tables[dev.name], batch, training, need_dx,
                                      dev.flat_update))
        node.append(row)
        nbytes = 4 * batch * int(math.prod(step.input_shape))
        act_bytes.append(nbytes)
        edge.append([[0.0 if a == b else _move(tables, devices[a], devices[b], nbytes, training)
                      for b in range(nd)] for a in range(nd)])
    # the batch gathered from the data set and brought to the first device
    start = [tables[dev.name].predict("gather_rows", input_bytes)
             + tables[dev.name].overhead("step", training) for dev in devices]
    # the fused loss (training) or the read-back of the outputs (inference) on the last device
    outputs = output_bytes // 4
    if training:
        end = [tables[dev.name].predict("to_device", label_bytes)
               + tables[dev.name].predict("loss", outputs) for dev in devices]
    else:
        end = [tables[dev.name].predict("to_host", output_bytes) for dev in devices]
    total, assignment = shortest_chain(node, edge, start, end)
    plan = Plan(batch, training, policy, [devices[d] for d in assignment])
    plan.input_s = start[assignment[0]]
    plan.output_s = end[assignment[-1]]
    for i, (step, d) in enumerate(zip(steps, assignment)):
        moved = act_bytes[i] * (2 if training else 1) if i and assignment[i - 1] != d else 0
        plan.steps.append(StepPlan(repr_step(step), devices[d].name, node[i][d],
                                   edge[i][assignment[i - 1]][d] if i else 0.0, moved))
    return plan


def _move(tables, src, dst, nbytes, training):
    """Time to move an activation from src to dst (and, in training, its
    gradient back): device -> host -> device, each leg from its own table."""
    there = tables[src.name].predict("to_host", nbytes) + tables[dst.name].predict("to_device", nbytes)
    if not training:
        return there
    back = tables[dst.name].predict("to_host", nbytes) + tables[src.name].predict("to_device", nbytes)
    return there + back


def repr_step(step):
    name = type(step).__name__
    act = getattr(step, "activation", "identity")
    return name + (f"+{act}" if act != "identity" else "")
