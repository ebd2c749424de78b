"""Placement policies: fixed, map and 'auto' (confirmed by timed steps), re-planning, mixed-device training."""

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
