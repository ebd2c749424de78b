"""Sequential: a chain of layers, a fused loss, and the training loop."""

import contextlib
import math
import time

import numpy as np

from .costmodel import POOL_BYTES
from .hostspeed import probe
from ._validation import check_X, check_targets, check_sample_weight, check_positive_int
from .placement import Placement, move_step, transfer
from .layers import Layer, Dense, Conv2D, ReLU, Sigmoid, Tanh
from .losses import get_loss
from .flatparams import FlatGroup
from .optim import get_optimizer
from .schedules import get_schedule

_FUSABLE = (Dense, Conv2D)
_FUSED_ACTS = (ReLU, Sigmoid, Tanh)
#: timed steps gather their batches from POOL_BYTES of inputs, as the cost
#: tables' gather_rows does, but from at most this many rows (tiny rows need
#: not fill it: a shuffled gather from 64k rows is cache-cold enough)
POOL_MAX_ROWS = 1 << 16


class History(dict):
    """Per-epoch records of a ``fit`` call: ``loss``, ``val_loss``,
    ``val_accuracy``, ``images_per_s``, ``time_s`` (lists, one entry an epoch)."""

    @property
    def epochs(self):
        return len(self.get("loss", []))


class Sequential:
    """A feed-forward network trained with a fused loss.

    Parameters
    ----------
    layers : list of Layer
        The last layer emits logits (no softmax needed for cross-entropy).
    loss : {"cross_entropy", "binary_cross_entropy", "mse"}
        Mean over the batch.  Cross-entropy takes class indices or one-hot
        labels and fuses softmax; binary cross-entropy fuses sigmoid.
    device : str, Device or list
        ``"auto"`` (default): each layer on the device where the planner
        (:mod:`hetnet.planner`, from costs measured on this machine) predicts
        the step is fastest, re-planned when the batch size changes; with no
        GPU that is simply the CPU.  ``"cpu"``, ``"gpu"``, ``"opencl:P:D"``,
        ``"numpy"`` or a Device: every layer there.  A list with one device
        per layer: that placement exactly.
    seed : int, optional
        Seeds initialisation and shuffling: the same seed gives the same
        weights and, on the same placement, the same training run to the
        bit.  Under ``"auto"`` with a GPU the placement is chosen from timed
        steps and may differ between runs; devices agree to rounding.
    input_shape : tuple, optional
        Per-sample input shape; without it the model is built by the first
        ``fit``/``predict`` from the data.
    """

    def __init__(self, layers, loss="cross_entropy", device="auto", seed=None, input_shape=None):
        layers = list(layers)
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} is {layer!r}, not a hetnet Layer")
        if len({id(layer) for layer in layers}) != len(layers):
            raise ValueError("the same layer object appears twice; create a new one for each position")
        self.layers = layers
        self.loss = get_loss(loss)
        if isinstance(device, (list, tuple)) and len(device) != len(layers):
            raise ValueError(f"a per-layer device map needs {len(layers)} entries, got {len(device)}")
        self.placement = Placement(device)
        self.device = self.placement.primary
        self.seed = seed
        self.input_shape = None
        self.optimizer = None
        self.history = None
        self._steps = []
        self._dlogits = None
        self._dlogits_dev = None
        self._input_buffer = self._input_buffer_dev = None
        self._measure_pool = None
        self._flats = {}        # device -> its parameters in one buffer (_flat_group)
        if input_shape is not None:
            self.build(input_shape)

    # --------------------------------------------------------------- build
    @property
    def built(self):
        return self.input_shape is not None

    def build(self, input_shape):
        """Create the parameters for per-sample ``input_shape`` (e.g. (1, 28, 28))."""
        input_shape = tuple(int(s) for s in input_shape)
        seeds = np.random.SeedSequence(self.seed).spawn(2)
        rng = np.random.default_rng(seeds[0])
        self._shuffle_rng = np.random.default_rng(seeds[1])
        shape = input_shape
        for i, layer in enumerate(self.layers):
            shape = layer.build(self.placement.build_device(i), shape, rng)
        if len(shape) != 1:
            raise ValueError(f"the last layer must output (N, k) logits, got per-sample shape {shape}"
                             " (add Flatten and Dense layers)")
        self.input_shape = input_shape
        self.n_outputs = shape[0]
        self._fuse()
        return self

    def _fuse(self):
        """Let a dense/conv layer absorb the activation that follows it: one
        pass over the output instead of two, and no extra buffer."""
        steps, i = [], 0
        while i < len(self.layers):
            layer = self.layers[i]
            nxt = self.layers[i + 1] if i + 1 < len(self.layers) else None
            if isinstance(layer, _FUSABLE):
                layer.activation = "identity"
                if type(nxt) in _FUSED_ACTS:
                    layer.activation = nxt.kind
                    i += 1
            steps.append(layer)
            i += 1
        self._steps = steps
        self._param_index, k = {}, 0
        for layer in self.layers:
            self._param_index[id(layer)] = k
            k += len(layer.params)

    def _require_built(self):
        if not self.built:
            raise RuntimeError("the model has no weights yet: call fit(), build(input_shape) "
                               "or pass input_shape= to Sequential")

    # -------------------------------------------------------------- weights
    def _param_arrays(self):
        return [layer.params[k] for layer in self.layers for k in layer.params]

    def _param_slots(self, step):
        """``(index, name)`` of each of ``step``'s parameters, ``index``
        being its place in the model's parameter order (the optimizer's key)."""
        k = self._param_index[id(step)]
        return [(k + j, name) for j, name in enumerate(step.params)]

    def get_weights(self):
        """Parameters as numpy arrays, in layer order (W before b)."""
        self._require_built()
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights):
        """Load parameters from a list shaped like :meth:`get_weights`."""
        self._require_built()
        weights = list(weights)
        expected = sum(len(layer.params) for layer in self.layers)
        if len(weights) != expected:
            raise ValueError(f"set_weights needs {expected} arrays, got {len(weights)}")
        i = 0
        for layer in self.layers:
            k = len(layer.params)
            layer.set_weights(weights[i:i + k])
            i += k
        if self.optimizer is not None:
            self.optimizer.reset()

    def count_params(self):
        self._require_built()
        return int(sum(np.prod(p.shape) for p in self._param_arrays()))

    # ------------------------------------------------------------ compute
    # ----------------------------------------------------------- placement
    @property
    def out_device(self):
        """The device of the last step: where the loss and outputs live."""
        return self._steps[-1].device

    def _use_plan(self, batch, training, fixed_params=False):
        """Place every step as the plan for this batch size says."""
        fixed = None
        if fixed_params:   # a short last batch: parameters stay where training put them
            fixed = [s.device if s.params else None for s in self._steps]
        plan = self.placement.plan(self, batch, training, fixed)
        for step, dev in zip(self._steps, plan.devices):
            move_step(self, step, dev)
        return plan

    def plan(self, batch_size, training=True, refresh=False):
        """The placement :meth:`fit` (``training``) or :meth:`predict` would
        use at ``batch_size``; see :meth:`explain` for predicted and measured
        times.

        Plans are made once per batch size and mode and then kept.  With
        ``refresh=True`` this one is made again: for ``"auto"``, the
        candidate placements are timed again on real steps (the host's load
        or speed may have changed since), and the next :meth:`fit` or
        :meth:`predict` at this size uses the new plan.  The cost tables are
        kept; :func:`hetnet.calibrate` re-measures those.
        """
        self._require_built()
        batch_size = check_positive_int("batch_size", batch_size)
        if not isinstance(refresh, (bool, np.bool_)):
            raise TypeError(f"refresh must be True or False, got {refresh!r}")
        if refresh:
            self.placement.forget(batch_size, training)
        return self.placement.plan(self, batch_size, training)

    def explain(self, batch_size=64, training=True, repeats=5):
        """The plan at ``batch_size`` with predicted and measured times.

        Every step is timed (median of ``repeats``) on the device the plan
        gives it, on random data of the model's input shape, waiting for the
        device after each step; the whole step (the batch gathered from a
        shuffled dataset-sized array and uploaded, transfers, loss and, in
        training, the update by the model's optimizer) is timed again
        without those waits, as :meth:`fit` runs it (:meth:`_step_time`).
        The steps train copies of the parameters (:meth:`_training_on_copies`):
        no weight changes.  The host's speed is probed around the timings
        (:func:`hetnet.hostspeed.probe`, ``Plan.explain_host_probe_s``); the
        table notes when it differs from the speed 'auto' planned at.
        Returns a :class:`hetnet.planner.Plan`; ``print()`` it for the table.
        """
        self._require_built()
        batch_size = check_positive_int("batch_size", batch_size)
        plan = self.placement.plan(self, batch_size, training, measure_costs=True)
        self._use_plan(batch_size, training)
        x, y = self._random_batch(batch_size)
        per_step = [[] for _ in self._steps]
        probes = [probe()]      # the host's speed around the timings (hetnet.hostspeed)
        with self._session(), self._training_on_copies():
            for r in range(repeats + 1):
                times = self._timed_step(x, y, np.arange(batch_size), training,
                                         per_step_sync=True)
                if r:   # the first round warms up
                    for i, t in enumerate(times):
                        per_step[i].append(t)
        for s, ts in zip(plan.steps, per_step):
            s.measured_s = float(np.median(ts))
        probes.append(probe())
        plan.measured_step_s = self._step_time(batch_size, training, windows=5)
        probes.append(probe())
        plan.explain_host_probe_s = float(np.median(probes))
        self._release_pool()
        return plan

    def _random_batch(self, batch):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch,) + self.input_shape).astype(np.float32)
        if self.loss.name == "cross_entropy":
            y = rng.integers(0, self.n_outputs, batch).astype(np.int32)
        else:
            y = rng.random((batch, self.n_outputs)).astype(np.float32)
        return x, y

    def _pool(self, batch):
        """Random inputs and targets standing in for a training set: at
        least :data:`POOL_BYTES` of inputs (more than a CPU's caches hold, as
        a real data set is) and two batches, with a shuffled order to gather
        batches from, as :meth:`fit` does.  Kept until :meth:`_release_pool`."""
        row_bytes = 4 * math.prod(self.input_shape)
        rows = max(2 * batch, min(-(-POOL_BYTES // row_bytes), POOL_MAX_ROWS))
        pool = self._measure_pool
        if pool is None or pool[0].shape[0] < rows:
            x, y = self._random_batch(min(rows, 256))
            # tiled from a few hundred random rows: filling 64 MB with fresh
            # random numbers would take longer than the steps it serves
            x = np.resize(x, (rows,) + x.shape[1:])
            y = np.resize(y, (rows,) + y.shape[1:])
            order = np.random.default_rng(1).permutation(rows)
            pool = self._measure_pool = (x, y, order)
        return pool

    def _release_pool(self):
        self._measure_pool = None

    @contextlib.contextmanager
    def _training_on_copies(self):
        """Within: the layers hold copies of their parameters and the
        optimizer a fresh state (``SGD(momentum=0.9)`` if the model has no
        optimizer yet), so that timed steps run exactly as :meth:`fit`'s
        (each forward reads what the last update wrote: timing updates into
        side copies that no forward reads misses that traffic) and leave
        the weights and the optimizer as they were."""
        from .optim import SGD
        saved = [(layer, layer.params) for layer in self.layers if layer.params]
        optimizer = self.optimizer
        state = (optimizer.state, optimizer.t) if optimizer is not None else None
        for layer, params in saved:
            layer.params = {k: layer.device.copy(w) for k, w in params.items()}
        if optimizer is None:
            self.optimizer = SGD(lr=1e-3, momentum=0.9)
        else:
            optimizer.state = {}
        try:
            yield
        finally:
            for layer, params in saved:
                layer.params = params
            self.optimizer = optimizer
            if optimizer is not None:
                optimizer.state, optimizer.t = state

    def _measure_step(self, batch, training, repeats=3, min_seconds=0.02):
        """Wall seconds per step on random data in the current placement, run
        as ``fit`` runs its steps: each batch gathered from a dataset-sized
        host array (:meth:`_pool`) in shuffled order and uploaded, forward,
        the loss summed on its device, and in training backward and update
        (of copies of the parameters), with one wait for the devices at the end.  One
        warm-up step, then at least ``repeats`` steps and enough to fill
        ``min_seconds`` (a window of a few sub-millisecond steps is at the
        mercy of one scheduler tick)."""
        x, y, order = self._pool(batch)
        starts = range(0, order.size - batch + 1, batch)

        def rows(k):
            s = starts[k % len(starts)]
            return order[s:s + batch]
        with self._session(), self._training_on_copies():
            total = self.out_device.zeros((1,))
            self._timed_step(x, y, rows(0), training, False, total=total)
            t0 = time.perf_counter()
            self._timed_step(x, y, rows(1), training, False, total=total)
            one = time.perf_counter() - t0
            repeats = max(repeats, min(1000, math.ceil(min_seconds / max(one, 1e-6))))
            t0 = time.perf_counter()
            for r in range(repeats):
                self._timed_step(x, y, rows(r + 2), training, False, sync=False, total=total)
            self._sync_all()
            return (time.perf_counter() - t0) / repeats

    def _step_time(self, batch, training, windows=3, repeats=3, min_seconds=0.02):
        """The median of ``windows`` :meth:`_measure_step` windows: the step
        time a run sees, with one slow (or one lucky) window of a shared host
        weighing nothing."""
        return float(np.median([self._measure_step(batch, training, repeats, min_seconds)
                                for _ in range(windows)]))

    def _devices_in_use(self):
        """The devices the steps run on, each once, in step order."""
        return list(dict.fromkeys(s.device for s in self._steps))

    def _sync_all(self):
        for d in self._devices_in_use():
            d.synchronize()

    def _timed_step(self, x, y, idx, training, per_step_sync, sync=True, total=None):
        """One step on rows ``idx`` of host ``x``, ``y``: the batch to the
        devices as :meth:`fit` brings it, forward (+ backward + update, within
        :meth:`_training_on_copies`) through the same code as :meth:`train_step`, the
        loss added into ``total`` (on the last step's device) if given; with
        ``per_step_sync`` the seconds of each step, its transfers included."""
        steps = self._steps
        times = [0.0] * len(steps)
        mark = [0.0]

        def clock(i):
            if per_step_sync:
                steps[i].device.synchronize()
                now = time.perf_counter()
                times[i] += now - mark[0]
                mark[0] = now

        def update_then_clock(i):
            self._update_step(i)
            clock(i)

        h, target, _ = self._batch_to_device(x, y, None, idx)
        mark[0] = time.perf_counter()
        logits = self._forward(h, training, clock)
        loss, dy = self._loss_op(logits, target, None)
        if total is not None:
            self.out_device.axpy(float(len(idx)), loss, total)
        if training:
            self.optimizer.begin_step()
            mark[0] = time.perf_counter()
            self._backward(dy, update_then_clock)
        if sync:
            self._sync_all()
        return times

    def _session(self):
        stack = contextlib.ExitStack()
        for dev in self._devices_in_use():
            stack.enter_context(dev.session())
        return stack

    # ------------------------------------------------------------ compute
    def _forward(self, x, training, after_step=None):
        """Run the steps (moving ``x`` between devices as the plan says);
        ``after_step(i)``, if given, is called after step ``i``."""
        src = self._steps[0].device
        for i, layer in enumerate(self._steps):
            x = transfer(x, src, layer.device)
            src = layer.device
            x = layer.forward(x, training)
            if after_step is not None:
                after_step(i)
        return x

    def _backward(self, dlogits, after_step=None):
        dy, src = dlogits, self.out_device
        for i in range(len(self._steps) - 1, -1, -1):
            step = self._steps[i]
            dy = step.backward(transfer(dy, src, step.device), need_dx=i > 0)
            src = step.device
            if after_step is not None:
                after_step(i)

    def _loss_op(self, logits, target, weights):
        dev = self.out_device
        grad = self._dlogits
        if grad is None or tuple(grad.shape) != tuple(logits.shape) or self._dlogits_dev is not dev:
            grad = self._dlogits = dev.empty(tuple(logits.shape))
            self._dlogits_dev = dev
        return getattr(dev, self.loss.op)(logits, target, weights, grad_out=grad)

    def _batch_to_device(self, X, yt, sw, idx):
        """Inputs to the first step's device (gathered into a buffer reused
        from the previous step), targets to the loss's."""
        dev = self._steps[0].device
        buf = self._input_buffer if self._input_buffer_dev is dev else None
        xb = self._input_buffer = dev.gather_rows(X, idx, out=buf)
        self._input_buffer_dev = dev
        return (xb,) + self._targets_to_device(yt, sw, idx)

    def _targets_to_device(self, yt, sw, idx):
        dev = self.out_device
        return (dev.asarray(yt[idx], dtype=yt.dtype),
                None if sw is None else dev.asarray(sw[idx]))

    def _prepare(self, X, y, sample_weight=None, check_input=True):
        X = check_X(X, self.input_shape, check_finite=check_input)
        if not self.built:
            self.build(X.shape[1:])
        yt = check_targets(y, X.shape[0], self.loss.name, self.n_outputs)
        sw = check_sample_weight(sample_weight, X.shape[0])
        return X, yt, sw

    def train_step(self, xb, yb, wb=None):
        """One forward/backward/update on device arrays; returns the device loss."""
        logits = self._forward(xb, True)
        loss, dlogits = self._loss_op(logits, yb, wb)
        self.optimizer.begin_step()
        self._backward(dlogits, self._update_step)
        return loss

    def _train_step_hooked(self, xb, yb, wb=None, hook=None):
        """:meth:`train_step` with ``hook(buffers)`` called between the whole
        backward pass and the update, ``buffers`` being ``(device, flat
        gradient array)`` pairs, one a device holding parameters."""
        logits = self._forward(xb, True)
        loss, dlogits = self._loss_op(logits, yb, wb)
        self.optimizer.begin_step()
        self._backward(dlogits)
        # every device's gradients in one flat buffer, whatever the device
        hook([(dev, self._flat_group(dev)["g"]) for dev in self._devices_in_use()
              if any(s.device is dev and s.params for s in self._steps)])
        for i in range(len(self._steps) - 1, -1, -1):
            self._update_step(i)
        return loss

    def _update_step(self, i):
        """Update step ``i``'s parameters as soon as the backward pass has
        their gradients (they are still in cache; nothing later reads them).
        On a device with ``flat_update`` every parameter there is updated at
        once, in one operation, after the last of its steps the backward pass
        reaches (the one with the lowest index)."""
        step = self._steps[i]
        if not step.params:
            return
        dev = step.device
        if dev.flat_update:
            first = next(j for j, s in enumerate(self._steps) if s.device is dev and s.params)
            if i == first:
                flat = self._flat_group(dev)
                self.optimizer.update_group(dev, flat["indices"], flat["group"],
                                            flat["w"], flat["g"])
            return
        for index, name in self._param_slots(step):
            self.optimizer.update(step.device, index, step.params[name], step.grads[name])

    def _flat_group(self, dev):
        """The parameters and gradients of the steps on ``dev``, each a view
        into one flat array (:class:`hetnet.flatparams.FlatGroup`), so that
        the optimizer updates them all in one launch.  Laid out again (their
        current values copied in) whenever a step's arrays were replaced
        since: weights set, steps moved, or planning's timed copies."""
        slots = [(step, name, index) for step in self._steps
                 if step.device is dev and step.params
                 for index, name in self._param_slots(step)]
        flat = self._flats.get(dev)
        if flat is not None and len(flat["slots"]) == len(slots) and all(
                a[0] is b[0] and a[1] == b[1] and b[0].params[b[1]] is w and b[0].grads[b[1]] is g
                for a, b, w, g in zip(flat["slots"], slots, flat["w_views"], flat["g_views"])):
            return flat
        group = FlatGroup(dev, [tuple(step.params[name].shape) for step, name, _ in slots])
        w, w_views = group.pack([step.params[name] for step, name, _ in slots])
        g, g_views = group.pack([step.grads[name] for step, name, _ in slots])
        for (step, name, _), wv, gv in zip(slots, w_views, g_views):
            step.params[name], step.grads[name] = wv, gv
        flat = self._flats[dev] = {
            "slots": slots, "group": group, "w": w, "g": g, "w_views": w_views,
            "g_views": g_views, "indices": [index for _, _, index in slots]}
        return flat

    def fit(self, X, y, epochs=1, batch_size=32, optimizer=None, validation_data=None,
            verbose=0, shuffle=True, sample_weight=None, callbacks=None, lr_schedule=None,
            check_input=True, distributed=False):
        """Mini-batch training.

        Each epoch reshuffles (``shuffle=True``), covers every sample once
        (the last, partial batch included) and averages gradients over each
        batch.  The optimizer (default ``SGD(lr=0.01)``) keeps its state
        across calls, so ``fit`` may be called again to continue training.

        Parameters
        ----------
        X : array (n, *input_shape), or (n, prod(input_shape))
        y : class indices (n,) or one-hot (n, k) for cross-entropy; (n, k)
            or (n,) targets otherwise
        validation_data : (X_val, y_val), optional
            Evaluated after every epoch.
        verbose : int
            1: a progress bar per epoch with loss and images/s.
        lr_schedule : callable, optional
            ``lr_schedule(step, total_steps) -> lr`` sets the learning rate
            before every step (see :mod:`hetnet.schedules`).
        callbacks : list, optional
            Objects with any of ``on_fit_begin(model)``,
            ``on_epoch_begin(model, epoch)``, ``on_batch_end(model, batch)``,
            ``on_epoch_end(model, epoch, logs)`` (return True to stop) and
            ``on_fit_end(model, history)``.
        check_input : bool
            False skips the scan of X for NaN and infinity (shapes, dtype and
            targets are still checked): for callers that have scanned X
            already, such as the scikit-learn estimators.  Non-finite inputs
            then train to NaN weights instead of raising.
        distributed : bool or hetnet.distributed.Context
            Data-parallel training over the ranks of an MPI job (started with
            ``mpirun -n K``; every rank calls ``fit`` with the same data and
            arguments): ``batch_size`` is the global mini-batch, split
            across the ranks (:attr:`Context.balance`), the gradients
            averaged after each backward pass, so every rank ends each step
            with the same weights, those one process would have at
            ``batch_size`` (to float32 rounding; BatchNorm uses per-rank
            statistics, see :mod:`hetnet.distributed.data_parallel`).  The
            replicas start from rank 0's weights and shuffle by rank 0's
            order; losses and metrics are over all ranks; only rank 0 shows
            progress.  History gains ``allreduce_s`` and ``shares`` per
            epoch.  ``True`` joins the job (:func:`hetnet.distributed.init`);
            pass the Context from ``init`` to choose its settings.  With one
            rank this is a plain fit.  Needs mpi4py and an MPI library.

        Returns
        -------
        History
        """
        epochs = check_positive_int("epochs", epochs)
        batch_size = check_positive_int("batch_size", batch_size)
        ctx = _distributed_context(distributed, self.placement.primary)
        X, yt, sw = self._prepare(X, y, sample_weight, check_input)
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (X_val, y_val)")
            Xv = check_X(validation_data[0], self.input_shape, name="X_val")
            yv = check_targets(validation_data[1], Xv.shape[0], self.loss.name, self.n_outputs,
                               name="y_val")
        if optimizer is not None or self.optimizer is None:
            self.optimizer = get_optimizer(optimizer)
        schedule = get_schedule(lr_schedule)
        callbacks = list(callbacks or [])
        n = X.shape[0]
        total_steps = epochs * math.ceil(n / batch_size)
        step = 0
        history = History(loss=[], val_loss=[], val_accuracy=[], images_per_s=[], time_s=[])
        self.history = history
        dp = None
        if ctx is not None:
            from .distributed.data_parallel import DataParallel
            dp = DataParallel(ctx, self, batch_size)
            dp.begin()
            if not ctx.is_root:
                verbose = 0
        _call(callbacks, "on_fit_begin", self)
        for epoch in range(epochs):
            _call(callbacks, "on_epoch_begin", self, epoch)
            order = self._shuffle_rng.permutation(n) if shuffle else np.arange(n)
            if dp is not None:
                order = dp.epoch_order(order)
            bar = _progress(verbose, n, f"epoch {epoch + 1}/{epochs}")
            planned = min(batch_size, n) if dp is None else max(1, int(dp.shares[ctx.rank]))
            self._use_plan(planned, training=True)
            if dp is not None:
                dp.check_placement()
            totals = {}
            t0 = time.perf_counter()
            with self._session():
                for b, start in enumerate(range(0, n, batch_size)):
                    idx = order[start:start + batch_size]
                    rows, count = (idx, len(idx)) if dp is None else dp.local_rows(idx)
                    if len(rows) != planned:   # the short last batch
                        self._use_plan(len(rows), training=True, fixed_params=True)
                        if dp is not None:
                            dp.check_placement()
                    if schedule is not None:
                        self.optimizer.lr = float(schedule(step, total_steps))
                    step += 1
                    batch = self._batch_to_device(X, yt, sw, rows)
                    if dp is None:
                        loss = self.train_step(*batch)
                    else:
                        dp.step_begins()
                        loss = self._train_step_hooked(*batch, hook=dp.gradient_hook)
                    dev = self.out_device
                    if dev not in totals:
                        totals[dev] = dev.zeros((1,))
                    dev.axpy(float(count), loss, totals[dev])
                    if bar is not None:
                        bar.update(len(idx))
                        if b % 50 == 0:
                            bar.set_postfix(loss=f"{float(dev.to_host(loss)[0]):.4f}", refresh=False)
                    _call(callbacks, "on_batch_end", self, b)
                # reading the sums waits for the devices
                epoch_loss = sum(float(d.to_host(t)[0]) for d, t in totals.items())
            if dp is not None:
                epoch_loss = dp.sum(epoch_loss)
            epoch_loss /= n
            dt = time.perf_counter() - t0
            logs = {"loss": epoch_loss, "images_per_s": n / dt, "time_s": dt}
            if dp is not None:
                logs["allreduce_s"] = dp.averager.seconds
                logs["shares"] = dp.shares.tolist()
                dp.averager.reset_stats()
                dp.end_epoch()
            if validation_data is not None:
                ev = self._evaluate(Xv, yv, None, distributed=ctx)
                logs["val_loss"] = ev["loss"]
                if "accuracy" in ev:
                    logs["val_accuracy"] = ev["accuracy"]
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
            if bar is not None:
                bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k != "time_s"})
                bar.close()
            if not math.isfinite(epoch_loss):
                raise FloatingPointError(f"training diverged in epoch {epoch + 1} (loss "
                                         f"{epoch_loss}); lower the learning rate")
            stop = any(_call(callbacks, "on_epoch_end", self, epoch, logs))
            if dp is not None:
                stop = dp.stop(stop)        # rank 0's callbacks decide for every rank
            if stop:
                break
        if dp is not None:
            dp.verify_replicas()
        _call(callbacks, "on_fit_end", self, history)
        return history

    # ---------------------------------------------------------- inference
    def _inference_batches(self, X, batch_size, *arrays):
        """Plan for inference at this batch size, then yield ``(slice, batch
        on the input device)``; a short last batch is re-planned with the
        parameters left where they are."""
        n = X.shape[0]
        self._use_plan(min(batch_size, n), training=False)
        with self._session():
            for start in range(0, n, batch_size):
                idx = slice(start, start + batch_size)
                if start and n - start < batch_size:
                    self._use_plan(n - start, training=False, fixed_params=True)
                dev = self._steps[0].device
                buf = self._input_buffer if self._input_buffer_dev is dev else None
                self._input_buffer = dev.gather_rows(X, idx, out=buf)
                self._input_buffer_dev = dev
                yield idx, self._input_buffer

    def _split_over_ranks(self, X, distributed, predict):
        """``predict(X)`` with the rows of ``X`` split over the ranks of a
        data-parallel job and the results gathered in order on every rank
        (``distributed``: as :meth:`fit`'s); a plain call without it."""
        ctx = _distributed_context(distributed, self.placement.primary)
        if ctx is None:
            return predict(X)
        from .distributed.data_parallel import rank_block, gather_rows
        block = rank_block(X.shape[0], ctx)
        mine = X[block]
        # a rank without rows still gathers: an empty result of the right shape
        local = predict(mine) if mine.shape[0] else predict(X[:1])[:0]
        return gather_rows(ctx, local)

    def predict_logits(self, X, batch_size=256, distributed=False):
        """Raw outputs of the last layer, ``(n, k)`` numpy.  ``distributed``
        (as :meth:`fit`'s): every rank predicts its block of the rows and
        all get all of them."""
        self._require_built()
        X = check_X(X, self.input_shape)
        if distributed:
            return self._split_over_ranks(X, distributed,
                                          lambda part: self.predict_logits(part, batch_size))
        out = np.empty((X.shape[0], self.n_outputs), dtype=np.float32)
        for idx, xb in self._inference_batches(X, batch_size):
            out[idx] = self.out_device.to_host(self._forward(xb, False))
        return out

    def predict_proba(self, X, batch_size=256, distributed=False):
        """Class probabilities (softmax for cross-entropy, sigmoid for binary
        cross-entropy), ``(n, k)``.  ``distributed``: as :meth:`predict_logits`."""
        if not self.loss.classification:
            raise AttributeError("predict_proba needs a classification loss; this model uses "
                                 f"{self.loss.name!r}")
        self._require_built()
        X = check_X(X, self.input_shape)
        if distributed:
            return self._split_over_ranks(X, distributed,
                                          lambda part: self.predict_proba(part, batch_size))
        out = np.empty((X.shape[0], self.n_outputs), dtype=np.float32)
        for idx, xb in self._inference_batches(X, batch_size):
            logits = self._forward(xb, False)
            dev = self.out_device
            out[idx] = dev.to_host(dev.activation(self.loss.output, logits))
        return out

    def predict(self, X, batch_size=256, distributed=False):
        """Class indices (cross-entropy), 0/1 per output (binary cross-entropy)
        or the outputs themselves (MSE; 1-D when there is one output).
        ``distributed``: as :meth:`predict_logits`."""
        if distributed:
            self._require_built()
            return self._split_over_ranks(check_X(X, self.input_shape), distributed,
                                          lambda part: self.predict(part, batch_size))
        if self.loss.name == "cross_entropy":
            self._require_built()
            X = check_X(X, self.input_shape)
            out = np.empty(X.shape[0], dtype=np.int64)
            for idx, xb in self._inference_batches(X, batch_size):
                logits = self._forward(xb, False)
                dev = self.out_device
                out[idx] = dev.to_host(dev.argmax(logits))
            return out
        if self.loss.name == "binary_cross_entropy":
            pred = (self.predict_proba(X, batch_size) > 0.5).astype(np.int64)
        else:
            pred = self.predict_logits(X, batch_size)
        return pred[:, 0] if pred.shape[1] == 1 else pred

    def evaluate(self, X, y, sample_weight=None, batch_size=256, distributed=False):
        """Mean loss (and accuracy for classification) over a data set:
        ``{"loss": float, "accuracy": float}``.  ``distributed`` (as
        :meth:`fit`'s): every rank evaluates its block of the rows and the
        sums are added over the ranks; every rank gets the result."""
        self._require_built()
        X, yt, sw = self._prepare(X, y, sample_weight)
        return self._evaluate(X, yt, sw, batch_size, distributed)

    def _evaluate(self, X, yt, sw, batch_size=256, distributed=False):
        ctx = _distributed_context(distributed, self.placement.primary)
        if ctx is not None:
            from .distributed.data_parallel import rank_block, evaluate_sums
            block = rank_block(X.shape[0], ctx)
            n_mine = block.stop - block.start
            if n_mine:
                local = self._evaluate(X[block], yt[block], None if sw is None else sw[block],
                                       batch_size)
            else:
                local = {"loss": 0.0, **({"accuracy": 0.0} if self.loss.classification else {})}
            return evaluate_sums(ctx, {**local, "n": n_mine})
        n = X.shape[0]
        total, correct = 0.0, 0
        for idx, xb in self._inference_batches(X, batch_size):
            dev = self.out_device
            yb, wb = self._targets_to_device(yt, sw, idx)
            logits = self._forward(xb, False)
            loss, _ = self._loss_op(logits, yb, wb)
            total += float(dev.to_host(loss)[0]) * xb.shape[0]
            if self.loss.name == "cross_entropy":
                correct += int((dev.to_host(dev.argmax(logits)) == yt[idx]).sum())
            elif self.loss.name == "binary_cross_entropy":
                pred = dev.to_host(logits) > 0
                correct += int((pred == (yt[idx] > 0.5)).all(axis=1).sum())
        result = {"loss": total / n}
        if self.loss.classification:
            result["accuracy"] = correct / n
        return result

    def loss_and_gradients(self, X, y, sample_weight=None):
        """Loss of one batch holding all of ``X`` and the gradient of every
        parameter, numpy, in :meth:`get_weights` order.  Changes no weight."""
        X, yt, sw = self._prepare(X, y, sample_weight)
        self._use_plan(X.shape[0], training=True)
        with self._session():
            xb, yb, wb = self._batch_to_device(X, yt, sw, slice(None))
            loss, dlogits = self._loss_op(self._forward(xb, True), yb, wb)
            self._backward(dlogits)
            grads = [layer.device.to_host(layer.grads[k]) for layer in self.layers for k in layer.params]
            return float(self.out_device.to_host(loss)[0]), grads

    # ------------------------------------------------------------- report
    def summary(self):
        """A text table of layers, output shapes and parameter counts."""
        self._require_built()
        where = ", ".join(d.name for d in self._devices_in_use())
        lines = [f"Sequential on {where} (policy {self.placement.policy}), input "
                 f"{self.input_shape}, loss {self.loss.name}",
                 f"{'layer':<40}{'output':<18}{'params':>10}"]
        for layer in self.layers:
            n = int(sum(np.prod(p.shape) for p in layer.params.values()))
            note = ""
            if isinstance(layer, _FUSABLE) and layer.activation != "identity":
                note = f" (+{layer.activation}, fused)"
            lines.append(f"{(repr(layer) + note)[:39]:<40}{str(layer.output_shape):<18}{n:>10}")
        lines.append(f"total parameters: {self.count_params()}")
        return "\n".join(lines)

    def get_config(self):
        return {"loss": self.loss.name, "seed": self.seed,
                "input_shape": list(self.input_shape) if self.built else None,
                "layers": [{"class": type(layer).__name__, "config": layer.get_config()}
                           for layer in self.layers]}

    def save(self, path):
        """Write the architecture (JSON) and weights (arrays) to ``path`` (.npz).
        Nothing in the file is executable; :func:`hetnet.load` reads it back."""
        from .io import save_model
        save_model(self, path)


def _distributed_context(distributed, device):
    """The Context of a ``distributed=`` argument, or None for a plain run
    (also for a job of one rank)."""
    if distributed is None or distributed is False:
        return None
    from .distributed.data_parallel import resolve
    ctx = resolve(distributed, device)
    return ctx if ctx.size > 1 else None


def _call(callbacks, hook, *args):
    results = []
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            results.append(bool(fn(*args)))
    return results


def _progress(verbose, total, desc):
    if not verbose:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="img", unit_scale=True, leave=True,
                dynamic_ncols=True)
