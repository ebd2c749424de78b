"""Optimisers.  The arithmetic is the device's stateless update operation
(``sgd_update``, ``adam_update``) applied to ``(w, dw, state)``; these classes
only keep the hyper-parameters and the per-parameter state arrays."""


def _check_positive(name, value, allow_zero=False):
    value = float(value)
    if not (value >= 0 if allow_zero else value > 0) or value != value:
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value


class Optimizer:
    """Base optimiser.  ``lr`` may be changed between steps (schedules)."""

    def __init__(self, lr):
        self.lr = _check_positive("lr", lr)
        self.state = {}
        self.t = 0
        self._flat = {}    # (device, indices) -> (flat state arrays, the views state[i] must be)

    def get_config(self):
        raise NotImplementedError

    def reset(self):
        self.state = {}
        self.t = 0
        self._flat = {}

    def step(self, devices, params, grads):
        """Update every parameter in place.  ``params``/``grads``: lists of
        device arrays in the same order; ``devices``: the device holding each
        (or one device for all)."""
        self.begin_step()
        if not isinstance(devices, (list, tuple)):
            devices = [devices] * len(params)
        for i, (dev, w, g) in enumerate(zip(devices, params, grads)):
            self._update(dev, i, w, g)

    def begin_step(self):
        """Start a step whose parameters are then updated one by one with
        :meth:`update` (as a model's backward pass produces their gradients)."""
        self.t += 1

    def update(self, device, index, w, g):
        """Update parameter number ``index`` (its place in the model's
        parameter order) in place, within the step begun last."""
        self._update(device, index, w, g)

    def update_group(self, device, indices, group, w, g):
        """Update, in one operation, parameters ``indices`` laid out by
        ``group`` (a :class:`hetnet.runtime.flatparams.FlatGroup`) in the flat device
        arrays ``w`` (values) and ``g`` (gradients).  The state of parameter
        ``i`` stays ``state[i]``, a view into flat state arrays of the same
        layout.  The default updates the views one by one."""
        for i, wv, gv in zip(indices, group.views(w), group.views(g)):
            self._update(device, i, wv, gv)

    def _group_state(self, indices, group, count):
        """``count`` flat state arrays laid out by ``group`` for parameters
        ``indices``; ``state[i]`` is (a tuple of ``count``) views into them.
        Made again, from the per-parameter state there is (zeros where there
        is none), when ``state[i]`` was replaced since (reset, moved, or
        saved and restored around planning's timed steps)."""
        cache = self.__dict__.setdefault("_flat", {})     # (absent from older pickles)
        key = (group.device, tuple(indices))
        flats, expected = cache.get(key, (None, None))
        if flats is not None and all(self.state.get(i) is e for i, e in zip(indices, expected)):
            return flats
        held = [self.state.get(i) for i in indices]
        flats, views = [], []
        for k in range(count):
            old = [None if st is None else (st[k] if isinstance(st, tuple) else st) for st in held]
            flat, v = group.pack(old)
            flats.append(flat)
            views.append(v)
        expected = [vs[0] if count == 1 else tuple(vs) for vs in zip(*views)]
        self.state.update(zip(indices, expected))
        cache[key] = (flats, expected)
        return flats

    def move_state(self, indices, src, dst):
        """Move the state of parameters ``indices`` from device ``src`` to ``dst``."""
        for i in indices:
            if i in self.state:
                st = self.state[i]
                moved = tuple(dst.asarray(src.to_host(a)) for a in (st if isinstance(st, tuple) else (st,)))
                self.state[i] = moved if isinstance(st, tuple) else moved[0]


class SGD(Optimizer):
    """Mini-batch SGD with optional (Nesterov) momentum and weight decay
    (PyTorch's formulation: ``v = momentum v + g``; ``w -= lr v``)."""

    def __init__(self, lr=0.01, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(lr)
        self.momentum = _check_positive("momentum", momentum, allow_zero=True)
        if self.momentum >= 1:
            raise ValueError(f"momentum must be < 1, got {momentum!r}")
        self.weight_decay = _check_positive("weight_decay", weight_decay, allow_zero=True)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")

    def get_config(self):
        return {"name": "sgd", "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "nesterov": self.nesterov}

    def _update(self, device, i, w, g):
        v = None
        if self.momentum:
            v = self.state.get(i)
            if v is None:
                v = self.state[i] = device.zeros(w.shape)
        device.sgd_update(w, g, v, self.lr, self.momentum, self.weight_decay, self.nesterov)

    def update_group(self, device, indices, group, w, g):
        v = self._group_state(indices, group, 1)[0] if self.momentum else None
        device.sgd_update(w, g, v, self.lr, self.momentum, self.weight_decay, self.nesterov)


class Adam(Optimizer):
    """Adam with bias correction (and L2 weight decay added to the gradient)."""

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr)
        for name, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= b < 1:
                raise ValueError(f"{name} must be in [0, 1), got {b!r}")
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.eps = _check_positive("eps", eps)
        self.weight_decay = _check_positive("weight_decay", weight_decay, allow_zero=True)

    def get_config(self):
        return {"name": "adam", "lr": self.lr, "beta1": self.beta1, "beta2": self.beta2,
                "eps": self.eps, "weight_decay": self.weight_decay}

    def _update(self, device, i, w, g):
        if i not in self.state:
            self.state[i] = (device.zeros(w.shape), device.zeros(w.shape))
        m, v = self.state[i]
        device.adam_update(w, g, m, v, self.lr, self.beta1, self.beta2, self.eps, self.t,
                           self.weight_decay)

    def update_group(self, device, indices, group, w, g):
        m, v = self._group_state(indices, group, 2)
        device.adam_update(w, g, m, v, self.lr, self.beta1, self.beta2, self.eps, self.t,
                           self.weight_decay)


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def get_optimizer(spec, **defaults):
    """An Optimizer from an instance, a name (``"sgd"``, ``"adam"``) or None (SGD)."""
    if spec is None:
        return SGD(**defaults)
    if isinstance(spec, Optimizer):
        return spec
    if isinstance(spec, str) and spec.lower() in OPTIMIZERS:
        return OPTIMIZERS[spec.lower()](**defaults)
    raise ValueError(f"optimizer must be an Optimizer, 'sgd' or 'adam', got {spec!r}")
