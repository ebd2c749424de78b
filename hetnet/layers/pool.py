"""Pooling: max (the gradient goes to each window's arg-max) and average."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Layer, pair
from .geometry import MaxPool2DGeometry, PaddedMaxPool2DGeometry
from ..devices.base import conv_output_size


class _Pool2D(Layer):
    """Shared shape handling of the windowed poolings."""

    config_keys = ("size", "stride", "padding")

    def __init__(self, size: int | tuple[int, int] = 2, stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        name = type(self).__name__
        self.size = pair(size, "size")
        self.stride = self.size if stride is None else pair(stride, "stride")
        if min(self.size) < 1 or min(self.stride) < 1:
            raise ValueError(f"{name} size and stride must be >= 1, got {size!r}, {stride!r}")
        self.padding = pair(padding, "padding")
        if min(self.padding) < 0 or any(2 * p > k for p, k in zip(self.padding, self.size)):
            raise ValueError(f"{name} padding must be between 0 and half the window "
                             f"{self.size}, got {padding!r}")

    def get_config(self) -> dict[str, Any]:
        cfg = {"size": self.size, "stride": self.stride}
        if self.padding != (0, 0):
            cfg["padding"] = self.padding
        return cfg

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        name = type(self).__name__
        if len(input_shape) != 3:
            raise ValueError(f"{name} expects per-sample input (C, H, W), got {tuple(input_shape)}")
        c, h, w = input_shape
        (kh, kw), (sh, sw), (ph, pw) = self.size, self.stride, self.padding
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(f"{name} window {self.size} is larger than its (padded) input "
                             f"{h}x{w}")
        return (c, conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw))

    def _args(self):
        (kh, kw), (sh, sw), (ph, pw) = self.size, self.stride, self.padding
        return kh, kw, sh, sw, ph, pw


class MaxPool2D(_Pool2D):
    """Max pooling over ``size`` windows, ``stride`` defaulting to ``size``;
    ``padding`` pads with -inf (PyTorch's ``MaxPool2d``), at most half the window.

    Shapes: x ``(N, C, H, W)`` -> y ``(N, C, (H + 2ph - kh)//sh + 1, (W + 2pw - kw)//sw + 1)``.
    """

    def cost_terms(self, batch: int, need_dx: bool = True
                   ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        if self.padding != (0, 0):
            geom = PaddedMaxPool2DGeometry("maxpool2d_padded", self.input_shape, self.size,
                                           self.stride, self.padding)
        else:
            geom = MaxPool2DGeometry("maxpool2d", self.input_shape, self.size, self.stride)
        return ([("maxpool2d", batch, geom)],
                [("maxpool2d_backward", batch, geom)] if need_dx else [], [])

    def forward(self, x: Any, training: bool = False) -> Any:
        kh, kw, sh, sw, ph, pw = self._args()
        shape = (x.shape[0],) + self.output_shape
        y, am = self.buffer("y", shape), self.buffer("argmax", shape, np.int32)
        if ph or pw:
            y, self._argmax = self.device.maxpool2d_padded(x, kh, kw, sh, sw, ph, pw,
                                                           out=y, argmax=am)
        else:
            y, self._argmax = self.device.maxpool2d(x, kh, kw, sh, sw, out=y, argmax=am)
        self._x_shape = x.shape
        return y

    def backward(self, dy: Any, need_dx: bool = True) -> Any:
        if not need_dx:
            return None
        return self.device.maxpool2d_backward(dy, self._argmax, self._x_shape,
                                              out=self.buffer("dx", self._x_shape))


class AvgPool2D(_Pool2D):
    """Average pooling over ``size`` windows, ``stride`` defaulting to
    ``size``; ``padding`` adds zeros that count in the divisor (PyTorch's
    ``AvgPool2d`` with ``count_include_pad=True``), at most half the window.

    Shapes: x ``(N, C, H, W)`` -> y ``(N, C, (H + 2ph - kh)//sh + 1, (W + 2pw - kw)//sw + 1)``.
    """

    def cost_terms(self, batch: int, need_dx: bool = True
                   ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        n = batch * int(np.prod(self.input_shape))
        return [("elementwise", n)], [("elementwise", n)] if need_dx else [], []

    def forward(self, x: Any, training: bool = False) -> Any:
        shape = (x.shape[0],) + self.output_shape
        self._x_shape = x.shape
        return self.device.avgpool2d(x, *self._args(), out=self.buffer("y", shape))

    def backward(self, dy: Any, need_dx: bool = True) -> Any:
        if not need_dx:
            return None
        return self.device.avgpool2d_backward(dy, self._x_shape, *self._args(),
                                              out=self.buffer("dx", self._x_shape))


class GlobalAvgPool2D(Layer):
    """The mean of each channel's plane: ``(N, C, H, W)`` -> ``(N, C)``
    (PyTorch's ``AdaptiveAvgPool2d(1)`` then flatten)."""

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3:
            raise ValueError("GlobalAvgPool2D expects per-sample input (C, H, W), got "
                             f"{tuple(input_shape)}")
        return (input_shape[0],)

    def cost_terms(self, batch: int, need_dx: bool = True
                   ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        n = batch * int(np.prod(self.input_shape))
        return [("reduce", n)], [("elementwise", n)] if need_dx else [], []

    def forward(self, x: Any, training: bool = False) -> Any:
        n, c, h, w = x.shape
        self._x_shape = x.shape
        y = self.device.avgpool2d(x, h, w, 1, 1, 0, 0, out=self.buffer("y", (n, c, 1, 1)))
        return self.device.reshape(y, (n, c))

    def backward(self, dy: Any, need_dx: bool = True) -> Any:
        if not need_dx:
            return None
        n, c, h, w = self._x_shape
        return self.device.avgpool2d_backward(self.device.reshape(dy, (n, c, 1, 1)),
                                              self._x_shape, h, w, 1, 1, 0, 0,
                                              out=self.buffer("dx", self._x_shape))
