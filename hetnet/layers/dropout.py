"""Inverted dropout with a counter-based mask made on the device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import Layer
from ..devices.base import dropout_key
from ..devices import Device


class Dropout(Layer):
    """Inverted dropout: in training each element is zeroed with probability
    ``p`` and the rest scaled by ``1 / (1 - p)``; in inference the identity.

    Parameters
    ----------
    p : float in [0, 1]
        Probability of dropping an element.

    The mask is made where the layer runs, from a hash of (seed, step,
    element index) (:meth:`hetnet.devices.base.Device.dropout`): no random
    numbers cross to the device, nothing is stored for the backward pass
    (it recomputes the same mask), and every device draws the same mask.
    The seed comes from the model's generator at build, so a seeded model
    drops the same elements in every run; ``passes`` counts training passes
    (the model's timed planning steps leave it as it was).

    Shapes: x, y ``(N, ...)``, any per-sample shape.
    """

    config_keys = ("p",)

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        try:
            p = float(p)
        except (TypeError, ValueError):
            raise ValueError(f"Dropout p must be a number in [0, 1], got {p!r}") from None
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout p must be in [0, 1], got {p!r}")
        self.p = p
        self.seed = 0
        self.passes = 0

    def build(self, device: Device, input_shape: Sequence[int], rng: np.random.Generator
              ) -> tuple[int, ...]:
        self.seed = int(rng.integers(0, 2 ** 32))
        self.passes = 0
        return super().build(device, input_shape, rng)

    def forward(self, x: Any, training: bool = False) -> Any:
        self._active = bool(training) and self.p > 0.0
        if not self._active:
            return x
        self._key = dropout_key(self.seed, self.passes)
        self.passes += 1
        return self.device.dropout(x, self.p, self._key, out=self.buffer("y", x.shape))

    def backward(self, dy: Any, need_dx: bool = True) -> Any:
        if not need_dx:
            return None
        if not self._active:
            return dy
        return self.device.dropout(dy, self.p, self._key, out=dy)

    def cost_terms(self, batch: int, need_dx: bool = True
                   ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        n = batch * int(np.prod(self.output_shape))
        return [("elementwise", n)], [("elementwise", n)] if need_dx else [], []
