"""A residual block, ``act(branch(x) + shortcut(x))``, as one layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .activations import fuse_activations
from .base import Layer
from .registry import LAYERS
from ..devices import Device


class _WriteThrough(dict):
    """A snapshot of the sub-layers' arrays (``params``, ``grads`` or
    ``state``) under the block's keys, whose item assignment also replaces
    the array in the sub-layer that owns it (the model lays parameters out
    in flat buffers by assigning views this way)."""

    def __init__(self, block, attr):
        super().__init__()
        self._block, self._attr = block, attr
        for prefix, layer in block._named:
            for k, v in getattr(layer, attr).items():
                dict.__setitem__(self, f"{prefix}.{k}", v)

    def __setitem__(self, key, value):
        layer, name = self._block._owner(key)
        getattr(layer, self._attr)[name] = value
        dict.__setitem__(self, key, value)


class Residual(Layer):
    """``y = act(branch(x) + shortcut(x))``: a residual block, one layer.

    Parameters
    ----------
    branch : list of Layer
        Run in order on the block's input; must end at the block's output shape.
    shortcut : list of Layer, optional
        Run on the same input (a 1x1 convolution with BatchNorm where the
        shape changes); None: the identity.

    The block is one node of the model's chain: the planner places it whole
    (its cost is its sub-layers' sum), every sub-layer lives on the block's
    device, and an activation after a Dense, Conv2D or BatchNorm inside the
    branch or the shortcut is fused into it as ``Sequential`` fuses.  A
    ReLU, Sigmoid or Tanh right after the block is fused into the sum.

    ``params``, ``grads`` and ``state`` gather the sub-layers' arrays under
    keys ``"b<i>.<name>"`` (branch layer i) and ``"s<i>.<name>"`` (shortcut
    layer i); ``get_weights()`` is the branch's weights, then the
    shortcut's, each layer's in its own order.

    Shapes: x ``(N, *input_shape)``, y ``(N, *output_shape)`` of the branch,
    which the shortcut's output (or the input) must match.
    """

    fusable_activations = ("relu", "sigmoid", "tanh")

    def __init__(self, branch: Sequence[Layer], shortcut: Sequence[Layer] | None = None) -> None:
        self._named = []
        self._views = {}
        super().__init__()
        self.branch = self._layers(branch, "branch")
        if not self.branch:
            raise ValueError("Residual needs at least one layer in its branch")
        self.shortcut = None if shortcut is None else self._layers(shortcut, "shortcut")
        if self.shortcut is not None and not self.shortcut:
            raise ValueError("Residual shortcut must be None (identity) or a non-empty list "
                             "of layers")
        every = self.branch + (self.shortcut or [])
        if len({id(layer) for layer in every}) != len(every):
            raise ValueError("the same layer object appears twice in a Residual; create a "
                             "new one for each position")
        self._named = ([(f"b{i}", layer) for i, layer in enumerate(self.branch)]
                       + [(f"s{i}", layer) for i, layer in enumerate(self.shortcut or [])])
        self.activation = "identity"

    @staticmethod
    def _layers(spec, what):
        """Layers from a list of Layer objects or of saved ``{"class",
        "config"}`` entries (as :meth:`get_config` writes them)."""
        if isinstance(spec, Layer):
            spec = [spec]
        try:
            spec = list(spec)
        except TypeError:
            raise TypeError(f"Residual {what} must be a list of layers, got {spec!r}") from None
        out = []
        for i, item in enumerate(spec):
            if isinstance(item, dict) and "class" in item:
                cls = LAYERS.get(item["class"])
                if cls is None:
                    raise ValueError(f"Residual {what}[{i}]: unknown layer class "
                                     f"{item['class']!r}")
                item = cls(**item.get("config", {}))
            if not isinstance(item, Layer):
                raise TypeError(f"Residual {what}[{i}] is {item!r}, not a hetnet Layer")
            out.append(item)
        return out

    def get_config(self) -> dict[str, Any]:
        def specs(layers):
            return [{"class": type(layer).__name__, "config": layer.get_config()}
                    for layer in layers]
        return {"branch": specs(self.branch),
                "shortcut": None if self.shortcut is None else specs(self.shortcut)}

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.branch)
        short = "identity" if self.shortcut is None else \
            "[" + ", ".join(repr(layer) for layer in self.shortcut) + "]"
        return f"Residual([{inner}], shortcut={short})"

    @property
    def sublayers(self) -> list[Layer]:
        """The branch's layers, then the shortcut's."""
        return [layer for _, layer in self._named]

    @property
    def summary_name(self) -> str:
        """The block's row in ``Sequential.summary()`` (its sub-layers follow)."""
        return "Residual(" + ("identity" if self.shortcut is None else "projection") + \
            " shortcut)"

    # ------------------------------------------- the sub-layers' arrays
    def _owner(self, key):
        prefix, _, name = key.partition(".")
        for p, layer in self._named:
            if p == prefix:
                return layer, name
        raise KeyError(key)

    def _view(self, attr):
        """The block's :class:`_WriteThrough` of ``attr``, kept while every
        sub-layer still holds the same dict (the model reads a step's
        ``params`` and ``grads`` many times a step; a residual network's
        blocks would otherwise rebuild them quadratically often)."""
        dicts = tuple(getattr(layer, attr) for _, layer in self._named)
        cached = self._views.get(attr)
        if cached is not None and len(cached[0]) == len(dicts) and all(
                a is b for a, b in zip(cached[0], dicts)):
            return cached[1]
        view = _WriteThrough(self, attr)
        self._views[attr] = (dicts, view)
        return view

    def _distribute(self, attr, mapping):
        self._views.pop(attr, None)
        for prefix, layer in self._named:
            head = prefix + "."
            sub = {k[len(head):]: v for k, v in mapping.items() if k.startswith(head)}
            if sub or getattr(layer, attr):
                setattr(layer, attr, sub)

    @property
    def params(self) -> dict[str, Any]:
        return self._view("params")

    @params.setter
    def params(self, mapping: dict[str, Any]) -> None:
        self._distribute("params", mapping)

    @property
    def grads(self) -> dict[str, Any]:
        return self._view("grads")

    @grads.setter
    def grads(self, mapping: dict[str, Any]) -> None:
        self._distribute("grads", mapping)

    @property
    def state(self) -> dict[str, Any]:
        return self._view("state")

    @state.setter
    def state(self, mapping: dict[str, Any]) -> None:
        self._distribute("state", mapping)

    @property
    def n_weights(self) -> int:
        return sum(layer.n_weights for _, layer in self._named)

    # -------------------------------------------------------------- build
    def build(self, device: Device, input_shape: Sequence[int], rng: np.random.Generator
              ) -> tuple[int, ...]:
        self.device = device
        self._buffers = {}
        self.input_shape = tuple(input_shape)
        shape = self.input_shape
        for layer in self.branch:
            shape = layer.build(device, shape, rng)
        self.output_shape = tuple(shape)
        shape = self.input_shape
        for layer in self.shortcut or []:
            shape = layer.build(device, shape, rng)
        if tuple(shape) != self.output_shape:
            where = "the input" if self.shortcut is None else "the shortcut's output"
            raise ValueError(f"Residual: the branch outputs per-sample shape "
                             f"{self.output_shape} but {where} is {tuple(shape)}; add a "
                             "shortcut (e.g. a 1x1 Conv2D with the branch's stride)")
        self._branch_steps = fuse_activations(self.branch)
        self._shortcut_steps = fuse_activations(self.shortcut) if self.shortcut else []
        return self.output_shape

    def move_to(self, device: Device) -> None:
        if device is self.device:
            return
        for _, layer in self._named:
            layer.move_to(device)
        self._buffers = {}
        self.device = device

    # ------------------------------------------------------------ compute
    @staticmethod
    def _run(steps, x, training):
        for step in steps:
            x = step.forward(x, training)
        return x

    @staticmethod
    def _back(steps, dy, need_dx):
        for i in range(len(steps) - 1, -1, -1):
            dy = steps[i].backward(dy, need_dx=need_dx or i > 0)
        return dy

    def forward(self, x: Any, training: bool = False) -> Any:
        h = self._run(self._branch_steps, x, training)
        s = self._run(self._shortcut_steps, x, training) if self._shortcut_steps else x
        y = self.device.add_activation(h, s, self.activation, out=self.buffer("y", h.shape))
        self._y = y
        return y

    def backward(self, dy: Any, need_dx: bool = True) -> Any:
        dev = self.device
        # the shortcut's (or the identity's) copy first: the branch may overwrite dy
        gs = dev.activation_backward(self.activation, self._y, dy, out=self.buffer("gs", dy.shape))
        g = dy if self.activation == "identity" else dev.activation_backward(
            self.activation, self._y, dy, out=dy)
        dxb = self._back(self._branch_steps, g, need_dx)
        if self._shortcut_steps:
            dxs = self._back(self._shortcut_steps, gs, need_dx)
        else:
            dxs = gs
        if not need_dx:
            return None
        return dev.axpy(1.0, dxs, dxb)

    def cost_terms(self, batch: int, need_dx: bool = True
                   ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        fwd, bwd, upd = [], [], []
        for steps in (self._branch_steps, self._shortcut_steps):
            for i, step in enumerate(steps):
                f, b, u = step.cost_terms(batch, need_dx or i > 0)
                fwd, bwd, upd = fwd + f, bwd + b, upd + u
        n = batch * int(np.prod(self.output_shape))
        fwd.append(("elementwise", n))
        bwd += [("elementwise", n)] * (2 if self.activation != "identity" else 1)
        if need_dx:
            bwd.append(("elementwise", n))
        return fwd, bwd, upd

    # -------------------------------------------------- host-side access
    def get_weights(self) -> list[NDArray[Any]]:
        return [w for _, layer in self._named for w in layer.get_weights()]

    def set_weights(self, weights: Sequence[ArrayLike]) -> None:
        weights = list(weights)
        if len(weights) != self.n_weights:
            raise ValueError(f"Residual takes {self.n_weights} arrays (its branch's, then "
                             f"its shortcut's), got {len(weights)}")
        i = 0
        for _, layer in self._named:
            k = layer.n_weights
            layer.set_weights(weights[i:i + k])
            i += k
        self._views = {}
