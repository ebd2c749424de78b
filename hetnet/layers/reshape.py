"""Flatten: (N, C, H, W) -> (N, C*H*W), free on every device."""

from __future__ import annotations

import math
from typing import Any

from .base import Layer


class Flatten(Layer):
    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(input_shape),)

    def cost_terms(self, batch: int, need_dx: bool = True
                   ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        return [], [], []          # a reshape: no work on any device

    def forward(self, x: Any, training: bool = False) -> Any:
        return self.device.reshape(x, (x.shape[0], -1))

    def backward(self, dy: Any, need_dx: bool = True) -> Any:
        return self.device.reshape(dy, (dy.shape[0],) + self.input_shape)
