"""Timing steps as :meth:`hetnet.Sequential.fit` runs them.

The scheduler chooses placements from these times (and the cost model's
step overheads are measured with them), so a timed step must cost what a
step of ``fit`` costs: its batch gathered in shuffled order from a host
array larger than the CPU's caches (:func:`pool`) and brought to the
devices, forward, the loss summed on its device, and in training backward
and update of copies of the parameters (:func:`training_on_copies`: each
forward reads what the last update wrote, as in ``fit``, and nothing of the
model changes).  Functions here take a :class:`hetnet.runtime.Runtime`.
"""

import contextlib
import math
import time

import numpy as np

from ..optim import SGD
from ..layers import Dropout, walk

#: the host array batches are gathered from, in shuffled order, by timed
#: steps and by the cost tables' ``gather_rows``: larger than a CPU's caches,
#: as a data set is
POOL_BYTES = 64 << 20
#: timed steps gather their batches from POOL_BYTES of inputs, but from at
#: most this many rows (tiny rows need not fill it: a shuffled gather from
#: 64k rows is cache-cold enough)
POOL_MAX_ROWS = 1 << 16


def random_batch(rt, batch):
    """Random inputs of the runtime's input shape and targets its loss takes."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch,) + tuple(rt.input_shape)).astype(np.float32)
    if rt.loss.name == "cross_entropy":
        y = rng.integers(0, rt.n_outputs, batch).astype(np.int32)
    else:
        y = rng.random((batch, rt.n_outputs)).astype(np.float32)
    return x, y


def pool(rt, batch):
    """Random inputs and targets standing in for a training set: at
    least :data:`POOL_BYTES` of inputs (more than a CPU's caches hold, as
    a real data set is) and two batches, with a shuffled order to gather
    batches from, as ``fit`` does.  Kept on the runtime until
    :meth:`Runtime.release_pool`; returns ``(x, y, order)``."""
    row_bytes = 4 * math.prod(rt.input_shape)
    rows = max(2 * batch, min(-(-POOL_BYTES // row_bytes), POOL_MAX_ROWS))
    kept = rt.measure_pool
    if kept is None or kept[0].shape[0] < rows:
        x, y = random_batch(rt, min(rows, 256))
        # tiled from a few hundred random rows: filling 64 MB with fresh
        # random numbers would take longer than the steps it serves
        x = np.resize(x, (rows,) + x.shape[1:])
        y = np.resize(y, (rows,) + y.shape[1:])
        order = np.random.default_rng(1).permutation(rows)
        kept = rt.measure_pool = (x, y, order)
    return kept


@contextlib.contextmanager
def training_on_copies(rt):
    """Within: the layers hold copies of their parameters and the
    optimizer a fresh state (``SGD(momentum=0.9)`` if the runtime has no
    optimizer yet), so that timed steps run exactly as ``fit``'s (each
    forward reads what the last update wrote: timing updates into side
    copies that no forward reads misses that traffic) and leave the
    weights and the optimizer as they were."""
    saved = [(layer, layer.params) for layer in rt.layers if layer.params]
    kept = [(layer, layer.state) for layer in rt.layers if layer.state]
    passes = [(layer, layer.passes) for layer in walk(rt.layers) if isinstance(layer, Dropout)]
    optimizer = rt.optimizer
    state = (optimizer.state, optimizer.t) if optimizer is not None else None
    for layer, params in saved:
        layer.params = {k: layer.device.copy(w) for k, w in params.items()}
    for layer, st in kept:     # running statistics: timed steps must not move them
        layer.state = {k: layer.device.copy(w) for k, w in st.items()}
    if optimizer is None:
        rt.optimizer = SGD(lr=1e-3, momentum=0.9)
    else:
        optimizer.state = {}
    try:
        yield
    finally:
        for layer, params in saved:
            layer.params = params
        for layer, st in kept:
            layer.state = st
        for layer, n in passes:     # the next training pass draws the mask it would have
            layer.passes = n
        rt.optimizer = optimizer
        if optimizer is not None:
            optimizer.state, optimizer.t = state


def timed_step(rt, x, y, idx, training, per_step_sync, sync=True, total=None):
    """One step on rows ``idx`` of host ``x``, ``y``: the batch to the
    devices as ``fit`` brings it, forward (+ backward + update, within
    :func:`training_on_copies`) through the runtime's step code, the loss
    added into ``total`` (on the last step's device) if given; with
    ``per_step_sync`` the seconds of each step, its transfers included."""
    steps = rt.steps
    times = [0.0] * len(steps)
    mark = [0.0]

    def clock(i):
        if per_step_sync:
            steps[i].device.synchronize()
            now = time.perf_counter()
            times[i] += now - mark[0]
            mark[0] = now

    h, target, _ = rt.batch_to_device(x, y, None, idx)
    mark[0] = time.perf_counter()
    if training:
        forward_done = [False]

        def after(i):
            if not forward_done[0] and i == len(steps) - 1:
                clock(i)
                forward_done[0] = True
                mark[0] = time.perf_counter()   # the loss is not a step's
                return
            clock(i)
        loss = rt.train_step(h, target, None, after_step=after)
    else:
        logits = rt.forward(h, training, clock)
        loss, _ = rt.loss_op(logits, target, None)
    if total is not None:
        rt.out_device.axpy(float(len(idx)), loss, total)
    if sync:
        rt.synchronize()
    return times


def measure_step(rt, batch, training, repeats=3, min_seconds=0.02):
    """Wall seconds per step on random data in the current placement, run
    as ``fit`` runs its steps (see the module's text), with one wait for
    the devices at the end.  One warm-up step, then at least ``repeats``
    steps and enough to fill ``min_seconds`` (a window of a few
    sub-millisecond steps is at the mercy of one scheduler tick)."""
    x, y, order = pool(rt, batch)
    starts = range(0, order.size - batch + 1, batch)

    def rows(k):
        s = starts[k % len(starts)]
        return order[s:s + batch]
    with rt.session(), training_on_copies(rt):
        total = rt.out_device.zeros((1,))
        timed_step(rt, x, y, rows(0), training, False, total=total)
        t0 = time.perf_counter()
        timed_step(rt, x, y, rows(1), training, False, total=total)
        one = time.perf_counter() - t0
        repeats = max(repeats, min(1000, math.ceil(min_seconds / max(one, 1e-6))))
        t0 = time.perf_counter()
        for r in range(repeats):
            timed_step(rt, x, y, rows(r + 2), training, False, sync=False, total=total)
        rt.synchronize()
        return (time.perf_counter() - t0) / repeats


def step_time(rt, batch, training, windows=3, repeats=3, min_seconds=0.02):
    """The median of ``windows`` :func:`measure_step` windows: the step
    time a run sees, with one slow (or one lucky) window of a shared host
    weighing nothing."""
    return float(np.median([measure_step(rt, batch, training, repeats, min_seconds)
                            for _ in range(windows)]))


__all__ = ["POOL_BYTES", "POOL_MAX_ROWS", "random_batch", "pool", "training_on_copies",
           "timed_step", "measure_step", "step_time"]
