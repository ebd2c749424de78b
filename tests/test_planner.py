"""The planner: the exact shortest chain and plans from cost tables."""

import math

import numpy as np
import pytest

import hetnet as hn
from hetnet.sched import placement as placement_mod
from hetnet.sched.costmodel import CostTable, OPERATIONS, OVERHEADS, TRANSFERS, SHAPED, geometry_key
from hetnet.devices.cpu import CPUDevice
from hetnet.devices.reference import NumpyDevice
from hetnet.sched.planner import Plan, shortest_chain, brute_force_chain, chain_cost, plan_model

from conftest import assert_close
from sched_fakes import CPU_TABLE, GPU_TABLE, FakeGPU, SlowGPU, lenet, synthetic_table  # noqa: F401


# ------------------------------------------------------------------ the DP
@pytest.mark.parametrize("trial", range(60))
def test_shortest_chain_matches_brute_force(trial):
    rng = np.random.default_rng(trial)
    steps, devs = int(rng.integers(1, 7)), int(rng.integers(1, 4))
    node = rng.exponential(1.0, (steps, devs))
    node[rng.random((steps, devs)) < 0.1] = math.inf          # some placements forbidden
    node[:, 0] = np.minimum(node[:, 0], 5.0)                    # device 0 always allowed
    edge = rng.exponential(0.5, (steps, devs, devs))
    for d in range(devs):
        edge[:, d, d] = 0.0
    start, end = rng.exponential(0.3, devs), rng.exponential(0.3, devs)
    args = (node.tolist(), edge.tolist(), start.tolist(), end.tolist())
    total, assign = shortest_chain(*args)
    best, _ = brute_force_chain(*args)
    assert total == pytest.approx(best)
    assert chain_cost(assign, *args) == pytest.approx(total)



def test_plans_follow_batch_size():
    cpu, gpu = CPUDevice(num_threads=1), FakeGPU()
    model = lenet(cpu)
    tables = {"cpu": CPU_TABLE, "fakegpu": GPU_TABLE}
    small = plan_model(model._steps, 1, [cpu, gpu], tables, training=False)
    large = plan_model(model._steps, 1024, [cpu, gpu], tables, training=True)
    assert {d.name for d in small.devices} == {"cpu"}          # launch latency dominates
    assert large.devices[0].name == "fakegpu"                  # the big convolution moves
    assert large.predicted_step_s == pytest.approx(sum(
        s.predicted_s + s.transfer_s for s in large.steps) + large.input_s + large.output_s)


def test_flat_update_costs_the_updates_work_not_their_launches():
    """On a device that updates every parameter in one launch (flat_update)
    a step's updates cost their size's time less a launch, not one launch each."""
    from hetnet.sched.planner import step_costs
    step = lenet(CPUDevice(num_threads=1))._steps[0]          # conv: W and b
    sizes = [t[1] for t in step.cost_terms(64)[2]]
    assert len(sizes) == 2
    per_array = step_costs(step, GPU_TABLE, 64, True, True)
    flat = step_costs(step, GPU_TABLE, 64, True, True, flat_update=True)
    launch = GPU_TABLE.predict("update", 1)
    assert flat == pytest.approx(per_array - sum(GPU_TABLE.predict("update", n) for n in sizes)
                                 + GPU_TABLE.predict("update", sum(sizes)) - launch)
    assert per_array - flat > launch                          # two launches became none
    assert step_costs(step, GPU_TABLE, 64, False, True, flat_update=True) == \
        step_costs(step, GPU_TABLE, 64, False, True)          # inference: no updates


def test_plan_is_exact_on_a_real_model():
    """The DP's plan for LeNet-5 costs no more than any of the 3**8 placements."""
    import itertools
    cpu, gpu, gpu2 = CPUDevice(num_threads=1), FakeGPU(), FakeGPU()
    gpu2.name = "fakegpu2"
    t2 = synthetic_table("fakegpu2", latency=10e-6, per_unit=2e-10, transfer_latency=5e-6, per_byte=5e-10)
    tables = {"cpu": CPU_TABLE, "fakegpu": GPU_TABLE, "fakegpu2": t2}
    devices = [cpu, gpu, gpu2]
    model = lenet(cpu)
    for batch in (1, 64, 1024):
        plan = plan_model(model._steps, batch, devices, tables, training=True, input_bytes=4 * 784 * batch,
                          label_bytes=4 * batch)
        best = math.inf
        for assign in itertools.product(range(3), repeat=len(model._steps)):
            sub = plan_model(model._steps, batch, devices, tables, training=True,
                             fixed=[devices[a] for a in assign], input_bytes=4 * 784 * batch,
                             label_bytes=4 * batch)
            best = min(best, sub.predicted_step_s)
        assert plan.predicted_step_s == pytest.approx(best)
