"""The scheduler: exact placement, policies, re-planning, mixed-device training."""

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


# --------------------------------------------------- synthetic cost tables
class FakeGPU(NumpyDevice):
    """A second device for planning tests: numpy arrays, GPU-like costs."""
    kind = "gpu"

    def __init__(self):
        super().__init__()
        self.name = "fakegpu"


def synthetic_table(name, latency, per_unit, transfer_latency, per_byte, slow=()):
    """Time = latency + size * per_unit for every operation (sizes: elements,
    or batch for the shaped ones, taken as 1e3 units per sample); the
    operations in ``slow`` cost 1000 times more."""
    # a point at every power of ten: tables interpolate between points on
    # log scales, which bends a straight line drawn from two far-apart points
    pts = {op: [(10.0 ** k, latency + 10.0 ** k * per_unit) for k in range(10)]
           for op in OPERATIONS}
    pts.update({op: [(10.0 ** k, transfer_latency + 10.0 ** k * per_byte) for k in range(11)]
                for op in TRANSFERS})
    table = CostTable(name, pts)
    table.per_sample = {op: (latency, per_unit * 1e3) for op in SHAPED}
    for op in slow:
        if op in SHAPED:
            table.per_sample[op] = tuple(1000 * v for v in table.per_sample[op])
        else:
            table.points[op] = [(s, 1000 * t) for s, t in table.points[op]]
    real_predict = table.predict

    def predict(op, size, geometry=None):
        if geometry is not None:
            lat, per = table.per_sample[op]
            return lat + size * per
        return real_predict(op, size)

    table.predict = predict
    return table


CPU_TABLE = synthetic_table("cpu", latency=2e-6, per_unit=2e-9, transfer_latency=1e-7, per_byte=1e-10)
GPU_TABLE = synthetic_table("fakegpu", latency=40e-6, per_unit=2e-11, transfer_latency=20e-6, per_byte=1e-10)


def lenet(device):
    return hn.models.lenet5(seed=0, device=device, input_shape=(1, 28, 28))


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


# ------------------------------------------------------------- policies
def test_auto_without_gpu_uses_cpu_and_says_why(monkeypatch):
    monkeypatch.setattr(placement_mod, "gpu_device", lambda: (None, "no OpenCL GPU here"))
    model = hn.models.lenet5(seed=0, device="auto", input_shape=(1, 28, 28))
    plan = model.plan(64)
    assert {d.name for d in plan.devices} == {"cpu"}
    assert "no GPU" in plan.reason and "no OpenCL GPU here" in plan.reason
    assert "no GPU" in str(plan)


def _auto_with_fake_gpu(monkeypatch):
    # plans from the synthetic tables alone: no confirming run on the real devices
    monkeypatch.setattr(placement_mod, "CONFIRM_BY_MEASUREMENT", False)
    gpu = FakeGPU()
    monkeypatch.setattr(placement_mod, "gpu_device", lambda: (gpu, None))
    # a GPU that is poor at pooling, so that 'auto' mixes devices
    tables = {"fakegpu": synthetic_table("fakegpu", 40e-6, 2e-11, 20e-6, 1e-10,
                                         slow=("maxpool2d", "maxpool2d_backward"))}
    import hetnet.sched.costmodel as cm
    real = cm.cost_table
    monkeypatch.setattr(cm, "cost_table", lambda d, recalibrate=False:
                        tables.get(d.name) or CPU_TABLE)
    return gpu, real


def test_auto_replans_with_batch_size(monkeypatch):
    gpu, _ = _auto_with_fake_gpu(monkeypatch)
    model = hn.models.lenet5(seed=0, device="auto", input_shape=(1, 28, 28))
    assert {d.name for d in model.plan(1, training=False).devices} == {"cpu"}
    assert gpu in model.plan(1024).devices                     # large batches use the GPU
    rng = np.random.default_rng(0)
    X = rng.random((5, 1, 28, 28)).astype(np.float32)
    model.predict(X, batch_size=1)                              # batch 1: all on the CPU
    assert {s.device.name for s in model._steps} == {"cpu"}


def test_auto_mixed_plan_trains_like_cpu(monkeypatch):
    """'auto' with a (fake) GPU puts the convolutions there at batch 1024
    and trains to the same weights as the CPU alone."""
    _auto_with_fake_gpu(monkeypatch)
    rng = np.random.default_rng(1)
    X = rng.random((2100, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 2100)
    auto = hn.models.lenet5(seed=3, device="auto")
    cpu = hn.models.lenet5(seed=3, device=CPUDevice(num_threads=2))
    for m in (auto, cpu):
        m.fit(X, y, epochs=1, batch_size=1024, optimizer=hn.SGD(0.05, momentum=0.9))
    assert len({s.device.name for s in auto._steps}) == 2      # a mixed plan was used
    for a, b in zip(auto.get_weights(), cpu.get_weights()):
        assert_close(a, b, rtol=1e-4, what="auto vs cpu weights")
    assert auto.evaluate(X, y)["loss"] == pytest.approx(cpu.evaluate(X, y)["loss"], rel=1e-4)


class SlowGPU(FakeGPU):
    """A (fake) GPU whose convolutions are secretly slow: the cost tables say
    it is fast, a run says otherwise."""

    def conv2d(self, *args, **kwargs):
        import time
        time.sleep(0.02)
        return super().conv2d(*args, **kwargs)


def test_auto_confirms_its_plan_by_measurement(monkeypatch):
    gpu = SlowGPU()
    monkeypatch.setattr(placement_mod, "gpu_device", lambda: (gpu, None))
    import hetnet.sched.costmodel as cm
    monkeypatch.setattr(cm, "cost_table", lambda d, recalibrate=False:
                        GPU_TABLE if d is gpu else CPU_TABLE)
    model = hn.models.lenet5(seed=0, device="auto", input_shape=(1, 28, 28))
    plan = model.plan(1024)
    assert {d.name for d in plan.devices} == {"cpu"}           # the slow convolutions lost
    assert "measured per step" in plan.reason and "chose cpu" in plan.reason
    assert "planned" in plan.reason                             # the DP's plan was timed too


@pytest.mark.parametrize("mixed_s,keeps_mixed", [(0.95, False), (0.85, True)])
def test_mixed_plan_must_win_by_a_margin(monkeypatch, mixed_s, keeps_mixed):
    """A measured split over devices is kept only when clearly (MIXED_MARGIN)
    faster than the best single device; else that device runs every layer."""
    gpu, _ = _auto_with_fake_gpu(monkeypatch)
    monkeypatch.setattr(placement_mod, "CONFIRM_BY_MEASUREMENT", True)
    model = hn.models.lenet5(seed=0, device="auto", input_shape=(1, 28, 28))

    def fake_measure(batch, training, repeats=3):
        names = {s.device.name for s in model._steps}
        return mixed_s if len(names) == 2 else (1.0 if names == {"cpu"} else 1.2)
    monkeypatch.setattr(model, "_measure_step", fake_measure)
    plan = model.plan(1024)
    assert (len({d.name for d in plan.devices}) == 2) == keeps_mixed
    if not keeps_mixed:
        assert {d.name for d in plan.devices} == {"cpu"} and "must be 10% faster" in plan.reason


def test_in_step_factors_correct_the_prediction(monkeypatch):
    """The real steps auto times while it plans turn into per-device factors
    that correct the chosen plan's predicted times; the table-only figure is
    kept, and a single-device plan then predicts what its steps measured."""
    gpu, _ = _auto_with_fake_gpu(monkeypatch)
    monkeypatch.setattr(placement_mod, "CONFIRM_BY_MEASUREMENT", True)
    model = hn.models.lenet5(seed=0, device="auto", input_shape=(1, 28, 28))
    measured = {"cpu": 0.004, "fakegpu": 0.009}

    def fake_measure(batch, training, repeats=3):
        names = {s.device.name for s in model._steps}
        return measured[names.pop()] if len(names) == 1 else 1.0      # mixed plans lose
    monkeypatch.setattr(model, "_measure_step", fake_measure)
    plan = model.plan(64)
    assert {d.name for d in plan.devices} == {"cpu"}
    assert plan.table_step_s > 0 and plan.table_step_s != pytest.approx(0.004)
    assert plan.predicted_step_s == pytest.approx(0.004)
    assert "in-step factors" in plan.reason and "(from the cost tables alone)" in plan.table()
    factor = 0.004 / plan.table_step_s
    assert f"cpu x{factor:.2f}" in plan.reason


def test_refresh_plans_again_and_fit_follows(monkeypatch):
    """A plan is kept per batch size; plan(refresh=True) times the
    placements again, and the next fit runs the new one.  The inference plan
    at that size is not touched."""
    gpu, _ = _auto_with_fake_gpu(monkeypatch)
    monkeypatch.setattr(placement_mod, "CONFIRM_BY_MEASUREMENT", True)
    model = hn.models.lenet5(seed=0, device="auto", input_shape=(1, 28, 28))
    measured = {"cpu": 0.004, "fakegpu": 0.009}
    calls = []

    def fake_measure(batch, training, repeats=3):
        calls.append(batch)
        names = {s.device.name for s in model._steps}
        return measured[names.pop()] if len(names) == 1 else 1.0      # mixed plans lose
    monkeypatch.setattr(model, "_measure_step", fake_measure)
    first = model.plan(64)
    inference = model.plan(64, training=False)
    assert {d.name for d in first.devices} == {"cpu"}
    measured.update(cpu=0.009, fakegpu=0.004)          # the host got busy
    n = len(calls)
    assert model.plan(64) is first and len(calls) == n  # kept: nothing timed
    again = model.plan(64, refresh=True)
    assert len(calls) > n and again is not first
    assert {d.name for d in again.devices} == {"fakegpu"}
    assert again.predicted_step_s == pytest.approx(0.004)
    assert model.plan(64, training=False) is inference
    rng = np.random.default_rng(0)
    X, y = rng.random((128, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 128)
    model.fit(X, y, epochs=1, batch_size=64, optimizer="sgd")
    assert {s.device.name for s in model._steps} == {"fakegpu"}
    with pytest.raises(TypeError, match="refresh"):
        model.plan(64, refresh="yes")
    with pytest.raises(ValueError, match="batch_size"):
        model.plan(0)


def test_first_confirmation_round_is_a_warm_up(monkeypatch):
    """The first round of auto's timed steps runs on devices still waking up;
    it is recorded but neither the choice nor the in-step factors count it."""
    gpu, _ = _auto_with_fake_gpu(monkeypatch)
    monkeypatch.setattr(placement_mod, "CONFIRM_BY_MEASUREMENT", True)
    monkeypatch.setattr(placement_mod.Placement._confirm, "__defaults__", (5, 5))
    model = hn.models.lenet5(seed=0, device="auto", input_shape=(1, 28, 28))
    # per call: a lucky first window, then the steady state; counted with the
    # first, the CPU's median would be 5 ms and the GPU's 8
    windows = {"cpu": [0.001, 0.004, 0.004, 0.006, 0.006, 0.006],
               "fakegpu": [0.001, 0.007, 0.007, 0.009, 0.009, 0.009]}
    calls = {}

    def fake_measure(batch, training, repeats=3):
        names = {s.device.name for s in model._steps}
        if len(names) > 1:
            return 1.0                                               # mixed plans lose
        name = names.pop()
        calls[name] = calls.get(name, 0) + 1
        return windows[name][calls[name] - 1]
    monkeypatch.setattr(model, "_measure_step", fake_measure)
    plan = model.plan(64)
    assert calls == {"cpu": 6, "fakegpu": 6}                         # 5 rounds + the warm-up
    assert {d.name for d in plan.devices} == {"cpu"}
    assert plan.predicted_step_s == pytest.approx(0.006)
    assert "cpu 6.000 ms" in plan.reason or "planned 6.000 ms" in plan.reason
    assert "fakegpu 9.000 ms" in plan.reason
    assert plan.confirm_rounds_s["fakegpu"] == windows["fakegpu"]


def test_confirmation_records_the_hosts_speed(monkeypatch):
    """auto probes the host's speed before each round of its timed steps
    and keeps the median of the counted rounds' probes on the plan."""
    _auto_with_fake_gpu(monkeypatch)
    monkeypatch.setattr(placement_mod, "CONFIRM_BY_MEASUREMENT", True)
    monkeypatch.setattr(placement_mod.Placement._confirm, "__defaults__", (5, 5))
    probes = iter([9.0, 1.0, 5.0, 2.0, 4.0, 3.0])      # the warm-up round's first
    monkeypatch.setattr(placement_mod, "probe", lambda: next(probes))
    model = hn.models.lenet5(seed=0, device="auto", input_shape=(1, 28, 28))
    monkeypatch.setattr(model, "_measure_step", lambda batch, training, repeats=3: 0.001)
    plan = model.plan(64)
    assert plan.host_probe_s == 3.0


def test_host_probe_is_a_fixed_single_threaded_unit():
    from hetnet.sched import hostspeed
    t = hostspeed.probe(reps=2, groups=3)
    assert 0 < t < 1
    assert hostspeed._STATE["device"].num_threads == 1
    assert hostspeed._STATE["a"].shape == (hostspeed.SIZE, hostspeed.SIZE)


@pytest.mark.parametrize("planned,now,expect", [
    (10e-6, 11e-6, ""), (10e-6, None, ""), (None, 10e-6, ""),
    (10e-6, 15e-6, "1.50x slower"), (15e-6, 10e-6, "1.50x faster")])
def test_speed_note_says_when_the_host_changed_speed(planned, now, expect):
    from hetnet.sched.hostspeed import speed_note
    note = speed_note(planned, now)
    assert (expect in note) if expect else note == ""
    plan = Plan(16, True, "auto", [], host_probe_s=planned, explain_host_probe_s=now)
    assert ("note: the host runs" in plan.table()) == bool(expect)



def _map_devices():
    from conftest import working_opencl_device
    # no OpenCL: two CPU devices still exercise every transfer
    return [CPUDevice(num_threads=2), working_opencl_device() or CPUDevice(num_threads=1)]


def test_explicit_map_trains_like_cpu():
    a, b = _map_devices()
    rng = np.random.default_rng(2)
    X = rng.random((300, 1, 12, 12)).astype(np.float32)
    y = rng.integers(0, 4, 300)

    def layers():
        return [hn.Conv2D(1, 4, 3, padding=1), hn.ReLU(), hn.MaxPool2D(2), hn.Flatten(),
                hn.Dense(144, 16), hn.Tanh(), hn.Dense(16, 4)]

    mixed = hn.Sequential(layers(), device=[b, b, a, a, b, b, a], seed=5)
    plain = hn.Sequential(layers(), device=a, seed=5)
    for m in (mixed, plain):
        m.fit(X, y, epochs=2, batch_size=64, optimizer=hn.SGD(0.05, momentum=0.9))
    assert [s.device for s in mixed._steps] == [b, a, a, b, a]
    for w1, w2 in zip(mixed.get_weights(), plain.get_weights()):
        assert_close(w1, w2, rtol=1e-4, what="mixed vs single-device weights")
    moved = sum(d.transfers["to_host"] for d in (a, b))
    assert moved > 0
    np.testing.assert_array_equal(mixed.predict(X), plain.predict(X))


def test_map_length_is_checked():
    with pytest.raises(ValueError, match="needs 3 entries"):
        hn.Sequential([hn.Dense(2, 2), hn.ReLU(), hn.Dense(2, 2)], device=["cpu", "cpu"])


def test_explain_reports_predicted_and_measured(tmp_path, monkeypatch):
    monkeypatch.setenv("HETNET_CACHE_DIR", str(tmp_path))
    model = hn.Sequential([hn.Conv2D(1, 2, 3), hn.ReLU(), hn.MaxPool2D(2), hn.Flatten(),
                           hn.Dense(18, 3)], seed=0, input_shape=(1, 8, 8),
                          device=CPUDevice(num_threads=1))
    w0 = model.get_weights()
    plan = model.explain(batch_size=8, repeats=2)
    text = str(plan)
    assert "pred ms" in text and "meas ms" in text and "total per step" in text
    assert all(s.measured_s is not None and s.measured_s >= 0 for s in plan.steps)
    assert plan.measured_step_s > 0 and plan.predicted_step_s > 0
    assert 0 < plan.explain_host_probe_s < 1                     # the host's speed, recorded
    for a, b in zip(w0, model.get_weights()):
        np.testing.assert_array_equal(a, b)                     # explain changes no weight
    assert list(tmp_path.glob("costs-*.json"))                  # the calibration was cached


# ------------------------------------------------------------- cost model
def test_cost_table_interpolates_in_log_space():
    t = CostTable("x", {"elementwise": [(10, 1e-6), (1000, 1e-4)]})
    assert t.predict("elementwise", 1) == pytest.approx(1e-6)         # flat below
    assert t.predict("elementwise", 100) == pytest.approx(1e-5)       # log-log midpoint
    assert t.predict("elementwise", 10000) == pytest.approx(1e-3)     # proportional above
    assert t.predict("elementwise", 0) == 0.0
    with pytest.raises(KeyError):
        t.predict("gemm", 5)


def test_cost_table_drops_points_above_a_larger_size():
    """A point measured slower than a larger size (a busy moment) is lowered
    to that time: sizes never get cheaper as they grow."""
    t = CostTable("x", {"elementwise": [(10, 1e-6), (100, 9e-5), (1000, 2e-5), (10000, 1e-4)]})
    assert [p[1] for p in t.points["elementwise"]] == [1e-6, 2e-5, 2e-5, 1e-4]
    assert t.predict("elementwise", 300) == pytest.approx(2e-5)
    assert t.predict("elementwise", 100000) == pytest.approx(1e-3)


def test_geometry_points_measured_later_are_monotone(tmp_path, monkeypatch):
    """Geometries measured on demand get the same clean-up as the table."""
    from hetnet.sched import costmodel
    noisy = {"gemm@g": [(8, 5e-4), (1, 1e-5), (64, 1e-4)]}
    monkeypatch.setattr(costmodel, "measure_geometry", lambda device, geometry: noisy)
    monkeypatch.setattr(costmodel, "geometry_key", lambda geometry: "g")
    t = CostTable("x", {}, device=object())
    assert t.predict("gemm", 8, geometry=("dense", 1, 1)) == pytest.approx(1e-4)
    assert t.points["gemm@g"] == [(1.0, 1e-5), (8.0, 1e-4), (64.0, 1e-4)]


def test_measured_step_fills_its_window(monkeypatch):
    """A step far shorter than the window is repeated until the window is
    full, so one slow moment of the host weighs little."""
    model = hn.models.mlp([8, 4, 3], seed=0, device="cpu")
    model.build((8,))
    calls = []
    from hetnet.runtime import timing
    real = timing.timed_step
    monkeypatch.setattr(timing, "timed_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    t = model._measure_step(1, True, repeats=3, min_seconds=0.05)
    assert t > 0 and len(calls) > 3 + 2
    calls.clear()
    model._measure_step(1, True, repeats=3, min_seconds=0.0)
    assert len(calls) == 3 + 2


def test_measured_steps_gather_like_fit(monkeypatch):
    """Timed steps take their batches as fit does: rows in shuffled order
    from a host array larger than the caches (not the same few rows, which
    the caches would serve), one new batch each step; the array is let go
    when the measuring is done."""
    from hetnet.runtime import timing as model_mod
    monkeypatch.setattr(model_mod, "POOL_BYTES", 1 << 16)        # 64 KB: 512 rows of 32 floats
    model = hn.models.mlp([32, 8, 3], seed=0, device=CPUDevice(num_threads=1))
    model.build((32,))
    seen = []
    real = model_mod.timed_step
    monkeypatch.setattr(model_mod, "timed_step",
                        lambda rt, x, y, idx, *a, **k: seen.append((x.shape[0], np.array(idx)))
                        or real(rt, x, y, idx, *a, **k))
    model._measure_step(16, True, repeats=20, min_seconds=0.0)
    rows = {n for n, _ in seen}
    assert rows == {512}
    batches = [idx for _, idx in seen]
    assert all(len(b) == 16 for b in batches)
    assert len({tuple(b) for b in batches}) == len(batches)     # a new batch every step
    assert not all(np.all(np.diff(b) == 1) for b in batches)     # shuffled, not row after row
    assert model.runtime.measure_pool is not None
    model.explain(batch_size=4, repeats=1)
    assert model.runtime.measure_pool is None


def test_timed_steps_train_copies_and_put_everything_back(monkeypatch):
    """Timed training steps run fit's own update on copies of the
    parameters (each forward reads what the last update wrote, as in fit);
    afterwards the weights, the optimizer's state and its step count are
    the ones from before."""
    model = hn.models.mlp([6, 5, 3], seed=0, device="cpu")
    rng = np.random.default_rng(0)
    model.fit(rng.random((8, 6), dtype=np.float32), np.arange(8) % 3, batch_size=4,
              optimizer=hn.SGD(lr=0.1, momentum=0.9))
    opt = model.optimizer
    w0, t0 = model.get_weights(), opt.t
    state0 = {i: v.copy() for i, v in opt.state.items()}
    originals = {id(layer): layer.params for layer in model.layers}
    swapped = []
    real = model.runtime.update_step
    monkeypatch.setattr(model.runtime, "update_step", lambda i: swapped.append(
        model._steps[i].params is not originals[id(model._steps[i])]) or real(i))
    model.explain(batch_size=4, repeats=1)
    assert swapped and all(swapped)
    for a, b in zip(w0, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert opt.t == t0 and set(opt.state) == set(state0)
    for i, v in state0.items():
        np.testing.assert_array_equal(opt.state[i], v)
    assert all(layer.params is originals[id(layer)] for layer in model.layers)


def test_step_time_is_the_median_of_its_windows(monkeypatch):
    model = hn.models.mlp([8, 4, 3], seed=0, device="cpu")
    model.build((8,))
    windows = iter([5.0, 1.0, 2.0, 9.0, 3.0])
    from hetnet.runtime import timing
    monkeypatch.setattr(timing, "measure_step", lambda *a, **k: next(windows))
    assert model._step_time(4, True, windows=5) == 3.0


def test_batch_gather_enters_the_prediction():
    """The step's first cost is its batch gathered from the data set and
    brought to the first device (``gather_rows``), from the table."""
    model = hn.models.mlp([784, 16, 10], seed=0, device="cpu")
    model.build((784,))
    cpu = model._steps[0].device
    slow = synthetic_table("cpu", latency=2e-6, per_unit=2e-9, transfer_latency=1e-7, per_byte=1e-10)
    slow.points["gather_rows"] = [(1, 1e-3), (1e10, 1e-3)]
    nbytes = 4 * 64 * 784
    base = plan_model(model._steps, 64, [cpu], {"cpu": CPU_TABLE}, input_bytes=nbytes)
    plan = plan_model(model._steps, 64, [cpu], {"cpu": slow}, input_bytes=nbytes)
    assert base.input_s == pytest.approx(CPU_TABLE.predict("gather_rows", nbytes))
    assert plan.input_s == pytest.approx(1e-3)


def test_gather_table_is_measured_cold():
    """``gather_rows`` is timed on rows the caches do not hold: gathering
    2048 rows costs more than 100 times gathering 16 would if cache-warm
    copies were timed instead, and the points grow with the bytes."""
    from hetnet.sched.costmodel import measure_gather
    pts = measure_gather(CPUDevice(num_threads=1), np.random.default_rng(0), row=64,
                         pool_bytes=8 << 20)
    assert [p[0] for p in pts] == [256, 4096, 65536, 524288]
    assert all(t > 0 for _, t in pts) and pts[-1][1] > pts[0][1]


def test_pooling_is_costed_per_geometry(tmp_path, monkeypatch):
    """Max pooling is measured per input shape, window and stride (a pool
    over small maps costs more per element), forward and backward, at
    every geometry batch size."""
    import hetnet.sched.costmodel as cm
    layer = hn.MaxPool2D(2)
    layer.build(CPUDevice(num_threads=1), (3, 6, 6), np.random.default_rng(0))
    fwd, bwd, upd = layer.cost_terms(8)
    geom = ("maxpool2d", (3, 6, 6), (2, 2), (2, 2))
    assert fwd == [("maxpool2d", 8, geom)] and bwd == [("maxpool2d_backward", 8, geom)]
    assert layer.cost_terms(8, need_dx=False)[1] == [] and upd == []
    out = cm.measure_geometry(CPUDevice(num_threads=1), geom, batches=(1, 4))
    key = geometry_key(geom)
    assert set(out) == {f"maxpool2d@{key}", f"maxpool2d_backward@{key}"}
    assert all([b for b, _ in pts] == [1, 4] and all(t > 0 for _, t in pts) for pts in out.values())


def test_planner_adds_the_measured_overheads():
    """Per-layer and per-step overheads enter the predicted step time (and
    not for an old table without them)."""
    model = hn.models.lenet5(seed=0, device="cpu", input_shape=(1, 28, 28))
    cpu = model._steps[0].device
    base = plan_model(model._steps, 64, [cpu], {"cpu": CPU_TABLE}, training=True)
    with_oh = synthetic_table("cpu", latency=2e-6, per_unit=2e-9, transfer_latency=1e-7, per_byte=1e-10)
    with_oh.points.update({"layer_overhead": [(1.0, 1e-3)], "step_overhead": [(1.0, 5e-3)],
                           "layer_overhead_inference": [(1.0, 1e-4)],
                           "step_overhead_inference": [(1.0, 5e-4)]})
    plan = plan_model(model._steps, 64, [cpu], {"cpu": with_oh}, training=True)
    n = len(model._steps)
    assert plan.predicted_step_s == pytest.approx(base.predicted_step_s + n * 1e-3 + 5e-3)
    inf = plan_model(model._steps, 64, [cpu], {"cpu": with_oh}, training=False)
    inf0 = plan_model(model._steps, 64, [cpu], {"cpu": CPU_TABLE}, training=False)
    assert inf.predicted_step_s == pytest.approx(inf0.predicted_step_s + n * 1e-4 + 5e-4)


def test_cost_cache_roundtrip(tmp_path, monkeypatch):
    import hetnet.sched.costmodel as cm
    monkeypatch.setenv("HETNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cm, "_MEMORY", {})
    dev = CPUDevice(num_threads=1)
    table = cm.cost_table(dev)
    assert set(OPERATIONS + TRANSFERS + OVERHEADS) <= set(table.points)
    for name in OVERHEADS:
        assert table.points[name][0][1] >= 0
    geom = ("dense", 7, 3)
    t1 = table.predict("gemm", 32, geom)                     # measured now, then saved
    assert f"gemm@{geometry_key(geom)}" in table.points and t1 > 0
    monkeypatch.setattr(cm, "_MEMORY", {})
    again = cm.cost_table(dev)                               # from the file, no measuring
    assert again.points == table.points


def test_cost_cache_is_keyed_by_the_kernel_build(monkeypatch):
    """Rebuilt kernels (same hetnet version, as in a source checkout) get a
    new key, and so a new cache file: tables timed on the old build are not used."""
    import hetnet.sched.costmodel as cm
    dev = CPUDevice(num_threads=1)
    key = cm.device_key(dev)
    assert f"build={cm.kernel_build(dev)}" in key
    monkeypatch.setattr(cm, "_BUILDS", {"cpu": "rebuilt"})
    assert cm.device_key(dev) != key and cm.device_key(dev).endswith("build=rebuilt")


def test_auto_is_a_policy_not_a_device():
    with pytest.raises(ValueError, match="placement policy"):
        hn.get_device("auto")
    model = hn.models.mlp([4, 3], device="auto", input_shape=(4,))
    assert model.placement.policy == "auto"


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")   # 2 epochs
def test_estimator_auto_uses_the_scheduler():
    from hetnet.estimators import HetNetClassifier
    rng = np.random.default_rng(0)
    X, y = rng.random((40, 6)).astype(np.float32), rng.integers(0, 2, 40)
    clf = HetNetClassifier(hidden_layer_sizes=(5,), max_iter=2, device="auto").fit(X, y)
    assert clf.model_.placement.policy == "auto" and clf.device_ == "auto"
    import pickle
    import tempfile
    from pathlib import Path
    from hetnet.estimators import load_estimator
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict(X), clf.predict(X))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clf.npz"
        clf.save(path)
        loaded = load_estimator(path)
        assert loaded.device_ == "auto" and loaded.model_.placement.policy == "auto"
        np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
