"""Timed steps (hetnet.runtime.timing): as fit runs them, on copies, windows and medians."""

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
