"""Optimisers.  The arithmetic is the device's stateless update operation
(``sgd_update``, ``adam_update``, ``rmsprop_update``) applied to ``(w, dw,
state)``; these classes only keep the hyper-parameters and the per-parameter
state arrays.

Every optimiser takes ``clip_norm``: the gradients are scaled as
``torch.nn.utils.clip_grad_norm_`` scales them, by ``min(1, clip_norm /
(norm + 1e-6))`` with ``norm`` the L2 norm of all parameters' gradients
together, on every device.  Each device sums its gradients' squares itself
(``sum_squares``, one operation over a flat gradient buffer); the host then
reads one number per device, so a step with clipping waits once for each
device holding parameters (one read-back per step on a model that trains on
one GPU), and the updates carry the scale (no extra pass over the
gradients).  Because the norm needs every gradient, a clipping optimiser
holds the updates of a step back until :meth:`Optimizer.end_step`, instead
of updating each parameter as soon as the backward pass reaches it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from .devices import Device


def _check_positive(name, value, allow_zero=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not (v >= 0 if allow_zero else v > 0) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, "
                         f"got {value!r}")
    return v


def _check_unit(name, value):
    """A number in [0, 1) (momentum, betas, alpha)."""
    v = _check_positive(name, value, allow_zero=True)
    if v >= 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return v


#: hyper-parameter -> its check, run at every assignment (the constructor's,
#: a schedule's, a user's ``opt.lr = ...`` between fits): a value that would
#: turn the weights into NaN is refused where it enters.  ``lr`` may be 0 on
#: assignment (a schedule may decay to 0); the constructors ask for > 0.
_HYPER = {
    "lr": lambda v: _check_positive("lr", v, allow_zero=True),
    "weight_decay": lambda v: _check_positive("weight_decay", v, allow_zero=True),
    "eps": lambda v: _check_positive("eps", v),
    "momentum": lambda v: _check_unit("momentum", v),
    "beta1": lambda v: _check_unit("beta1", v),
    "beta2": lambda v: _check_unit("beta2", v),
    "alpha": lambda v: _check_unit("alpha", v),
    "clip_norm": lambda v: None if v is None else _check_positive("clip_norm", v),
}


class Optimizer:
    """Base optimiser.  ``lr`` may be changed between steps (schedules).

    Parameters
    ----------
    lr : float
    clip_norm : float, optional
        Clip the global L2 norm of the gradients to this (see the module).
    """

    #: the attribute a schedule's momentum sets (:mod:`hetnet.schedules`):
    #: SGD's and RMSProp's momentum, Adam's beta1; None: none to cycle
    momentum_attribute = None
    clip_norm = None     # (class default: optimisers pickled before it existed)

    def __init__(self, lr: float, clip_norm: float | None = None) -> None:
        self.lr = _check_positive("lr", lr)
        self.clip_norm = None if clip_norm is None else _check_positive("clip_norm", clip_norm)
        self.state = {}
        self.t = 0
        self._flat = {}    # (device, indices) -> (flat state arrays, the views state[i] must be)
        self._pending = []  # updates held back until end_step (clip_norm)
        self._norm_acc = {}  # device -> its (1,) squared-norm accumulator

    def __setattr__(self, name, value):
        check = _HYPER.get(name)
        if check is not None:
            value = check(value)
        object.__setattr__(self, name, value)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def reset(self) -> None:
        self.state = {}
        self.t = 0
        self._flat = {}
        self._pending = []

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_pending"], state["_norm_acc"] = [], {}   # device buffers of one step
        return state

    def step(self, devices: Device | Sequence[Device], params: Sequence[Any],
             grads: Sequence[Any]) -> None:
        """Update every parameter in place.  ``params``/``grads``: lists of
        device arrays in the same order; ``devices``: the device holding each
        (or one device for all)."""
        self.begin_step()
        if not isinstance(devices, (list, tuple)):
            devices = [devices] * len(params)
        for i, (dev, w, g) in enumerate(zip(devices, params, grads)):
            self.update(dev, i, w, g)
        self.end_step()

    def begin_step(self) -> None:
        """Start a step whose parameters are then updated one by one with
        :meth:`update` (as a model's backward pass produces their gradients)
        or by groups (:meth:`update_group`), and which :meth:`end_step` ends."""
        self.t += 1
        self.__dict__.setdefault("_pending", []).clear()

    def update(self, device: Device, index: int, w: Any, g: Any) -> None:
        """Update parameter number ``index`` (its place in the model's
        parameter order) in place, within the step begun last (with
        ``clip_norm``: at :meth:`end_step`)."""
        if self.clip_norm is not None:
            self._pending.append((device, g, lambda s: self._update(device, index, w, g, s)))
        else:
            self._update(device, index, w, g)

    def update_group(self, device: Device, indices: Sequence[int], group: Any, w: Any, g: Any
                     ) -> None:
        """Update, in one operation, parameters ``indices`` laid out by
        ``group`` (a :class:`hetnet.runtime.flatparams.FlatGroup`) in the flat device
        arrays ``w`` (values) and ``g`` (gradients; the gaps between the
        arrays hold zeros).  The state of parameter ``i`` stays ``state[i]``,
        a view into flat state arrays of the same layout."""
        if self.clip_norm is not None:
            self._pending.append((device, g,
                                  lambda s: self._update_group(device, indices, group, w, g, s)))
        else:
            self._update_group(device, indices, group, w, g)

    def end_step(self) -> None:
        """End the step: with ``clip_norm``, the global gradient norm (each
        device sums its own squares; one read per device) and the updates
        held back since :meth:`begin_step`, scaled."""
        pending = self.__dict__.get("_pending")
        if not pending:
            return
        self._pending = []
        acc = self.__dict__.setdefault("_norm_acc", {})
        touched = {}
        for dev, g, _ in pending:
            if dev not in acc:
                acc[dev] = dev.zeros((1,))
            dev.sum_squares(g, out=acc[dev], accumulate=dev in touched)
            touched[dev] = acc[dev]
        total = sum(float(dev.to_host(a)[0]) for dev, a in touched.items())
        scale = min(1.0, self.clip_norm / (math.sqrt(total) + 1e-6))
        for _, _, run in pending:
            run(scale)

    def _update_group(self, device, indices, group, w, g, scale=1.0):
        """The default updates the views one by one."""
        for i, wv, gv in zip(indices, group.views(w), group.views(g)):
            self._update(device, i, wv, gv, scale)

    def set_momentum(self, value: float) -> None:
        """Set the momentum a schedule cycles (:attr:`momentum_attribute`)."""
        if self.momentum_attribute is None:
            raise ValueError(f"{type(self).__name__} has no momentum for a schedule to set")
        value = float(value)
        if not 0 <= value < 1:
            raise ValueError(f"a scheduled momentum must be in [0, 1), got {value!r}")
        setattr(self, self.momentum_attribute, value)

    def follow_schedule(self, schedule: Callable[[int, int], float], step: int,
                        total_steps: int) -> None:
        """Set the learning rate, and the momentum where ``schedule`` has a
        ``momentum`` rule, for ``step`` of ``total_steps``
        (:mod:`hetnet.schedules`; every training path applies it this way)."""
        value = schedule(step, total_steps)
        try:
            self.lr = value
        except ValueError as exc:
            raise ValueError(f"lr_schedule {schedule!r} gave lr={value!r} at step {step} of "
                             f"{total_steps}: {exc}") from None
        momentum = getattr(schedule, "momentum", None)
        if callable(momentum):
            value = momentum(step, total_steps)
            if value is not None:
                self.set_momentum(value)

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

    def move_state(self, indices: Sequence[int], src: Device, dst: Device) -> None:
        """Move the state of parameters ``indices`` from device ``src`` to ``dst``."""
        for i in indices:
            if i in self.state:
                st = self.state[i]
                moved = tuple(dst.asarray(src.to_host(a)) for a in (st if isinstance(st, tuple) else (st,)))
                self.state[i] = moved if isinstance(st, tuple) else moved[0]


class SGD(Optimizer):
    """Mini-batch SGD with optional (Nesterov) momentum and weight decay,
    PyTorch's formulation: ``g' = g + weight_decay w``; ``v = momentum v +
    g'``; ``w -= lr v``, or with ``nesterov=True`` (NAG) ``w -= lr (g' +
    momentum v)``.  NAG is ``SGD(momentum=0.9, nesterov=True)`` (the name
    ``"nag"`` in :func:`get_optimizer`)."""

    momentum_attribute = "momentum"

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, clip_norm: float | None = None) -> None:
        super().__init__(lr, clip_norm)
        self.momentum = _check_positive("momentum", momentum, allow_zero=True)
        if self.momentum >= 1:
            raise ValueError(f"momentum must be < 1, got {momentum!r}")
        self.weight_decay = _check_positive("weight_decay", weight_decay, allow_zero=True)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")

    def get_config(self) -> dict[str, Any]:
        return {"name": "sgd", "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "nesterov": self.nesterov,
                "clip_norm": self.clip_norm}

    def _update(self, device, i, w, g, scale=1.0):
        v = None
        if self.momentum:
            v = self.state.get(i)
            if v is None:
                v = self.state[i] = device.zeros(w.shape)
        device.sgd_update(w, g, v, self.lr, self.momentum, self.weight_decay, self.nesterov,
                          scale)

    def _update_group(self, device, indices, group, w, g, scale=1.0):
        v = self._group_state(indices, group, 1)[0] if self.momentum else None
        device.sgd_update(w, g, v, self.lr, self.momentum, self.weight_decay, self.nesterov,
                          scale)


class Adam(Optimizer):
    """Adam with bias correction, PyTorch's formulation: ``g' = g +
    weight_decay w`` (L2, added to the gradient); ``m = b1 m + (1 - b1) g'``;
    ``v = b2 v + (1 - b2) g'^2``; ``w -= lr / (1 - b1^t) m / (sqrt(v) /
    sqrt(1 - b2^t) + eps)``."""

    momentum_attribute = "beta1"
    _decoupled = False

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0,
                 clip_norm: float | None = None) -> None:
        super().__init__(lr, clip_norm)
        for name, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= b < 1:
                raise ValueError(f"{name} must be in [0, 1), got {b!r}")
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.eps = _check_positive("eps", eps)
        self.weight_decay = _check_positive("weight_decay", weight_decay, allow_zero=True)

    def get_config(self) -> dict[str, Any]:
        return {"name": "adamw" if self._decoupled else "adam", "lr": self.lr,
                "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay, "clip_norm": self.clip_norm}

    def _step(self, device, w, g, m, v, scale):
        device.adam_update(w, g, m, v, self.lr, self.beta1, self.beta2, self.eps, self.t,
                           self.weight_decay, self._decoupled, scale)

    def _update(self, device, i, w, g, scale=1.0):
        if i not in self.state:
            self.state[i] = (device.zeros(w.shape), device.zeros(w.shape))
        m, v = self.state[i]
        self._step(device, w, g, m, v, scale)

    def _update_group(self, device, indices, group, w, g, scale=1.0):
        m, v = self._group_state(indices, group, 2)
        self._step(device, w, g, m, v, scale)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), PyTorch's
    ``AdamW``: ``w *= 1 - lr weight_decay``, then Adam's step on the plain
    gradient."""

    _decoupled = True

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.01,
                 clip_norm: float | None = None) -> None:
        super().__init__(lr, beta1, beta2, eps, weight_decay, clip_norm)


class RMSProp(Optimizer):
    """RMSProp, PyTorch's formulation (not centred): ``g' = g + weight_decay
    w``; ``s = alpha s + (1 - alpha) g'^2``; ``d = g' / (sqrt(s) + eps)``;
    with momentum ``b = momentum b + d``, ``w -= lr b``, else ``w -= lr d``."""

    momentum_attribute = "momentum"

    def __init__(self, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8,
                 momentum: float = 0.0, weight_decay: float = 0.0,
                 clip_norm: float | None = None) -> None:
        super().__init__(lr, clip_norm)
        if not 0 <= alpha < 1:
            raise ValueError(f"alpha must be in [0, 1), got {alpha!r}")
        self.alpha = float(alpha)
        self.eps = _check_positive("eps", eps)
        self.momentum = _check_positive("momentum", momentum, allow_zero=True)
        if self.momentum >= 1:
            raise ValueError(f"momentum must be < 1, got {momentum!r}")
        self.weight_decay = _check_positive("weight_decay", weight_decay, allow_zero=True)

    def get_config(self) -> dict[str, Any]:
        return {"name": "rmsprop", "lr": self.lr, "alpha": self.alpha, "eps": self.eps,
                "momentum": self.momentum, "weight_decay": self.weight_decay,
                "clip_norm": self.clip_norm}

    def _step(self, device, w, g, sq, buf, scale):
        device.rmsprop_update(w, g, sq, buf if self.momentum else None, self.lr, self.alpha,
                              self.eps, self.momentum, self.weight_decay, scale)

    def _update(self, device, i, w, g, scale=1.0):
        # the momentum buffer is kept from the start: a schedule may turn momentum on
        if i not in self.state:
            self.state[i] = (device.zeros(w.shape), device.zeros(w.shape))
        sq, buf = self.state[i]
        self._step(device, w, g, sq, buf, scale)

    def _update_group(self, device, indices, group, w, g, scale=1.0):
        sq, buf = self._group_state(indices, group, 2)
        self._step(device, w, g, sq, buf, scale)


#: ``get_config()["name"]`` -> class
OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSProp}

#: the names :func:`get_optimizer` takes -> (class, defaults of that name)
NAMES = {"sgd": (SGD, {}), "nag": (SGD, {"momentum": 0.9, "nesterov": True}),
         "adam": (Adam, {}), "adamw": (AdamW, {}), "rmsprop": (RMSProp, {})}


def get_optimizer(spec: str | Optimizer | None, **defaults: Any) -> Optimizer:
    """An Optimizer from an instance, a name (``"sgd"``, ``"nag"``,
    ``"adam"``, ``"adamw"``, ``"rmsprop"``) or None (SGD)."""
    if spec is None:
        return SGD(**defaults)
    if isinstance(spec, Optimizer):
        return spec
    if isinstance(spec, str) and spec.lower() in NAMES:
        cls, named = NAMES[spec.lower()]
        return cls(**{**named, **defaults})
    raise ValueError(f"optimizer must be an Optimizer or one of {sorted(NAMES)}, got {spec!r}")
