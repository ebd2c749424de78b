"""The layer API: parameters plus forward/backward written in device operations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from ..devices import Device


class Layer:
    """Base layer.

    A layer is built once for a device and an input shape (per sample, no
    batch axis); afterwards ``forward`` maps a device array ``(N, *in_shape)``
    to ``(N, *out_shape)`` and ``backward`` maps the gradient of the loss with
    respect to the output to the gradient with respect to the input, filling
    ``self.grads`` for every parameter on the way.

    Attributes
    ----------
    params : dict of str -> device array
        The trained parameters.
    grads : dict of str -> device array, same shapes as ``params``
    state : dict of str -> device array
        Non-trained state saved with the weights (BatchNorm's running
        statistics); empty for most layers.
    """

    #: names of the constructor arguments saved with a model
    config_keys = ()
    #: activations (their ``kind``) this layer can apply to its own output:
    #: an activation layer of one of these kinds right after it is fused into
    #: it (one pass over the output, no extra buffer); the layer then has an
    #: ``activation`` attribute, ``"identity"`` when nothing is fused
    fusable_activations = ()

    def __init__(self) -> None:
        self.device = None
        self.params = {}
        self.grads = {}
        self.input_shape = None
        self.output_shape = None
        self._buffers = {}
        self.state = {}

    @property
    def n_weights(self) -> int:
        """How many arrays :meth:`get_weights` returns (trained parameters
        and state)."""
        return len(self.params) + len(self.state)

    def get_config(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.config_keys}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    # -------------------------------------------------------------- build
    def build(self, device: Device, input_shape: Sequence[int], rng: np.random.Generator
              ) -> tuple[int, ...]:
        """Allocate parameters on ``device``; returns the output shape."""
        self.device = device
        self._buffers = {}
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(self.compute_output_shape(self.input_shape))
        host = self.init_params(rng)
        self.params = {k: device.asarray(v) for k, v in host.items()}
        self.grads = {k: device.zeros(v.shape) for k, v in host.items()}
        return self.output_shape

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return input_shape

    def buffer(self, name: str, shape: Sequence[int], dtype: DTypeLike = np.float32) -> Any:
        """A device array of ``shape`` kept for reuse by the next call with the
        same shape: outputs and input gradients are written into the same
        memory every step instead of fresh allocations.  What a layer returns
        stays valid until its next forward (or backward) call."""
        buf = self._buffers.get(name)
        if buf is None or tuple(buf.shape) != tuple(shape):
            buf = self._buffers[name] = self.device.empty(tuple(shape), dtype=dtype)
        return buf

    def init_params(self, rng: np.random.Generator) -> dict[str, NDArray[np.float32]]:
        """Host (numpy) initial values of the parameters, by name."""
        return {}

    # ------------------------------------------------------------ compute
    def forward(self, x: Any, training: bool = False) -> Any:
        raise NotImplementedError

    def backward(self, dy: Any, need_dx: bool = True) -> Any:
        """Gradient w.r.t. the input (None when ``need_dx`` is False).
        ``dy`` may be overwritten."""
        raise NotImplementedError

    # ------------------------------------------------------- placement
    def cost_terms(self, batch: int, need_dx: bool = True
                   ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The work of one step at ``batch``, for the cost model.

        Returns ``(forward, backward, update)``: lists of ``(operation,
        size)`` or ``(operation, batch, geometry)`` with operations named as
        in :mod:`hetnet.sched.costmodel`: elementwise work is sized in elements; GEMM
        and convolution, whose speed depends on their shapes, by the batch
        size of one geometry (a record of :mod:`hetnet.layers.geometry`).
        """
        n = batch * int(np.prod(self.output_shape))
        return [("elementwise", n)], [("elementwise", n)], []

    def _update_terms(self):
        return [("update", int(np.prod(p.shape))) for p in self.params.values()]

    def move_to(self, device: Device) -> None:
        """Move parameters (and gradient buffers) and state to ``device``;
        the optimizer moves its own state (:meth:`Optimizer.move_state`)."""
        if device is self.device:
            return
        old = self.device
        self.params = {k: device.asarray(old.to_host(v)) for k, v in self.params.items()}
        self.grads = {k: device.zeros(tuple(v.shape)) for k, v in self.params.items()}
        self.state = {k: device.asarray(old.to_host(v)) for k, v in self.state.items()}
        self._buffers = {}
        self.device = device

    # -------------------------------------------------- host-side access
    def get_weights(self) -> list[NDArray[Any]]:
        """The parameters, then the state, as numpy arrays."""
        return ([self.device.to_host(self.params[k]) for k in self.params]
                + [self.device.to_host(self.state[k]) for k in self.state])

    def set_weights(self, weights: Sequence[ArrayLike]) -> None:
        """Set the parameters, then the state, from :meth:`get_weights`' list."""
        weights = list(weights)
        slots = [(self.params, k) for k in self.params] + [(self.state, k) for k in self.state]
        if len(weights) != len(slots):
            names = ", ".join(k for _, k in slots)
            raise ValueError(f"{type(self).__name__} takes {len(slots)} arrays ({names}), "
                             f"got {len(weights)}")
        for (where, name), w in zip(slots, weights):
            w = np.asarray(w)
            if w.shape != tuple(where[name].shape):
                raise ValueError(f"{type(self).__name__}.{name}: expected shape "
                                 f"{tuple(where[name].shape)}, got {w.shape}")
            where[name] = self.device.asarray(w)


def pair(value, name):
    """An int or a pair of ints -> a tuple of two positive ints."""
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    try:
        a, b = value
        if any(isinstance(v, (bool, np.bool_)) or int(v) != v for v in (a, b)):
            raise ValueError
        a, b = int(a), int(b)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    return a, b
