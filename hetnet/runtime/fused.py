"""Whole-chain fusion on an OpenCL device: a built :class:`Sequential`'s
layers trained (and evaluated) as a few generated kernels a step
(:mod:`hetnet.devices.opencl.fused`), the data set resident on the device.

On a GPU whose kernel launches cost ~12 µs each back to back, a LeNet-5 step
of 38 kernels spends most of its time between kernels; fused it is three:
forward + loss + backward per tile of samples, the weight gradients, the
update.  The epoch's loss and accuracy are summed on the device and read
once per epoch.  BatchNorms in training (batch statistics) split the chain
into segments with device reductions between them
(:class:`~hetnet.devices.opencl.fused.SegmentedProgram`): LeNet-5-BN is 19
kernels a step.

Examples
--------
>>> import hetnet as hn
>>> from hetnet.runtime.fused import FusedTrainer
>>> model = hn.models.lenet5(device="gpu", input_shape=(1, 28, 28))   # doctest: +SKIP
>>> trainer = FusedTrainer(model, batch_size=256)                      # doctest: +SKIP
>>> history = trainer.fit(X, y, epochs=5)                              # doctest: +SKIP
>>> trainer.write_back()       # the model's layers get the trained weights   # doctest: +SKIP
"""

import math
import time

import numpy as np

from .._validation import check_X, check_targets, check_positive_int
from ..devices.base import mix32
from ..devices.opencl.fused import (WG, FusedProgram, FusionUnsupported, SegmentedProgram,
                                    bn_unit, conv_unit, dense_unit, pool_unit)
from ..layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,
                      GlobalAvgPool2D, MaxPool2D)
from ..optim import SGD, Adam, RMSProp, get_optimizer
from .flatparams import FlatGroup

__all__ = ["FusedTrainer", "FusionUnsupported", "describe_chain", "device_permutation",
           "unit_weights"]

#: why a chain with BatchNorm is not one fused segment in training (its
#: statistics are the batch's, so one tile of samples cannot normalise on its
#: own): it ends a segment (SegmentedProgram)
BN_TRAINING = "BatchNorm couples the samples of a batch in training"
#: what a BatchNorm in training needs to end a segment
BN_SEGMENT = (f"{BN_TRAINING}, so it ends a fused segment, which needs a Conv2D, Dense or "
              "pool before it")


def _feistel_half(n):
    """Half the bits of the Feistel network that shuffles ``n`` rows: the
    smallest even width 2*half with 2**(2*half) >= n (half >= 1)."""
    return max(1, -(-max(int(n) - 1, 1).bit_length() // 2))


def device_permutation(n, key):
    """The order in which the device shuffle (``fit(shuffle=True)``) visits
    ``n`` rows in an epoch keyed ``key``: position i -> row, the same
    Feistel network with cycle walking as fused.cl's ``feistel_row``.

    Returns
    -------
    ndarray of int64, shape (n,)
        A permutation of ``0 .. n-1``.
    """
    half = np.uint32(_feistel_half(n))
    mask = np.uint32((1 << int(half)) - 1)
    key = np.uint32(int(key) & 0xFFFFFFFF)
    with np.errstate(over="ignore"):
        x = np.arange(n, dtype=np.uint32)
        todo = np.ones(n, dtype=bool)
        while todo.any():
            v = x[todo]
            left, right = v >> half, v & mask
            for k in range(4):
                rk = key + np.uint32((k * 0x9e3779b9) & 0xFFFFFFFF)
                left, right = right, left ^ (mix32(right ^ rk) & mask)
            x[todo] = (left << half) | right
            todo[todo] = x[todo] >= n
    return x.astype(np.int64)


def _weight_starts(model):
    """Where each layer's arrays start in ``model.get_weights()``: id -> index."""
    starts, k = {}, 0
    for layer in model.layers:
        starts[id(layer)] = k
        k += layer.n_weights
    return starts


def describe_chain(model, training=True):
    """The fused units of a built model's steps (activations already
    absorbed by their Dense / Conv2D, a MaxPool2D right after a Conv2D
    merged into it, a GlobalAvgPool2D an average pool of one window, Flatten
    dropped, and in inference Dropout dropped: it is the identity there).

    In training a BatchNorm (batch statistics) is a unit of kind ``"bn"``
    (:func:`hetnet.devices.opencl.fused.bn_unit`, its activation in it)
    where the chain is split into segments
    (:class:`~hetnet.devices.opencl.fused.SegmentedProgram`): a Conv2D,
    Dense or pool unit must come before it in its segment and one after it.

    In inference (``training=False``) a BatchNorm right after a Conv2D or
    Dense with no activation of its own is folded into it: BatchNorm with
    the running statistics is a per-channel affine map, so the unit's
    weights become ``w * s`` per output channel and its bias ``(b - mean) *
    s + beta`` with ``s = gamma / sqrt(running_var + eps)``
    (:func:`unit_weights` computes them), and the BatchNorm's activation
    becomes the unit's.

    Each unit's ``src`` gives the indices in ``model.get_weights()`` of its
    weight and bias (None: no bias; a BatchNorm unit's: gamma and beta, and
    ``run_src`` its running mean's, the variance next), ``bn`` the index of
    the folded BatchNorm's gamma (beta, running_mean, running_var follow) or
    None.

    Returns
    -------
    list of dict
        As :func:`hetnet.devices.opencl.fused.conv_unit` and friends.

    Raises
    ------
    FusionUnsupported
        A layer has no fused template (in training: a BatchNorm with no
        unit before it in its segment, or ending the chain), or the loss is
        not cross-entropy; the message names it.
    """
    if model.loss.name != "cross_entropy":
        raise FusionUnsupported(f"the fused step has the cross_entropy loss only, the model "
                                f"uses {model.loss.name!r}")
    steps = model._steps
    starts = _weight_starts(model)
    units, i = [], 0
    while i < len(steps):
        layer = steps[i]
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        if isinstance(layer, (BatchNorm1D, BatchNorm2D)) and training:
            # the batch's statistics: the chain is split here into segments
            # (SegmentedProgram); the unit before it must be in this segment
            if not units or units[-1]["kind"] == "bn":
                raise FusionUnsupported(
                    f"layer {i} ({layer!r}): {BN_SEGMENT}, and it has none (it is the "
                    "chain's first layer with a fused template or follows another BatchNorm)")
            at = starts[id(layer)]
            unit = bn_unit(layer.num_features, math.prod(layer.input_shape), layer.activation,
                           layer.momentum, layer.eps)
            unit["src"], unit["run_src"] = (at, at + 1), at + 2
            unit["bn"], unit["eps"] = None, layer.eps
            units.append(unit)
            i += 1
            continue
        if isinstance(layer, (BatchNorm1D, BatchNorm2D)):
            raise FusionUnsupported(
                f"layer {i} ({layer!r}) is a BatchNorm with no Conv2D or Dense right before "
                "it to fold into")
        if isinstance(layer, (Conv2D, Dense)):
            at = starts[id(layer)]
            src = (at, at + 1 if layer.bias else None)
            activation, bn = layer.activation, None
            if isinstance(nxt, (BatchNorm1D, BatchNorm2D)) and not training:
                if layer.activation != "identity":
                    raise FusionUnsupported(
                        f"layer {i} ({layer!r}) applies {layer.activation!r} before the "
                        f"BatchNorm after it; only a layer with no activation folds a "
                        "BatchNorm in")
                activation, bn = nxt.activation, (starts[id(nxt)], nxt.eps)
                i += 1
                nxt = steps[i + 1] if i + 1 < len(steps) else None
            bias = layer.bias or bn is not None
            if isinstance(layer, Conv2D):
                c, h, w = layer.input_shape
                pool = None
                if type(nxt) is MaxPool2D and tuple(nxt.padding) == (0, 0):
                    pool = (nxt.size, nxt.stride)
                    i += 1
                unit = conv_unit(c, h, w, layer.out_channels, layer.kernel_size, layer.stride,
                                 layer.pad, activation, bias, pool)
            else:
                unit = dense_unit(layer.in_features, layer.out_features, activation, bias)
            unit["src"] = src
            unit["bn"], unit["eps"] = bn if bn is not None else (None, 0.0)
            units.append(unit)
        elif type(layer) in (MaxPool2D, AvgPool2D):
            if tuple(layer.padding) != (0, 0):
                raise FusionUnsupported(f"layer {i} ({layer!r}) pads its windows; the fused "
                                        "pool template has no padding")
            c, h, w = layer.input_shape
            units.append(pool_unit(c, h, w, layer.size, layer.stride,
                                   average=type(layer) is AvgPool2D))
        elif type(layer) is GlobalAvgPool2D:
            # the mean of each channel: an average pool whose one window is the image
            c, h, w = layer.input_shape
            units.append(pool_unit(c, h, w, (h, w), (h, w), average=True))
        elif type(layer) is Flatten:
            pass                      # NCHW flattened is the same memory
        elif type(layer) is Dropout and not training:
            pass                      # the identity in inference
        else:
            raise FusionUnsupported(f"layer {i} ({layer!r}) has no fused template "
                                    "(Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Flatten, "
                                    "Dense and the activations they absorb do, a BatchNorm "
                                    "after one of them, and in inference Dropout)")
        i += 1
    if units and units[-1]["kind"] == "bn":
        raise FusionUnsupported(f"the chain ends in a BatchNorm ({steps[-1]!r} or before "
                                "it); in training one is fused with a Conv2D, Dense or pool "
                                "after it")
    return units


def unit_weights(units, weights):
    """The units' parameters, in the units' order, from a model's
    ``get_weights()`` list: copies of the layers' arrays, or with a
    BatchNorm folded in (:func:`describe_chain`), computed in float64 and
    rounded once.

    Returns
    -------
    list of ndarray (float32)
        Per unit with parameters: the weight (conv ``(F, C, KH, KW)``, dense
        ``(I, O)``), then the bias ``(F,)`` / ``(O,)`` when it has one.
    """
    out = []
    for u in units:
        if not u["params"]:
            continue
        iw, ib = u["src"]
        w = np.asarray(weights[iw], dtype=np.float32)
        b = None if ib is None else np.asarray(weights[ib], dtype=np.float32)
        if u["bn"] is not None:
            gamma, beta, mean, var = (np.asarray(weights[u["bn"] + k], dtype=np.float64)
                                      for k in range(4))
            scale = gamma / np.sqrt(var + u["eps"])
            # output channels: a conv weight's first axis, a dense weight's last
            w = (w * (scale[:, None, None, None] if u["kind"] == "conv" else scale[None, :]))
            b = ((0.0 if b is None else b.astype(np.float64)) - mean) * scale + beta
        out.append(np.ascontiguousarray(w, dtype=np.float32))
        if b is not None:
            out.append(np.ascontiguousarray(b, dtype=np.float32))
    return out


def optimizer_unsupported(opt):
    """Why the fused update cannot run optimizer ``opt`` ("" when it can)."""
    if not isinstance(opt, (SGD, Adam, RMSProp)):
        return f"the fused update has SGD, Adam, AdamW and RMSProp, got {type(opt).__name__}"
    if getattr(opt, "clip_norm", None) is not None:
        return f"the fused update does not clip the gradient norm (clip_norm={opt.clip_norm})"
    return ""


def _state_buffers(dev, opt, size):
    """The update's state, zeroed: Adam's moments, RMSProp's squares and
    momentum buffer, SGD's velocity."""
    return [dev.zeros((size,)) for _ in range(2 if isinstance(opt, (Adam, RMSProp)) else 1)]


def _check_optimizer(opt):
    reason = optimizer_unsupported(opt)
    if reason:
        raise FusionUnsupported(reason)


class FusedTrainer:
    """Train and evaluate a built model's chain as fused OpenCL kernels.

    The trainer keeps its own copy of the weights (one flat buffer on the
    device, :mod:`hetnet.flatparams` layout), taken from the model when it
    is made; :meth:`write_back` puts them into the model's layers.

    Parameters
    ----------
    model : Sequential
        Built (``input_shape`` known); cross-entropy loss; layers Conv2D,
        MaxPool2D, AvgPool2D, Flatten, Dense with the activations they
        absorb, BatchNorms (in training: the chain's segments end at them,
        :class:`~hetnet.devices.opencl.fused.SegmentedProgram`; for
        ``training=False`` folded into the layer before).
    device : OpenCLDevice, optional
        Default: the device of the model's first step, which must be an
        OpenCL device.
    batch_size : int
        The largest batch the kernels are built for (smaller batches run too).
    optimizer : str, dict or Optimizer, optional
        SGD (momentum, Nesterov, weight decay), Adam, AdamW or RMSProp (with
        or without momentum); default the model's
        optimizer, else ``SGD(lr=0.01)``.
    tile : int, optional
        Samples per work-group (default from the device's local memory).
    train_wg : {256, 512, 1024}, optional
        Work-items per tile (default: :class:`FusedProgram`'s choice).
    eval_tile, eval_wg : int, optional
        The same for inference (:meth:`predict_logits`, :meth:`evaluate`).
    training : bool
        False: an inference trainer (:meth:`predict_logits`,
        :meth:`evaluate`), its chain described for inference
        (:func:`describe_chain`: BatchNorm folded into the layer before it)
        and its buffer holding those units' weights, folded on the host from
        the model's weights and running statistics each time they are
        loaded; it has no training kernels and no optimizer.

    Attributes
    ----------
    program : FusedProgram or SegmentedProgram
        (the latter for a chain with BatchNorms in training)
    segmented : bool
        The chain has BatchNorms in training: it runs as segments between
        them, its running statistics in :attr:`running`.
    kernels_per_step : int
        Kernels one training step launches: 3, or ``4 (K - 1) + 3`` for K
        segments (LeNet-5-BN: 19).

    Raises
    ------
    FusionUnsupported
        The chain cannot be fused; the message says why.
    """

    kernels_per_step = 3

    def __init__(self, model, device=None, batch_size=64, optimizer=None, tile=None,
                 train_wg=None, training=True, eval_tile=None, eval_wg=None):
        model._require_built()
        batch_size = check_positive_int("batch_size", batch_size)
        if device is None:
            device = model._steps[0].device
        if not hasattr(device, "cl_device"):
            raise FusionUnsupported(f"the fused step runs on an OpenCL device, got {device.name}")
        self.model = model
        self.device = dev = device
        self.training = training = bool(training)
        self.units = describe_chain(model, training)
        # training chains hold the model's parameters in its order; an
        # inference chain its units' (BatchNorm folded in)
        shapes = [tuple(s) for u in self.units for s in u["params"]]
        self.layout = FlatGroup(dev, shapes)
        #: BatchNorms in training: the chain runs as segments between them
        self.segmented = any(u["kind"] == "bn" for u in self.units)
        self._eval_args = (eval_tile, eval_wg)
        self._inference = None
        if self.segmented:
            self.program = SegmentedProgram(dev, self.units, self.layout.offsets,
                                            math.prod(model.input_shape), model.n_outputs,
                                            batch_size, tile, train_wg)
            self.kernels_per_step = self.program.kernels_per_step
        else:
            self.program = FusedProgram(dev, self.units, self.layout.offsets,
                                        math.prod(model.input_shape), model.n_outputs,
                                        batch_size, tile, train_wg,
                                        inference_only=not training, eval_tile=eval_tile,
                                        eval_wg=eval_wg)
        self.batch_size = batch_size
        weights = model.get_weights()
        self.w, _ = self.layout.pack([dev.asarray(w) for w in
                                      unit_weights(self.units, weights)])
        # the BatchNorms' running mean and variance (not trained: no gradient,
        # outside the update's buffer), 2 C floats each
        self.running = dev.zeros((max(1, getattr(self.program, "running_floats", 0)),))
        self._upload_running(weights)
        self.stats = dev.zeros((2,))
        self._data = None           # (X, labels, order, n) resident on the device
        if not training:
            self.g, self.optimizer, self.state = None, None, []
            return
        self.g = dev.zeros((self.layout.size,))
        if optimizer is None:
            optimizer = model.optimizer if model.optimizer is not None else SGD(lr=0.01)
        self.optimizer = opt = get_optimizer(optimizer)
        _check_optimizer(opt)
        self.state = _state_buffers(dev, opt, self.layout.size)

    def _require_training(self, what):
        if not self.training:
            raise RuntimeError(f"{what}: this trainer was made for inference "
                               "(training=False); its buffer holds the inference chain's "
                               "weights (BatchNorm folded in), not the model's")

    # ----------------------------------------------------------- weights
    def _bn_units(self):
        return [u for u in self.units if u["kind"] == "bn"]

    def _upload_running(self, weights):
        """The BatchNorms' running statistics from a ``get_weights()`` list."""
        if not self.segmented:
            return
        host = np.zeros(self.running.shape[0], dtype=np.float32)
        for u in self._bn_units():
            c = u["C"]
            host[u["run"]:u["run"] + c] = weights[u["run_src"]]
            host[u["run"] + c:u["run"] + 2 * c] = weights[u["run_src"] + 1]
        import pyopencl as cl
        cl.enqueue_copy(self.device.queue, self.running.base_data, host)

    def get_weights(self):
        """The trainer's weights as numpy arrays, in the model's order (an
        inference trainer's: its units' weights, BatchNorm folded in); a
        BatchNorm's gamma and beta are followed by its running mean and
        variance, as the layer's ``get_weights``."""
        host = self.device.to_host(self.w)
        out = [host[o:o + math.prod(s)].reshape(s).copy()
               for o, s in zip(self.layout.offsets, self.layout.shapes)]
        if not self.segmented:
            return out
        run = self.device.to_host(self.running)
        k, merged = 0, []
        for u in self.units:
            merged += out[k:k + len(u["params"])]
            k += len(u["params"])
            if u["kind"] == "bn":
                c = u["C"]
                merged += [run[u["run"]:u["run"] + c].copy(),
                           run[u["run"] + c:u["run"] + 2 * c].copy()]
        return merged

    def gradients(self):
        """The gradient buffer as numpy arrays (after :meth:`loss_and_gradients`)."""
        self._require_training("gradients")
        host = self.device.to_host(self.g)
        return [host[o:o + math.prod(s)].reshape(s).copy()
                for o, s in zip(self.layout.offsets, self.layout.shapes)]

    def set_flat_weights(self, v):
        """Load weights from one host vector laid out as
        :meth:`hetnet.runtime.Runtime.flat_weights` (each parameter raveled,
        in the model's order)."""
        self._require_training("set_flat_weights")
        v = np.asarray(v, dtype=np.float32).reshape(-1)
        sizes = [math.prod(s) for s in self.layout.shapes]
        if v.shape[0] != sum(sizes):
            raise ValueError(f"a flat weight vector of this model has {sum(sizes)} values, "
                             f"got {v.shape[0]}")
        self._upload(v)

    def _upload(self, v):
        """Copy host vector ``v`` (the units' parameters raveled, in order)
        into the flat buffer at the layout's offsets."""
        import pyopencl as cl
        cl.enqueue_copy(self.device.queue, self.w.base_data, self.layout.from_raveled(v))

    def write_back(self):
        """Copy the trained weights into the model's layers (the model's
        optimizer state is left as it is: the trainer keeps its own)."""
        self._require_training("write_back")
        model, opt = self.model, self.model.optimizer
        saved = (opt.state, opt.t, opt._flat) if opt is not None else None
        model.set_weights(self.get_weights())
        if saved is not None:
            opt.state, opt.t, opt._flat = saved

    def load_weights(self):
        """Take the model's current weights (after they were set or trained
        elsewhere); an inference trainer folds its BatchNorms into them again
        from the current running statistics."""
        weights = self.model.get_weights()
        self._upload(np.concatenate([w.reshape(-1) for w in
                                     unit_weights(self.units, weights)]))
        self._upload_running(weights)

    def set_optimizer(self, optimizer):
        """Train on with ``optimizer`` (SGD, Adam or RMSProp), its state from zero."""
        self._require_training("set_optimizer")
        opt = get_optimizer(optimizer)
        _check_optimizer(opt)
        self.optimizer = opt
        self.state = _state_buffers(self.device, opt, self.layout.size)

    # -------------------------------------------------------------- data
    def set_data(self, X, y):
        """Put ``X`` (float32) and integer labels ``y`` on the device, to be
        trained on by :meth:`fit` (once; kept until other data is set)."""
        model = self.model
        X = check_X(X, model.input_shape)
        yt = check_targets(y, X.shape[0], "cross_entropy", model.n_outputs)
        if yt.ndim == 2:                # one-hot rows
            yt = yt.argmax(axis=1)
        dev = self.device
        self._data = (dev.asarray(X.reshape(X.shape[0], -1)),
                      dev.asarray(yt.astype(np.int32), dtype=np.int32),
                      dev.empty((X.shape[0],), np.int32), X.shape[0])
        return self

    def _resident(self, X, y):
        if X is not None:
            self.set_data(X, y)
        if self._data is None:
            raise RuntimeError("no data on the device: pass X, y or call set_data()")
        return self._data

    # ---------------------------------------------------------- training
    def _bind(self, Xd, yd, order, key=None):
        """Set every argument of the step's kernels once (an epoch); each
        step re-sets only its leading per-step ones.  ``key``: rows in the
        device shuffle's order for that key (``order`` unused), else in
        ``order``."""
        p, opt = self.program, self.optimizer
        n = Xd.shape[0]
        half = 0 if key is None else _feistel_half(n)
        p.bind(p.k_train, 0, 0, 0 if key is None else int(key), half, n, Xd.base_data,
               None if key is not None else order.base_data, yd.base_data,
               self.w.base_data, p.stash.base_data, self.stats.base_data)
        p.bind(p.k_wgrad, 0, p.stash.base_data, self.g.base_data)
        if self.segmented:
            stash, w, g = p.stash.base_data, self.w.base_data, self.g.base_data
            for seg, bn in zip(p.segments, p.bns):
                p.bind(seg.k_fwd, 0, 0, 0 if key is None else int(key), half, n, Xd.base_data,
                       None if key is not None else order.base_data, yd.base_data, w, stash,
                       self.stats.base_data)
                p.bind(seg.k_stats, 0, stash, self.running.base_data, bn["momentum"],
                       bn["eps"], p.counts.base_data)
                p.bind(seg.k_reduce, 0, stash, g, p.counts.base_data)
                p.bind(seg.k_bwd, 0, w, stash, g)
        size = self.layout.size
        if isinstance(opt, Adam):
            l2 = 0.0 if opt._decoupled else opt.weight_decay
            p.bind(p.k_adam, opt.lr, 1.0, 1.0, opt.beta1, size, self.w.base_data,
                   self.g.base_data, self.state[0].base_data, self.state[1].base_data,
                   opt.beta2, opt.eps, l2)
        elif isinstance(opt, RMSProp):
            p.bind(p.k_rmsprop, opt.lr, opt.momentum, size, self.w.base_data, self.g.base_data,
                   self.state[0].base_data, self.state[1].base_data, opt.alpha, opt.eps,
                   opt.weight_decay)
        else:
            p.bind(p.k_sgd, opt.lr, opt.momentum, size, self.w.base_data, self.g.base_data,
                   self.state[0].base_data, opt.weight_decay, int(opt.nesterov))

    def _check_batch(self, n):
        """A BatchNorm in training needs two values a channel (as the layer)."""
        for u in self._bn_units() if self.segmented else ():
            if n * u["S"] < 2:
                raise ValueError(f"BatchNorm in training needs more than one value per "
                                 f"feature, got a batch of {n} with {u['S']} values per "
                                 "channel and sample (use a larger batch_size)")

    def _gradients(self, start, n):
        """Launch the step's forward, backward and weight gradients (not the
        update) on batch rows ``start .. start+n-1``: the gradient buffer
        holds the batch's gradient afterwards."""
        p = self.program
        if self.segmented:
            for j, seg in enumerate(p.segments[:-1]):
                p.launch(seg.k_fwd, seg.train_groups(n), (start, n), wg=seg.train_wg)
                p.launch(seg.k_stats, p.bn_groups(j), (n,))
            last = p.segments[-1]
            p.launch(p.k_train, last.train_groups(n), (start, n), wg=last.train_wg)
            for j in reversed(range(len(p.bns))):
                seg = p.segments[j]
                p.launch(seg.k_reduce, p.bn_groups(j), (n,))
                p.launch(seg.k_bwd, seg.train_groups(n), (n,), wg=seg.train_wg)
        else:
            p.launch(p.k_train, p.train_groups(n), (start, n), wg=p.train_wg)
        p.launch(p.k_wgrad, p.wgrad_groups, (n,))

    def _step(self, start, n, lr):
        """One training step on batch rows ``start .. start+n-1`` of the
        epoch's order: three launches (:attr:`kernels_per_step` for a chain
        with BatchNorms), nothing read back."""
        p, opt = self.program, self.optimizer
        self._gradients(start, n)
        opt.t += 1
        groups = -(-self.layout.size // WG)
        if isinstance(opt, Adam):
            # as Adam.update_group's adam_update: bias corrections and the
            # decoupled (AdamW) decay on the host, once a step
            decay = 1.0 - lr * opt.weight_decay if opt._decoupled else 1.0
            p.launch(p.k_adam, groups, (lr / (1.0 - opt.beta1 ** opt.t),
                                        1.0 / math.sqrt(1.0 - opt.beta2 ** opt.t), decay,
                                        opt.beta1))
        elif isinstance(opt, RMSProp):
            p.launch(p.k_rmsprop, groups, (lr, opt.momentum))
        else:
            p.launch(p.k_sgd, groups, (lr, opt.momentum))

    def fit(self, X=None, y=None, epochs=1, batch_size=None, shuffle=True, seed=None,
            lr_schedule=None, step0=0, total_steps=None):
        """Mini-batch training, each epoch over every sample once (the short
        last batch included), as :meth:`Sequential.fit`.

        Parameters
        ----------
        X, y : arrays, optional
            Put on the device first (:meth:`set_data`); None: the data set
            there already.
        batch_size : int, optional
            At most the trainer's ``batch_size`` (the default).
        shuffle : bool, "host" or array
            True: a fresh shuffle each epoch, made on the device
            (:func:`device_permutation` of a key drawn from ``seed``; no
            order is stored or uploaded); ``"host"``: a numpy permutation
            uploaded each epoch; False: in order; an int array of length n:
            that order every epoch.
        lr_schedule : callable, optional
            ``lr_schedule(step, total_steps) -> lr`` (a schedule object of
            :mod:`hetnet.schedules` is one).
        step0, total_steps : int, optional
            The schedule's step of this call's first batch and its total
            (default 0 and this call's step count): a longer run fed one
            epoch at a time.

        Returns
        -------
        list of dict
            Per epoch: ``loss`` (mean), ``accuracy`` (on the training
            batches, as they were trained on), ``images_per_s``, ``time_s``.
        """
        self._require_training("fit")
        epochs = check_positive_int("epochs", epochs)
        bs = self.batch_size if batch_size is None else check_positive_int("batch_size", batch_size)
        if bs > self.batch_size:
            raise ValueError(f"batch_size {bs} is larger than the {self.batch_size} the "
                             "trainer was built for")
        Xd, yd, order, n = self._resident(X, y)
        schedule = lr_schedule
        if schedule is not None and not callable(schedule):
            raise TypeError(f"lr_schedule must be callable(step, total_steps), got {schedule!r}")
        rng = np.random.default_rng(seed)
        dev = self.device
        import pyopencl as cl
        if isinstance(shuffle, np.ndarray):
            fixed = np.asarray(shuffle, dtype=np.int32)
            if fixed.shape != (n,) or not np.array_equal(np.sort(fixed), np.arange(n)):
                raise ValueError(f"a shuffle order must be a permutation of 0..{n - 1}, "
                                 f"got shape {fixed.shape}")
        elif shuffle not in (True, False, "host"):
            raise ValueError(f"shuffle must be True, False, 'host' or an order array, got "
                             f"{shuffle!r}")
        self._check_batch(min(bs, n))
        if n % bs:
            self._check_batch(n % bs)
        step = int(step0)
        if total_steps is None:
            total_steps = step + epochs * math.ceil(n / bs)
        history = []
        for _ in range(epochs):
            key = None
            if isinstance(shuffle, np.ndarray) or shuffle in (False, "host"):
                idx = (fixed if isinstance(shuffle, np.ndarray) else
                       rng.permutation(n).astype(np.int32) if shuffle == "host" else
                       np.arange(n, dtype=np.int32))
                cl.enqueue_copy(dev.queue, order.base_data, idx, is_blocking=False)
            else:
                key = int(rng.integers(0, 2 ** 31))
            self._bind(Xd, yd, order, key)
            cl.enqueue_fill_buffer(dev.queue, self.stats.base_data, np.zeros(1, np.float32),
                                   0, 8)
            t0 = time.perf_counter()
            for start in range(0, n, bs):
                if schedule is not None:
                    self.optimizer.follow_schedule(schedule, step, total_steps)
                self._step(start, min(bs, n - start), self.optimizer.lr)
                step += 1
            stats = dev.to_host(self.stats)
            dt = time.perf_counter() - t0
            history.append({"loss": float(stats[0]) / n,
                            "accuracy": int(stats[1:2].view(np.int32)[0]) / n,
                            "images_per_s": n / dt, "time_s": dt})
        return history

    def loss_and_gradients(self, X, y):
        """Mean loss of one batch holding all of ``X`` and every parameter's
        gradient (numpy, in :meth:`get_weights` order); no weight changes.
        ``len(X)`` must be at most ``batch_size``."""
        self._require_training("loss_and_gradients")
        Xd, yd, order, n = self._resident(X, y)
        if n > self.batch_size:
            raise ValueError(f"{n} samples, more than the trainer's batch_size {self.batch_size}")
        import pyopencl as cl
        dev, p = self.device, self.program
        cl.enqueue_copy(dev.queue, order.base_data, np.arange(n, dtype=np.int32))
        cl.enqueue_fill_buffer(dev.queue, self.stats.base_data, np.zeros(1, np.float32), 0, 8)
        self._bind(Xd, yd, order)
        self._check_batch(n)
        self._gradients(0, n)
        loss = float(dev.to_host(self.stats)[0]) / n
        grads = self.gradients()
        cl.enqueue_fill_buffer(dev.queue, self.g.base_data, np.zeros(1, np.float32), 0,
                               self.g.nbytes)
        return loss, grads

    # --------------------------------------------------------- inference
    def inference_trainer(self):
        """For a chain with BatchNorms in training: an inference trainer
        (BatchNorm folded in, :func:`describe_chain` ``training=False``)
        holding this trainer's current weights and running statistics,
        folded on the host each call.  :meth:`predict_logits` and
        :meth:`evaluate` run through it."""
        if self._inference is None:
            tile, wg = self._eval_args
            self._inference = FusedTrainer(self.model, self.device, self.batch_size,
                                           training=False, eval_tile=tile, eval_wg=wg)
        inf = self._inference
        inf._upload(np.concatenate([w.reshape(-1) for w in
                                    unit_weights(inf.units, self.get_weights())]))
        return inf

    def _eval(self, X, y, out):
        dev, p = self.device, self.program
        if hasattr(X, "base_data"):        # a device array (n, input size) already there
            Xd, n = X, X.shape[0]
        else:
            X = check_X(X, self.model.input_shape)
            n = X.shape[0]
            Xd = dev.asarray(X.reshape(n, -1))
        yd = None
        if y is not None:
            yt = check_targets(y, n, "cross_entropy", self.model.n_outputs)
            yd = dev.asarray((yt.argmax(axis=1) if yt.ndim == 2 else yt).astype(np.int32),
                             dtype=np.int32)
        import pyopencl as cl
        cl.enqueue_fill_buffer(dev.queue, self.stats.base_data, np.zeros(1, np.float32), 0, 8)
        for start in range(0, n, self.batch_size):
            m = min(self.batch_size, n - start)
            p.launch(p.k_eval, p.eval_groups(m), wg=p.eval_wg, full=(
                     start, m, 0, 0, n, Xd.base_data, None, None if yd is None else yd.base_data,
                      self.w.base_data, p.stash.base_data, self.stats.base_data,
                      None if out is None else out.base_data, int(yd is not None)))
        return n

    def predict_logits(self, X, out=None):
        """Logits ``(n, n_classes)`` of the fused forward, numpy.

        ``X`` may be a device array ``(n, input size)`` on the trainer's
        device; with ``out``, a device array ``(n, n_classes)``, the logits
        are written there and not read back (None is returned)."""
        if self.segmented:
            return self.inference_trainer().predict_logits(X, out)
        n = X.shape[0]
        dest = self.device.empty((n, self.model.n_outputs)) if out is None else out
        self._eval(X, None, dest)
        return self.device.to_host(dest) if out is None else None

    def evaluate(self, X, y):
        """``{"loss", "accuracy"}`` over ``X``, ``y`` with the trainer's weights."""
        if self.segmented:
            return self.inference_trainer().evaluate(X, y)
        n = self._eval(X, y, None)
        stats = self.device.to_host(self.stats)
        return {"loss": float(stats[0]) / n, "accuracy": int(stats[1:2].view(np.int32)[0]) / n}
