"""The cost model: tables, interpolation, geometries, gathers, overheads, the cache."""

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
