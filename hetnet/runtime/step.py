"""One step over placed layers: forward, loss, backward, gradient hooks, update.

A :class:`Runtime` holds a model's layers, the steps they run as (a
dense or convolution layer absorbs the activation after it,
:func:`hetnet.layers.fuse_activations`), the loss and the optimizer.  Each step runs on
its layer's device; activations and gradients move between devices where
consecutive steps differ (:func:`hetnet.runtime.transfer.transfer`).

Storage: on a device with ``flat_update`` (and on every device while a
gradient hook is registered) the parameters and gradients of the steps
there are views into one flat buffer each (:class:`FlatGroup`), so that the
optimizer updates them in one launch and a hook sees every gradient of a
device in one array.
"""

import contextlib

import numpy as np

from ..layers import fuse_activations
from . import population as _population
from . import timing
from .flatparams import FlatGroup
from .transfer import move_step, transfer


def _with_params(layer, arrays):
    """``layer.get_weights()``'s list with its parameters replaced by
    ``arrays`` (in ``layer.params`` order) and its state (BatchNorm's
    running statistics) kept: a plain layer lists its parameters, then its
    state; a block (a Residual) each sub-layer's in turn."""
    subs = getattr(layer, "sublayers", None)
    if not subs:
        return list(arrays) + [layer.device.to_host(layer.state[k]) for k in layer.state]
    out, i = [], 0
    for sub in subs:
        k = len(sub.params)
        out += _with_params(sub, arrays[i:i + k])
        i += k
    return out


class Runtime:
    """Runs training and inference steps over built, placed layers.

    Parameters
    ----------
    layers : list of Layer
        Built layers in model order (the order of parameters: the
        optimizer's indices and :meth:`flat_weights`).
    loss : hetnet.losses.Loss
    optimizer : hetnet.optim.Optimizer, optional
        Needed for :meth:`train_step`; settable later (:attr:`optimizer`).

    Attributes
    ----------
    steps : list of Layer
        The layers as they run, activations fused.
    """

    def __init__(self, layers, loss, optimizer=None):
        self.layers = list(layers)
        self.steps = fuse_activations(self.layers)
        self.loss = loss
        self.optimizer = optimizer
        self._param_index, k = {}, 0
        for layer in self.layers:
            self._param_index[id(layer)] = k
            k += len(layer.params)
        self.n_param_arrays = k
        self._hooks = []
        self._dlogits = self._dlogits_dev = None
        self._input_buffer = self._input_buffer_dev = None
        self._flats = {}          # device -> its parameters in one buffer (flat_group)
        self.measure_pool = None  # timing's stand-in data set (hetnet.runtime.timing)
        #: why the last population_loss took the generic path (None: it was batched)
        self.population_fallback_reason = None

    # ------------------------------------------------------------ shapes
    @property
    def input_shape(self):
        return self.layers[0].input_shape

    @property
    def n_outputs(self):
        return self.layers[-1].output_shape[0]

    # --------------------------------------------------------- placement
    @property
    def out_device(self):
        """The device of the last step: where the loss and outputs live."""
        return self.steps[-1].device

    def devices_in_use(self):
        """The devices the steps run on, each once, in step order."""
        return list(dict.fromkeys(s.device for s in self.steps))

    def place(self, devices):
        """Move step ``i`` (its parameters and the optimizer's state for
        them) to ``devices[i]``."""
        if len(devices) != len(self.steps):
            raise ValueError(f"a placement needs {len(self.steps)} devices, got {len(devices)}")
        for step, dev in zip(self.steps, devices):
            move_step(step, dev, self.optimizer, [i for i, _ in self.param_slots(step)])

    def session(self):
        """A context in which every device in use holds its session (thread settings)."""
        stack = contextlib.ExitStack()
        for dev in self.devices_in_use():
            stack.enter_context(dev.session())
        return stack

    def synchronize(self):
        """Wait for every device in use."""
        for d in self.devices_in_use():
            d.synchronize()

    # -------------------------------------------------------- parameters
    def param_slots(self, step):
        """``(index, name)`` of each of ``step``'s parameters, ``index``
        being its place in the model's parameter order (the optimizer's key)."""
        k = self._param_index[id(step)]
        return [(k + j, name) for j, name in enumerate(step.params)]

    def param_sizes(self):
        """Elements of each parameter array, in parameter order."""
        return [int(np.prod(layer.params[k].shape)) for layer in self.layers for k in layer.params]

    def flat_weights(self):
        """Every parameter in one float32 host vector ``(n_params,)``, in
        :meth:`hetnet.Sequential.get_weights` order, each array raveled."""
        parts = [layer.device.to_host(layer.params[k]).reshape(-1)
                 for layer in self.layers for k in layer.params]
        return np.concatenate(parts).astype(np.float32, copy=False) if parts else \
            np.zeros(0, np.float32)

    def set_flat_weights(self, v):
        """Load the parameters from a vector laid out as :meth:`flat_weights`."""
        v = np.asarray(v, dtype=np.float32)
        sizes = self.param_sizes()
        if v.shape != (sum(sizes),):
            raise ValueError(f"a flat weight vector of this model has shape ({sum(sizes)},), "
                             f"got {v.shape}")
        at = 0
        for layer in self.layers:
            arrays = []
            for k in layer.params:
                shape = tuple(layer.params[k].shape)
                n = int(np.prod(shape))
                arrays.append(v[at:at + n].reshape(shape))
                at += n
            if arrays:
                layer.set_weights(_with_params(layer, arrays))

    def flat_gradient(self):
        """Every parameter's gradient from the last backward pass, one host
        vector laid out as :meth:`flat_weights`."""
        parts = [layer.device.to_host(layer.grads[k]).reshape(-1)
                 for layer in self.layers for k in layer.params]
        return np.concatenate(parts).astype(np.float32, copy=False) if parts else \
            np.zeros(0, np.float32)

    def flat_group(self, dev):
        """The parameters and gradients of the steps on ``dev``, each a view
        into one flat array (:class:`FlatGroup`), so that the optimizer
        updates them all in one launch.  Laid out again (their current
        values copied in) whenever a step's arrays were replaced since:
        weights set, steps moved, or timing's copies.  Returns a dict with
        ``group``, ``w``, ``g`` (the flat arrays), ``indices`` (parameter
        order of each view) and the views."""
        slots = [(step, name, index) for step in self.steps
                 if step.device is dev and step.params
                 for index, name in self.param_slots(step)]
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

    # ------------------------------------------------------ gradient hooks
    def add_gradient_hook(self, fn):
        """Call ``fn(grads)`` after every training step's whole backward
        pass, before any parameter is updated.

        ``grads`` is a dict ``{device: flat gradient array}``, one per
        device holding parameters: every parameter gradient of that
        device's steps, laid out by the device's :class:`FlatGroup` (views
        of it are the layers' ``grads``), on the device.  ``fn`` may
        change them in place (e.g. average them across processes; on a
        device array write back with ``dev.scale(0.0, g)`` and
        ``dev.axpy(1.0, dev.asarray(host), g)``); the update reads them
        after every hook has run.  With a hook registered a step runs
        backward to the end, then the hooks, then the update; without one
        each step's parameters are updated as soon as the backward pass
        has their gradients (still in cache).  Returns ``fn``.
        """
        if not callable(fn):
            raise TypeError(f"a gradient hook must be callable, got {fn!r}")
        self._hooks.append(fn)
        return fn

    def remove_gradient_hook(self, fn):
        """Stop calling ``fn`` (registered by :meth:`add_gradient_hook`)."""
        self._hooks.remove(fn)

    @property
    def gradient_hooks(self):
        return tuple(self._hooks)

    # ------------------------------------------------------------- compute
    def forward(self, x, training, after_step=None):
        """Run the steps on ``x`` (on the first step's device), moving it
        between devices as placed; ``after_step(i)``, if given, is called
        after step ``i``.  Returns the logits on :attr:`out_device`."""
        src = self.steps[0].device
        for i, layer in enumerate(self.steps):
            x = transfer(x, src, layer.device)
            src = layer.device
            x = layer.forward(x, training)
            if after_step is not None:
                after_step(i)
        return x

    def backward(self, dlogits, after_step=None):
        """Back-propagate ``dlogits`` through the steps, filling every
        layer's ``grads``; ``after_step(i)`` after step ``i``."""
        dy, src = dlogits, self.out_device
        for i in range(len(self.steps) - 1, -1, -1):
            step = self.steps[i]
            dy = step.backward(transfer(dy, src, step.device), need_dx=i > 0)
            src = step.device
            if after_step is not None:
                after_step(i)

    def loss_op(self, logits, target, weights):
        """The fused loss on the output device: ``(loss, dlogits)``, the
        loss a 1-element device array, ``dlogits`` a buffer kept between steps."""
        dev = self.out_device
        grad = self._dlogits
        if grad is None or tuple(grad.shape) != tuple(logits.shape) or self._dlogits_dev is not dev:
            grad = self._dlogits = dev.empty(tuple(logits.shape))
            self._dlogits_dev = dev
        return getattr(dev, self.loss.op)(logits, target, weights, grad_out=grad)

    def gather_inputs(self, X, idx):
        """Rows ``idx`` of host ``X`` on the first step's device, in a buffer
        reused from the previous call."""
        dev = self.steps[0].device
        buf = self._input_buffer if self._input_buffer_dev is dev else None
        xb = self._input_buffer = dev.gather_rows(X, idx, out=buf)
        self._input_buffer_dev = dev
        return xb

    def batch_to_device(self, X, yt, sw, idx):
        """Inputs to the first step's device, targets (and sample weights)
        to the loss's: ``(xb, yb, wb)``."""
        return (self.gather_inputs(X, idx),) + self.targets_to_device(yt, sw, idx)

    def targets_to_device(self, yt, sw, idx):
        dev = self.out_device
        return (dev.asarray(yt[idx], dtype=yt.dtype),
                None if sw is None else dev.asarray(sw[idx]))

    def train_step(self, xb, yb, wb=None, after_step=None):
        """One forward/backward/update on device arrays (the placement as
        it is); returns the device loss.  ``after_step(i)``, if given, runs
        after step ``i`` of the forward and of the backward pass."""
        logits = self.forward(xb, True, after_step)
        loss, dlogits = self.loss_op(logits, yb, wb)
        self.optimizer.begin_step()
        if not self._hooks:
            if after_step is None:
                self.backward(dlogits, self.update_step)
            else:
                def update_then(i):
                    self.update_step(i)
                    after_step(i)
                self.backward(dlogits, update_then)
            self.optimizer.end_step()
            return loss
        self.backward(dlogits, after_step)
        grads = {dev: self.flat_group(dev)["g"] for dev in self.devices_in_use()
                 if any(s.params for s in self.steps if s.device is dev)}
        for hook in self._hooks:
            hook(grads)
        for i in range(len(self.steps) - 1, -1, -1):
            self.update_step(i)
        self.optimizer.end_step()   # clip_norm's held updates, after the hooks' averaging
        return loss

    def update_step(self, i):
        """Update step ``i``'s parameters from their gradients.  On a device
        with ``flat_update`` (or any device while a hook is registered:
        the gradients are then in one buffer a device) every parameter
        there is updated at once, after the last of its steps the backward
        pass reaches (the one with the lowest index)."""
        step = self.steps[i]
        if not step.params:
            return
        dev = step.device
        if dev.flat_update or self._hooks:
            first = next(j for j, s in enumerate(self.steps) if s.device is dev and s.params)
            if i != first:
                return
            flat = self.flat_group(dev)
            if dev.flat_update:
                self.optimizer.update_group(dev, flat["indices"], flat["group"],
                                            flat["w"], flat["g"])
                return
            steps = [s for s in self.steps if s.device is dev and s.params]
        else:
            steps = [step]
        for s in steps:
            for index, name in self.param_slots(s):
                self.optimizer.update(dev, index, s.params[name], s.grads[name])

    # --------------------------------------------------- many weight vectors
    def population_loss(self, weights, X, y, sample_weight=None, method="auto"):
        """The loss of each of ``P`` weight vectors on one batch.

        ``method="batched"`` (what ``"auto"`` takes when every step has one,
        on one device): all P candidates in one pass,
        :func:`hetnet.runtime.population.population_loss`.  ``"generic"``
        (``"auto"``'s fallback, for a placement over several
        devices or a layer kind without a batched pass; :attr:`population_fallback_reason` says why):
        each candidate is loaded into the parameter storage
        (:meth:`set_flat_weights`), the steps run forward in training mode
        and the loss is read; the weights in place before the call are
        restored at the end.  Both leave every layer's weights and state
        as they were, except that the generic path runs BatchNorm in
        training mode and so moves its running statistics.

        Parameters
        ----------
        weights : array (P, n_params) float32
            Flat weight vectors laid out as :meth:`flat_weights`.
        X : host array (n, *input_shape)
        y : host targets as the loss takes them (checked by the caller)
        sample_weight : host array (n,), optional

        Returns
        -------
        losses : ndarray (P,) float64
        """
        W = np.asarray(weights, dtype=np.float32)
        n_params = sum(self.param_sizes())
        if W.ndim != 2 or W.shape[1] != n_params:
            raise ValueError(f"weights must be (P, {n_params}) flat weight vectors, got shape "
                             f"{W.shape}")
        if method not in ("auto", "batched", "generic"):
            raise ValueError(f"method must be 'auto', 'batched' or 'generic', got {method!r}")
        reason = _population.unsupported_reason(self.steps)
        self.population_fallback_reason = reason
        if method == "batched" and reason is not None:
            raise ValueError(f"no batched population pass for this model: {reason}")
        if method != "generic" and reason is None:
            return _population.population_loss(self, W, X, y, sample_weight)
        saved = self.flat_weights()
        out = np.empty(W.shape[0], dtype=np.float64)
        try:
            xb, yb, wb = self.batch_to_device(X, y, sample_weight, slice(None))
            for p in range(W.shape[0]):
                self.set_flat_weights(W[p])
                loss, _ = self.loss_op(self.forward(xb, True), yb, wb)
                out[p] = float(self.out_device.to_host(loss)[0])
        finally:
            self.set_flat_weights(saved)
        return out

    def loss_and_gradients(self, X, y, sample_weight=None, training=True, read_gradients=True):
        """Loss of one batch holding all of host ``X`` and the gradient of
        every parameter (device arrays, the layers' ``grads``), the layers
        in training mode or not; changes no weight.  Returns
        ``(float loss, [gradient per parameter as host arrays])``; with
        ``read_gradients=False`` the list is empty and the gradients stay
        on the devices (read them with :meth:`flat_gradient`)."""
        xb, yb, wb = self.batch_to_device(X, y, sample_weight, slice(None))
        loss, dlogits = self.loss_op(self.forward(xb, training), yb, wb)
        self.backward(dlogits)
        grads = [layer.device.to_host(layer.grads[k]) for layer in self.layers
                 for k in layer.params] if read_gradients else []
        return float(self.out_device.to_host(loss)[0]), grads

    # -------------------------------------------------------------- timing
    def measure_step(self, batch, training, repeats=3, min_seconds=0.02):
        """Wall seconds per step in the current placement (:func:`hetnet.runtime.timing.measure_step`)."""
        return timing.measure_step(self, batch, training, repeats, min_seconds)

    def step_time(self, batch, training, windows=3, repeats=3, min_seconds=0.02):
        """Median of ``windows`` :meth:`measure_step` windows."""
        return timing.step_time(self, batch, training, windows, repeats, min_seconds)

    def measure_placement(self, devices, batch, training, repeats=3):
        """Place the steps on ``devices`` (one per step) and return
        :meth:`measure_step`: the "measure this placement" callable the
        scheduler takes (:meth:`hetnet.sched.placement.Placement.plan`)."""
        self.place(devices)
        return self.measure_step(batch, training, repeats)

    def release_pool(self):
        """Drop the stand-in data set timed steps gather from."""
        self.measure_pool = None


def measure_chain(layers, device, input_shape, batch, training, loss, repeats=20):
    """Seconds of one step of ``layers`` (fresh, unbuilt) on ``device`` at
    ``batch``, through the same step code :meth:`hetnet.Sequential.fit`
    runs: what the cost model's step overheads are measured with
    (:func:`hetnet.sched.costmodel.measure_overheads`).  Builds the layers
    (seed 0); returns ``(steps, seconds)``, ``steps`` the fused steps."""
    rng = np.random.default_rng(0)
    shape = tuple(input_shape)
    for layer in layers:
        shape = layer.build(device, shape, rng)
    rt = Runtime(layers, loss)
    return rt.steps, rt.measure_step(batch, training, repeats=repeats)


__all__ = ["Runtime", "fuse_activations", "measure_chain"]
