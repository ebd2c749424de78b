"""2-D convolution as im2col + GEMM over chunks of the batch."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .base import Layer, pair
from .geometry import Conv2DGeometry
from ..devices.base import conv_output_size
from ..init import initialize, INITIALIZERS
from .._validation import check_size


class Conv2D(Layer):
    """Multi-channel, multi-filter 2-D convolution (cross-correlation).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (kh, kw)
    stride : int or (sh, sw)
    padding : int, (ph, pw), ``"valid"`` (0), ``"same"`` (output size equals
        input size at stride 1; needs odd kernel sizes) or ``"full"``
        (``k - 1``: every partial overlap).
    init : {"he", "glorot", "lecun"}
    bias : bool

    Notes
    -----
    Shapes: x ``(N, C, H, W)``, W ``(F, C, kh, kw)``, b ``(F,)``,
    y ``(N, F, Ho, Wo)`` with ``Ho = (H + 2 ph - kh) // sh + 1``.

    The device runs it as im2col + GEMM (:meth:`Device.conv2d`) with a
    bounded, reused workspace: chunks of the batch on the default path, one
    image per thread at a time in the CPU device's fused kernel.
    """

    config_keys = ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                   "init", "bias")
    fusable_activations = ("relu", "sigmoid", "tanh")

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 init: str = "he", bias: bool = True) -> None:
        super().__init__()
        in_channels = check_size("Conv2D in_channels", in_channels)
        out_channels = check_size("Conv2D out_channels", out_channels)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"kernel_size and stride must be >= 1, got {kernel_size!r}, {stride!r}")
        kh, kw = self.kernel_size
        if padding == "valid":
            pad = (0, 0)
        elif padding == "full":
            pad = (kh - 1, kw - 1)
        elif padding == "same":
            if kh % 2 == 0 or kw % 2 == 0 or self.stride != (1, 1):
                raise ValueError("padding='same' needs odd kernel sizes and stride 1, got "
                                 f"kernel_size={self.kernel_size}, stride={self.stride}")
            pad = (kh // 2, kw // 2)
        else:
            pad = pair(padding, "padding")
            if min(pad) < 0:
                raise ValueError(f"padding must be >= 0, got {padding!r}")
        self.padding = padding if isinstance(padding, str) else pad
        self.pad = pad
        if init not in INITIALIZERS:
            raise ValueError(f"unknown init {init!r}; expected one of {sorted(INITIALIZERS)}")
        self.init = init
        self.bias = bool(bias)
        self.activation = "identity"   # set when the runtime fuses an activation

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3 or input_shape[0] != self.in_channels:
            raise ValueError(f"Conv2D({self.in_channels}, ...) expects per-sample input "
                             f"({self.in_channels}, H, W), got {tuple(input_shape)}")
        _, h, w = input_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.pad
        ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
        if ho < 1 or wo < 1:
            raise ValueError(f"Conv2D kernel {self.kernel_size} with padding {self.pad} does "
                             f"not fit input {h}x{w}")
        return (self.out_channels, ho, wo)

    def init_params(self, rng: np.random.Generator) -> dict[str, NDArray[np.float32]]:
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        p = {"W": initialize(self.init, rng, (self.out_channels, self.in_channels, kh, kw),
                             fan_in, self.out_channels * kh * kw)}
        if self.bias:
            p["b"] = np.zeros(self.out_channels, dtype=np.float32)
        return p

    # ---------------------------------------------------------- workspace
    @property
    def col_shape(self) -> tuple[int, int]:
        """Per-image im2col matrix shape ``(C*kh*kw, Ho*Wo)``."""
        kh, kw = self.kernel_size
        _, ho, wo = self.output_shape
        return (self.in_channels * kh * kw, ho * wo)

    @property
    def expansion_ratio(self) -> float:
        """Size of the im2col matrix over the size of the input it unrolls."""
        rows, cols = self.col_shape
        return rows * cols / float(np.prod(self.input_shape))

    def workspace_bytes(self, batch: int) -> int:
        """Bytes of im2col workspace the device uses for this layer at ``batch``."""
        return self.device.conv_workspace_bytes(batch, self.col_shape)

    def cost_terms(self, batch: int, need_dx: bool = True
                   ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        geom = Conv2DGeometry("conv2d", self.input_shape, self.out_channels, self.kernel_size,
                              self.stride, self.pad, self.activation)
        bwd = "conv2d_backward" if need_dx else "conv2d_backward_weights"
        return [("conv2d", batch, geom)], [(bwd, batch, geom)], self._update_terms()

    # ------------------------------------------------------------ compute
    def forward(self, x: Any, training: bool = False) -> Any:
        y = self.buffer("y", (x.shape[0],) + self.output_shape)
        self.device.conv2d(x, self.params["W"], self.params.get("b"), self.stride, self.pad,
                           self.activation, out=y)
        self._x, self._y = x, y
        return y

    def backward(self, dy: Any, need_dx: bool = True) -> Any:
        x = self._x
        return self.device.conv2d_backward(
            x, self.params["W"], self._y, dy, self.stride, self.pad, self.activation,
            self.grads["W"], self.grads.get("b"), need_dx,
            self.buffer("dx", x.shape) if need_dx else None)
