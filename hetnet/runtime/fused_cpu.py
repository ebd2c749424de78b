"""Whole-chain fusion on the CPU device: a built :class:`Sequential`'s
training step run per tile of samples (:mod:`hetnet._cpu.fused`), one
OpenMP thread a tile, instead of layer by layer over the whole batch.

The layer-by-layer CPU step writes every layer's activations, unrolled
patches and gradients for the whole batch to memory and reads them back in
the next layer.  Fused, a thread runs forward, softmax cross-entropy and
backward of ``T`` samples with everything in a workspace of its own sized
to half its core's L2 cache, adding the parameter gradients into its own
flat buffer; the buffers are summed once a step and the optimizer updates
the flat parameters (:mod:`hetnet.runtime.flatparams` layout).

The chain is the one :func:`hetnet.runtime.fused.describe_chain` gives the
OpenCL fused step (Conv2D with its activation and a MaxPool2D after it,
MaxPool2D, AvgPool2D, GlobalAvgPool2D, Flatten, Dense), ending in a Dense;
:func:`descriptors` turns it into the kernel's rows of ints.

Examples
--------
>>> import hetnet as hn
>>> from hetnet.runtime.fused_cpu import CPUFusedTrainer
>>> model = hn.models.lenet5(input_shape=(1, 28, 28))                  # doctest: +SKIP
>>> trainer = CPUFusedTrainer(model, batch_size=64)                    # doctest: +SKIP
>>> history = trainer.fit(X, y, epochs=1)                              # doctest: +SKIP
>>> trainer.write_back()                                               # doctest: +SKIP
"""

import math
import time

import numpy as np

from .._cpu import fused as _kernel
from .._validation import check_X, check_targets, check_positive_int
from ..optim import SGD, Adam, RMSProp, get_optimizer
from .flatparams import FlatGroup
from .fused import FusionUnsupported, describe_chain, optimizer_unsupported, unit_weights

__all__ = ["CPU_DECISIONS", "CPUFusedTrainer", "chain_signature", "descriptors",
           "is_cpu_device", "l2_cache_bytes"]

#: share of a core's L2 cache one thread's workspace should use at most
L2_SHARE = 0.5
#: largest tile of samples
MAX_TILE = 64
#: workspace buffers start at multiples of this many floats (a cache line)
_LINE = 16


def is_cpu_device(dev):
    """True for hetnet's Cython CPU device (not the numpy reference device,
    not an OpenCL CPU device)."""
    from ..devices.cpu import CPUDevice
    return isinstance(dev, CPUDevice)


def l2_cache_bytes(default=1 << 20):
    """The L2 cache of CPU 0 in bytes (Linux's sysfs), else ``default``."""
    try:
        for index in range(4):
            base = f"/sys/devices/system/cpu/cpu0/cache/index{index}/"
            with open(base + "level") as f:
                if f.read().strip() != "2":
                    continue
            with open(base + "size") as f:
                text = f.read().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
            return int(text.rstrip("KM")) * scale
    except (OSError, ValueError):
        pass
    return default


#: the measured choices of ``fuse="auto"`` on the CPU, shared by the models
#: of one process: (what, :func:`chain_signature`, size, threads) ->
#: (use fused, reason).  The fused and layer paths round differently, and
#: two timings of nearly equal paths may fall either way: without this two
#: identical models (the same seed) could train differently.
CPU_DECISIONS = {}


def chain_signature(model):
    """A hashable description of the model's training chain (its units'
    sizes and activations, not its weights)."""
    return tuple(tuple(sorted((k, repr(v)) for k, v in u.items() if k not in ("src", "bn")))
                 for u in cpu_units(model))


def cpu_units(model):
    """The units of the model's training chain, checked for the CPU kernel:
    :func:`describe_chain`'s, ending in a Dense (the logits as rows), with no
    BatchNorm (the GPU's fused step has a BatchNorm unit, this kernel not)."""
    units = describe_chain(model, training=True)
    if any(u["kind"] == "bn" for u in units):
        raise FusionUnsupported("BatchNorm couples the samples: the fused CPU step has no "
                                "BatchNorm unit (its statistics need the whole batch)")
    if not units or units[-1]["kind"] != "dense":
        raise FusionUnsupported("the fused CPU step needs the chain to end in a Dense layer")
    return units


def _spatial_out_channels(u):
    return u["F"] if u["kind"] == "conv" else u["C"]


def descriptors(units, offsets, tile):
    """The kernel's description of ``units`` for tiles of ``tile`` samples.

    ``offsets``: where each parameter (units' ``params`` in order) starts in
    the flat buffer.  Returns ``(desc, floats, ints)``: the int32 rows
    (:data:`hetnet._cpu.fused.UNIT_FIELDS` per unit) and the floats and ints
    one thread's workspace needs."""
    fields = _kernel.FIELDS
    desc = np.zeros((len(units), _kernel.UNIT_FIELDS), dtype=np.int32)
    sizes = {"f": 0, "i": 0}

    def take(n, kind="f"):
        at = sizes[kind]
        sizes[kind] += -(-int(n) // _LINE) * _LINE
        return at

    scratch = {"dcols": 0, "dy": 0}
    params = iter(offsets)
    for i, u in enumerate(units):
        row = desc[i]
        put = lambda name, value: row.__setitem__(fields[name], int(value))   # noqa: E731
        put("kind", _kernel.KINDS[u["kind"]])
        put("b_off", -1)
        put("gin", -1)
        prev = units[i - 1] if i else None
        if u["kind"] == "dense":
            put("C", u["I"]), put("F", u["O"]), put("ACT", u["ACT"])
            if prev is not None and prev["kind"] != "dense":
                put("trans", 1)
                put("prev_c", _spatial_out_channels(prev))
                put("in", take(tile * u["I"]))
            put("out", take(tile * u["O"]))
        else:
            for k in ("C", "H", "W", "QH", "QW", "QSH", "QSW", "HO", "WO"):
                put(k, u[k])
            if u["kind"] == "conv":
                for k in ("F", "KH", "KW", "SH", "SW", "PH", "PW", "CH", "CW", "ACT"):
                    put(k, u[k])
                put("pooled", int(u["pooled"]))
                p = u["CH"] * u["CW"]
                put("cols", take(tile * u["C"] * u["KH"] * u["KW"] * p))
                put("y", take(tile * u["F"] * p))
                if u["pooled"]:
                    put("out", take(tile * u["out"]))
                    put("arg", take(tile * u["out"], "i"))
                    scratch["dy"] = max(scratch["dy"], tile * u["F"] * p)
                else:
                    row[fields["out"]] = row[fields["y"]]
                if i:
                    scratch["dcols"] = max(scratch["dcols"],
                                           tile * u["C"] * u["KH"] * u["KW"] * p)
            else:
                put("F", u["C"]), put("CH", u["H"]), put("CW", u["W"])
                put("pooled", 1), put("avg", u["AVG"])
                put("out", take(tile * u["out"]))
                if not u["AVG"]:
                    put("arg", take(tile * u["out"], "i"))
        put("gout", take(tile * u["out"]))
        if u["params"]:
            put("w_off", next(params))
            if len(u["params"]) == 2:
                put("b_off", next(params))
    for i, u in enumerate(units):
        row = desc[i]
        if i == 0:
            row[fields["in"]] = take(tile * u["in"])
            continue
        prev = desc[i - 1]
        if row[fields["trans"]]:
            row[fields["prev_out"]] = prev[fields["out"]]
            row[fields["prev_gout"]] = prev[fields["gout"]]
            row[fields["gin"]] = take(tile * u["in"])
        else:
            row[fields["in"]] = prev[fields["out"]]
            row[fields["gin"]] = prev[fields["gout"]]
    dcols = take(scratch["dcols"]) if scratch["dcols"] else 0
    dy = take(scratch["dy"]) if scratch["dy"] else 0
    desc[:, fields["dcols"]] = dcols
    desc[:, fields["dy"]] = dy
    return desc, max(sizes["f"], 1), max(sizes["i"], 1)


def choose_tile(units, offsets, batch, threads, cache_bytes=None):
    """Samples per tile: as many as keep one thread's workspace within
    :data:`L2_SHARE` of the L2 cache (at least 1, at most :data:`MAX_TILE`),
    and no more than give every thread a tile of ``batch``."""
    budget = L2_SHARE * (l2_cache_bytes() if cache_bytes is None else cache_bytes)
    _, floats, ints = descriptors(units, offsets, 1)
    fit = int(budget // (4 * (floats + ints)))
    return max(1, min(MAX_TILE, fit, -(-batch // max(threads, 1))))


class CPUFusedTrainer:
    """Train a built model's chain with the fused per-tile CPU kernel.

    The trainer keeps its own flat copy of the weights (and its own
    optimizer state), taken from the model when it is made;
    :meth:`write_back` puts them into the model's layers.  Same role and
    methods as :class:`hetnet.runtime.fused.FusedTrainer` for training.

    Parameters
    ----------
    model : Sequential
        Built; cross-entropy loss; Conv2D, MaxPool2D, AvgPool2D,
        GlobalAvgPool2D, Flatten and Dense layers with the activations they
        absorb, the last a Dense.
    device : CPUDevice, optional
        Default: the device of the model's first step.
    batch_size : int
        The batch the tile is chosen for (any batch runs).
    optimizer : str, dict or Optimizer, optional
        SGD (momentum, Nesterov, weight decay), Adam, AdamW or RMSProp;
        default the model's optimizer, else ``SGD(lr=0.01)``.
    tile : int, optional
        Samples per tile (default :func:`choose_tile`).
    num_threads : int, optional
        OpenMP threads (default the device's).

    Raises
    ------
    FusionUnsupported
        The chain or the optimizer has no fused form; the message says why.
    """

    #: :func:`hetnet.model.fit.fit_fused` passes each epoch's order (the
    #: layer path's permutation from the model's shuffle generator), so a
    #: fused fit visits the samples as a layer-by-layer one does
    orders_on_host = True

    def __init__(self, model, device=None, batch_size=64, optimizer=None, tile=None,
                 num_threads=None):
        model._require_built()
        batch_size = check_positive_int("batch_size", batch_size)
        if device is None:
            device = model._steps[0].device
        if not is_cpu_device(device):
            raise FusionUnsupported(f"the fused CPU step runs on the CPU device, got "
                                    f"{getattr(device, 'name', device)}")
        self.model = model
        self.device = dev = device
        self.units = cpu_units(model)
        self.layout = FlatGroup(dev, [tuple(s) for u in self.units for s in u["params"]])
        self.threads = check_positive_int("num_threads", dev.num_threads if num_threads is None
                                          else num_threads)
        self.batch_size = batch_size
        self.tile = (choose_tile(self.units, self.layout.offsets, batch_size, self.threads)
                     if tile is None else check_positive_int("tile", tile))
        self.desc, floats, ints = descriptors(self.units, self.layout.offsets, self.tile)
        size, nt = self.layout.size, self.threads
        self.w = np.zeros(size, dtype=np.float32)
        self.g = np.zeros(size, dtype=np.float32)
        self._partial = np.zeros((nt, size), dtype=np.float32)
        self._ws = np.zeros((nt, floats), dtype=np.float32)
        self._iws = np.zeros((nt, ints), dtype=np.int32)
        self._stats = np.zeros((nt, 2), dtype=np.float64)
        self.n_classes = int(self.units[-1]["O"])
        self.load_weights()
        if optimizer is None:
            optimizer = model.optimizer if model.optimizer is not None else SGD(lr=0.01)
        self.set_optimizer(optimizer)
        self._data = None

    # ----------------------------------------------------------- weights
    def _views(self, flat):
        return [flat[o:o + math.prod(s)].reshape(s)
                for o, s in zip(self.layout.offsets, self.layout.shapes)]

    def get_weights(self):
        """The trainer's weights as numpy arrays, in the model's order."""
        return [v.copy() for v in self._views(self.w)]

    def gradients(self):
        """The last pass's gradients (:meth:`loss_and_gradients`), in the model's order."""
        return [v.copy() for v in self._views(self.g)]

    def set_flat_weights(self, v):
        """Load weights from one vector laid out as
        :meth:`hetnet.runtime.Runtime.flat_weights` (each parameter raveled,
        in the model's order)."""
        v = np.asarray(v, dtype=np.float32).reshape(-1)
        sizes = [math.prod(s) for s in self.layout.shapes]
        if v.shape[0] != sum(sizes):
            raise ValueError(f"a flat weight vector of this model has {sum(sizes)} values, "
                             f"got {v.shape[0]}")
        self.w[:] = self.layout.from_raveled(v)

    def load_weights(self):
        """Take the model's current weights."""
        for view, a in zip(self._views(self.w), unit_weights(self.units, self.model.get_weights())):
            view[...] = a

    def write_back(self):
        """Copy the trained weights into the model's layers (the model's
        optimizer state is left as it is: the trainer keeps its own)."""
        model, opt = self.model, self.model.optimizer
        saved = (opt.state, opt.t, opt._flat) if opt is not None else None
        model.set_weights(self.get_weights())
        if saved is not None:
            opt.state, opt.t, opt._flat = saved

    def set_optimizer(self, optimizer):
        """Train on with ``optimizer`` (SGD, Adam or RMSProp), its state from zero."""
        opt = get_optimizer(optimizer)
        reason = optimizer_unsupported(opt)
        if reason:
            raise FusionUnsupported(reason)
        self.optimizer = opt
        count = 2 if isinstance(opt, (Adam, RMSProp)) else 1
        self.state = [np.zeros(self.layout.size, dtype=np.float32) for _ in range(count)]

    # -------------------------------------------------------------- data
    def set_data(self, X, y):
        """Keep ``X`` (float32 rows) and integer labels ``y`` for :meth:`fit`."""
        model = self.model
        X = check_X(X, model.input_shape)
        yt = check_targets(y, X.shape[0], "cross_entropy", model.n_outputs)
        if yt.ndim == 2:                # one-hot rows
            yt = yt.argmax(axis=1)
        labels = np.ascontiguousarray(yt, dtype=np.int32)
        if labels.size and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise ValueError(f"labels must be in [0, {self.n_classes}), got "
                             f"[{labels.min()}, {labels.max()}]")
        self._data = (np.ascontiguousarray(X.reshape(X.shape[0], -1), dtype=np.float32),
                      labels, X.shape[0])
        return self

    def _resident(self, X, y):
        if X is not None:
            self.set_data(X, y)
        if self._data is None:
            raise RuntimeError("no data: pass X, y or call set_data()")
        return self._data

    # ---------------------------------------------------------- the kernel
    def _run(self, X, rows, start, n, labels, train, logits=None):
        """One pass of the kernel; ``(loss sum, correct)``."""
        empty_f2 = np.empty((0, 0), dtype=np.float32)
        with self.device.session():
            return _kernel.run(self.desc, self.w, self.g if train else self.g[:0],
                               self._partial if train else empty_f2, X, rows, int(start),
                               int(n), labels, empty_f2 if logits is None else logits,
                               self._ws, self._iws, self.tile, self.threads, bool(train),
                               self._stats)

    def _update(self, lr):
        """The optimizer's step on the flat parameters with gradient :attr:`g`."""
        opt, dev = self.optimizer, self.device
        opt.t += 1
        if isinstance(opt, Adam):
            dev.adam_update(self.w, self.g, self.state[0], self.state[1], lr, opt.beta1,
                            opt.beta2, opt.eps, opt.t, opt.weight_decay, opt._decoupled)
        elif isinstance(opt, RMSProp):
            dev.rmsprop_update(self.w, self.g, self.state[0],
                               self.state[1] if opt.momentum else None, lr, opt.alpha, opt.eps,
                               opt.momentum, opt.weight_decay)
        else:
            dev.sgd_update(self.w, self.g, self.state[0] if opt.momentum else None, lr,
                           opt.momentum, opt.weight_decay, opt.nesterov)

    def train_step(self, X, labels, rows, start, n, lr=None):
        """One step on positions ``start .. start+n-1`` of ``rows``: forward,
        backward, update.  Returns ``(loss sum, correct)``."""
        out = self._run(X, rows, start, n, labels, True)
        self._update(self.optimizer.lr if lr is None else lr)
        return out

    # ---------------------------------------------------------- training
    def fit(self, X=None, y=None, epochs=1, batch_size=None, shuffle=True, seed=None,
            lr_schedule=None, step0=0, total_steps=None):
        """Mini-batch training, as :meth:`hetnet.runtime.fused.FusedTrainer.fit`:
        each epoch over every sample once (the short last batch included);
        ``shuffle`` True (or ``"host"``): a fresh permutation from ``seed``
        each epoch, False: in order, an int array: that order.

        Returns
        -------
        list of dict
            Per epoch: ``loss`` (mean), ``accuracy``, ``images_per_s``, ``time_s``.
        """
        epochs = check_positive_int("epochs", epochs)
        bs = self.batch_size if batch_size is None else check_positive_int("batch_size", batch_size)
        Xh, labels, n = self._resident(X, y)
        if lr_schedule is not None and not callable(lr_schedule):
            raise TypeError(f"lr_schedule must be callable(step, total_steps), got "
                            f"{lr_schedule!r}")
        if isinstance(shuffle, np.ndarray):
            fixed = np.ascontiguousarray(shuffle, dtype=np.int32)
            if fixed.shape != (n,) or not np.array_equal(np.sort(fixed), np.arange(n)):
                raise ValueError(f"a shuffle order must be a permutation of 0..{n - 1}, "
                                 f"got shape {fixed.shape}")
        elif shuffle not in (True, False, "host"):
            raise ValueError(f"shuffle must be True, False, 'host' or an order array, got "
                             f"{shuffle!r}")
        rng = np.random.default_rng(seed)
        step = int(step0)
        if total_steps is None:
            total_steps = step + epochs * math.ceil(n / bs)
        opt = self.optimizer
        history = []
        for _ in range(epochs):
            rows = (fixed if isinstance(shuffle, np.ndarray) else
                    np.arange(n, dtype=np.int32) if shuffle is False else
                    rng.permutation(n).astype(np.int32))
            loss = correct = 0.0
            t0 = time.perf_counter()
            for start in range(0, n, bs):
                if lr_schedule is not None:
                    opt.follow_schedule(lr_schedule, step, total_steps)
                m = min(bs, n - start)
                batch_loss, batch_correct = self.train_step(Xh, labels, rows, start, m)
                loss += batch_loss
                correct += batch_correct
                step += 1
            dt = time.perf_counter() - t0
            # as hetnet.model.health.fold_weights: 0 * sum(w^2) in float32, so that
            # weights that overflowed (or hold NaN) make the epoch's loss NaN
            with np.errstate(over="ignore", invalid="ignore"):
                loss += float(np.float32(0.0) * np.dot(self.w, self.w))
            history.append({"loss": loss / n, "accuracy": correct / n,
                            "images_per_s": n / dt, "time_s": dt})
        return history

    def loss_and_gradients(self, X, y):
        """Mean loss of one batch holding all of ``X`` and every parameter's
        gradient (numpy, in :meth:`get_weights` order); no weight changes.
        Any number of samples (the workspace is per tile)."""
        Xh, labels, n = self._resident(X, y)
        loss, _ = self._run(Xh, np.arange(n, dtype=np.int32), 0, n, labels, True)
        return loss / max(n, 1), self.gradients()

    def flat_loss_and_gradient(self, v):
        """``(loss, gradient)`` of the resident set at flat weights ``v``
        (the L-BFGS evaluations of :mod:`hetnet.model.evolve`); the gradient
        float64, laid out as ``v``."""
        self.set_flat_weights(v)
        loss, grads = self.loss_and_gradients(None, None)
        return loss, np.concatenate([g.reshape(-1) for g in grads]).astype(np.float64)

    def population_loss(self, weights):
        """The mean loss over the resident set (:meth:`set_data`) of each of
        ``P`` flat weight vectors (rows laid out as :meth:`set_flat_weights`'s),
        float64 ``(P,)``: the metaheuristics' population pass
        (:mod:`hetnet.model.evolve`), forward only, every vector run on each
        tile of samples while it is in cache.  The trainer's own weights are
        left as they are."""
        Xh, labels, n = self._resident(None, None)
        total = sum(math.prod(s) for s in self.layout.shapes)
        W = np.asarray(weights, dtype=np.float32)
        if W.ndim != 2 or W.shape[1] != total:
            raise ValueError(f"weights must be (P, {total}) flat weight vectors, got "
                             f"shape {W.shape}")
        stats = np.zeros((self.threads, 2 * W.shape[0]), dtype=np.float64)
        with self.device.session():
            losses, _ = _kernel.run_population(self.desc, self.layout.from_raveled(W), Xh,
                                               labels, self._ws, self._iws, self.tile,
                                               self.threads, stats)
        return losses / max(n, 1)

    # --------------------------------------------------------- inference
    def predict_logits(self, X):
        """Logits ``(n, n_classes)`` of the fused forward."""
        X = check_X(X, self.model.input_shape)
        n = X.shape[0]
        out = np.empty((n, self.n_classes), dtype=np.float32)
        self._run(np.ascontiguousarray(X.reshape(n, -1), dtype=np.float32),
                  np.arange(n, dtype=np.int32), 0, n, np.empty(0, np.int32), False, out)
        return out

    def evaluate(self, X, y):
        """``{"loss", "accuracy"}`` over ``X``, ``y`` with the trainer's weights."""
        X = check_X(X, self.model.input_shape)
        n = X.shape[0]
        yt = check_targets(y, n, "cross_entropy", self.model.n_outputs)
        labels = np.ascontiguousarray(yt.argmax(axis=1) if yt.ndim == 2 else yt, np.int32)
        loss, correct = self._run(np.ascontiguousarray(X.reshape(n, -1), dtype=np.float32),
                                  np.arange(n, dtype=np.int32), 0, n, labels, False)
        return {"loss": loss / max(n, 1), "accuracy": correct / max(n, 1)}

    def time_inference(self, X, batch, steps=20):
        """Seconds per forward of ``batch`` rows of ``X`` (logits kept), after
        one of warm-up."""
        rows = np.arange(X.shape[0], dtype=np.int32)
        out = np.empty((batch, self.n_classes), dtype=np.float32)
        no_labels = np.empty(0, np.int32)
        self._run(X, rows, 0, batch, no_labels, False, out)
        t0 = time.perf_counter()
        for _ in range(steps):
            self._run(X, rows, 0, batch, no_labels, False, out)
        return (time.perf_counter() - t0) / steps

    def time_step(self, X, labels, batch, steps=20):
        """Seconds per training step (forward, backward, update) of ``batch``
        rows of ``X`` (after one step of warm-up); the weights change."""
        rows = np.arange(X.shape[0], dtype=np.int32)
        self.train_step(X, labels, rows, 0, batch, 1e-3)
        t0 = time.perf_counter()
        for _ in range(steps):
            self.train_step(X, labels, rows, 0, batch, 1e-3)
        return (time.perf_counter() - t0) / steps
