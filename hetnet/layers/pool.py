"""Max pooling; the gradient goes to each window's arg-max."""

import numpy as np

from .base import Layer, pair
from .geometry import MaxPool2DGeometry
from ..devices.base import conv_output_size


class MaxPool2D(Layer):
    """Max pooling over ``size`` windows, ``stride`` defaulting to ``size``.

    Shapes: x ``(N, C, H, W)`` -> y ``(N, C, (H - kh)//sh + 1, (W - kw)//sw + 1)``.
    """

    config_keys = ("size", "stride")

    def __init__(self, size=2, stride=None):
        super().__init__()
        self.size = pair(size, "size")
        self.stride = self.size if stride is None else pair(stride, "stride")
        if min(self.size) < 1 or min(self.stride) < 1:
            raise ValueError(f"MaxPool2D size and stride must be >= 1, got {size!r}, {stride!r}")

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"MaxPool2D expects per-sample input (C, H, W), got {tuple(input_shape)}")
        c, h, w = input_shape
        (kh, kw), (sh, sw) = self.size, self.stride
        if h < kh or w < kw:
            raise ValueError(f"MaxPool2D window {self.size} is larger than its input {h}x{w}")
        return (c, conv_output_size(h, kh, sh, 0), conv_output_size(w, kw, sw, 0))

    def cost_terms(self, batch, need_dx=True):
        geom = MaxPool2DGeometry("maxpool2d", self.input_shape, self.size, self.stride)
        return ([("maxpool2d", batch, geom)],
                [("maxpool2d_backward", batch, geom)] if need_dx else [], [])

    def forward(self, x, training=False):
        (kh, kw), (sh, sw) = self.size, self.stride
        shape = (x.shape[0],) + self.output_shape
        y, self._argmax = self.device.maxpool2d(x, kh, kw, sh, sw, out=self.buffer("y", shape),
                                                argmax=self.buffer("argmax", shape, np.int32))
        self._x_shape = x.shape
        return y

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        return self.device.maxpool2d_backward(dy, self._argmax, self._x_shape,
                                              out=self.buffer("dx", self._x_shape))
