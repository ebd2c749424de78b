"""Parameters in one flat buffer per device, updated in one operation a step
(hetnet.runtime.flatparams): the layout, and training that matches the
per-parameter updates step for step, through everything that replaces a
layer's arrays (weights set, steps moved, planning's timed copies)."""

import numpy as np
import pytest

import hetnet as hn
from hetnet.devices.reference import NumpyDevice
from hetnet.runtime.flatparams import ALIGN, FlatGroup

from conftest import assert_close


class FlatNumpy(NumpyDevice):
    """The numpy reference with ``flat_update``: the model's flat-update path
    without OpenCL; counts the optimizer's update operations."""
    flat_update = True

    def __init__(self):
        super().__init__()
        self.name = "flatnumpy"
        self.updates = 0

    def sgd_update(self, w, *args, **kwargs):
        self.updates += 1
        return super().sgd_update(w, *args, **kwargs)

    def adam_update(self, w, *args, **kwargs):
        self.updates += 1
        return super().adam_update(w, *args, **kwargs)


def test_layout_is_aligned_and_views_share_the_buffer():
    dev = NumpyDevice()
    shapes = [(3, 5), (5,), (2, 1, 3, 3), (1,)]
    group = FlatGroup(dev, shapes)
    assert all(off % ALIGN == 0 for off in group.offsets)
    assert group.offsets == sorted(group.offsets) and group.size >= group.offsets[-1] + 1
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    flat, views = group.pack(arrays[:2] + [None] + arrays[3:])
    for a, v, s in zip(arrays, views, shapes):
        assert v.shape == s and np.shares_memory(v, flat)
    np.testing.assert_array_equal(views[0], arrays[0])
    np.testing.assert_array_equal(views[2], 0)                  # None: zeros
    covered = np.zeros(group.size, bool)
    for off, s in zip(group.offsets, shapes):
        covered[off:off + int(np.prod(s))] = True
    np.testing.assert_array_equal(flat[~covered], 0)            # the gaps hold zeros


def _net(device, seed=4):
    return hn.Sequential([hn.Conv2D(1, 3, 3, padding=1), hn.ReLU(), hn.MaxPool2D(2),
                          hn.Flatten(), hn.Dense(48, 10), hn.Tanh(), hn.Dense(10, 3)],
                         device=device, seed=seed)


def _data():
    rng = np.random.default_rng(1)
    return rng.random((40, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 40)


OPTIMIZERS = [lambda: hn.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
              lambda: hn.SGD(0.1), lambda: hn.Adam(0.01, weight_decay=1e-3)]


@pytest.mark.parametrize("make_opt", OPTIMIZERS, ids=["sgd-nesterov", "sgd", "adam"])
def test_flat_updates_train_like_per_parameter_updates(make_opt):
    X, y = _data()
    flat_dev = FlatNumpy()
    flat, ref = _net(flat_dev), _net(NumpyDevice())
    for m in (flat, ref):
        m.fit(X, y, epochs=2, batch_size=8, optimizer=make_opt(), shuffle=False)
    assert flat_dev.updates == 2 * 5                             # one update a step
    for a, b in zip(flat.get_weights(), ref.get_weights()):
        assert_close(a, b, rtol=1e-6, what="flat vs per-parameter weights")
    # the parameters and the optimizer's state are views into flat buffers
    flat_w = flat.runtime.flat_group(flat_dev)["w"]
    assert all(np.shares_memory(p, flat_w) for layer in flat.layers for p in layer.params.values())
    indices = flat.runtime.flat_group(flat_dev)["indices"]
    flats = flat.optimizer._flat.get((flat_dev, tuple(indices)))
    assert (flats is None) == (not flat.optimizer.state)     # SGD without momentum: no state
    for i in indices if flats else ():
        held = flat.optimizer.state[i]
        for a, buf in zip(held if isinstance(held, tuple) else (held,), flats[0]):
            assert np.shares_memory(a, buf)


def test_replaced_arrays_are_packed_again():
    """set_weights between fits, and planning's timed steps on copies of the
    parameters (and a fresh optimizer state), change nothing but what they say."""
    X, y = _data()
    flat, ref = _net(FlatNumpy()), _net(NumpyDevice())
    for m in (flat, ref):
        m.fit(X, y, epochs=1, batch_size=8, optimizer=hn.Adam(0.01), shuffle=False)
    flat._measure_step(8, True, repeats=2)                      # timed steps on copies
    start = [w * 0.5 for w in ref.get_weights()]
    for m in (flat, ref):
        m.fit(X, y, epochs=1, batch_size=8, shuffle=False)       # the same Adam, its state kept
    for a, b in zip(flat.get_weights(), ref.get_weights()):
        assert_close(a, b, rtol=1e-6, what="after timed steps")
    for m in (flat, ref):
        m.set_weights(start)                                     # resets the optimizer too
        m.fit(X, y, epochs=1, batch_size=8, shuffle=False)
    for a, b in zip(flat.get_weights(), ref.get_weights()):
        assert_close(a, b, rtol=1e-6, what="after set_weights")


def test_flat_and_per_parameter_devices_in_one_model():
    """A per-layer map over a flat device and a plain one: each device's
    parameters are updated its own way, state moved between them survives."""
    X, y = _data()
    flat_dev, plain = FlatNumpy(), NumpyDevice()
    mapped = hn.Sequential([hn.Conv2D(1, 3, 3, padding=1), hn.ReLU(), hn.MaxPool2D(2),
                            hn.Flatten(), hn.Dense(48, 10), hn.Tanh(), hn.Dense(10, 3)],
                           device=[flat_dev, flat_dev, flat_dev, flat_dev, plain, plain, flat_dev],
                           seed=4)
    ref = _net(NumpyDevice())
    for m in (mapped, ref):
        m.fit(X, y, epochs=2, batch_size=8, optimizer=hn.SGD(0.05, momentum=0.9), shuffle=False)
    assert flat_dev.updates == 2 * 5                             # conv and last dense: one op
    assert len(mapped.runtime.flat_group(flat_dev)["indices"]) == 4
    for a, b in zip(mapped.get_weights(), ref.get_weights()):
        assert_close(a, b, rtol=1e-6, what="mapped vs one device")


def test_steps_moved_off_and_back_keep_their_state():
    X, y = _data()
    flat_dev = FlatNumpy()
    flat, ref = _net(flat_dev), _net(NumpyDevice())
    for m in (flat, ref):
        m.fit(X, y, epochs=1, batch_size=8, optimizer=hn.Adam(0.01), shuffle=False)
    plain = NumpyDevice()
    for dev in (plain, flat_dev):                                # away and home again
        flat.runtime.place([dev] * len(flat.runtime.steps))
    for m in (flat, ref):
        m.fit(X, y, epochs=1, batch_size=8, shuffle=False)
    for a, b in zip(flat.get_weights(), ref.get_weights()):
        assert_close(a, b, rtol=1e-6, what="after moves")
