"""Activation layers.  A dense or conv layer directly before ReLU, Sigmoid or
Tanh absorbs it (``Sequential`` fuses them), so these run alone only where
nothing precedes them that can."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .base import Layer


class Activation(Layer):
    """Elementwise activation, its gradient taken from the saved output."""

    kind = "identity"

    def forward(self, x: Any, training: bool = False) -> Any:
        y = self.device.activation(self.kind, x, out=self.buffer("y", x.shape))
        self._y = y
        return y

    def backward(self, dy: Any, need_dx: bool = True) -> Any:
        return self.device.activation_backward(self.kind, self._y, dy, out=dy)


class ReLU(Activation):
    kind = "relu"


class Sigmoid(Activation):
    kind = "sigmoid"


class Tanh(Activation):
    kind = "tanh"


class Softmax(Activation):
    """Softmax over the features of a 2-D input.  Not needed before the
    ``cross_entropy`` loss, which applies softmax itself."""

    kind = "softmax"

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 1:
            raise ValueError(f"Softmax takes (N, features) input, got per-sample shape {input_shape}")
        return input_shape




def fuse_activations(layers: Sequence[Layer]) -> list[Layer]:
    """The steps that run ``layers``: a layer whose class lists the next
    layer's activation in ``fusable_activations`` absorbs it (its
    ``activation`` set, the activation layer dropped from the steps): one
    pass over the output instead of two, and no extra buffer."""
    steps, i = [], 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if layer.fusable_activations:
            layer.activation = "identity"
            if isinstance(nxt, Activation) and nxt.kind in layer.fusable_activations:
                layer.activation = nxt.kind
                i += 1
        steps.append(layer)
        i += 1
    return steps


def walk(layers: Iterable[Layer]) -> Iterator[Layer]:
    """Every layer of ``layers`` and, after a block, its sub-layers (depth first)."""
    for layer in layers:
        yield layer
        yield from walk(getattr(layer, "sublayers", ()))
