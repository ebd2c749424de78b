"""Fully-connected layer ``y = x @ W + b``."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .base import Layer
from .geometry import DenseGeometry
from ..init import initialize, INITIALIZERS
from .._validation import check_size


class Dense(Layer):
    """Fully-connected layer.

    Parameters
    ----------
    in_features, out_features : int
    init : {"he", "glorot", "lecun"}
        Weight initialisation (biases start at 0).
    bias : bool

    Notes
    -----
    Shapes: x ``(N, in_features)``, W ``(in_features, out_features)``,
    b ``(out_features,)``, y ``(N, out_features)``.
    """

    config_keys = ("in_features", "out_features", "init", "bias")
    fusable_activations = ("relu", "sigmoid", "tanh")

    def __init__(self, in_features: int, out_features: int, init: str = "he", bias: bool = True
                 ) -> None:
        super().__init__()
        in_features = check_size("Dense in_features", in_features)
        out_features = check_size("Dense out_features", out_features)
        if init not in INITIALIZERS:
            raise ValueError(f"unknown init {init!r}; expected one of {sorted(INITIALIZERS)}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.init = init
        self.bias = bool(bias)
        self.activation = "identity"   # set when the runtime fuses an activation

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(input_shape) != (self.in_features,):
            raise ValueError(f"Dense({self.in_features}, {self.out_features}) got per-sample "
                             f"input shape {tuple(input_shape)}; expected ({self.in_features},)"
                             " (add Flatten() after a conv/pool layer)")
        return (self.out_features,)

    def init_params(self, rng: np.random.Generator) -> dict[str, NDArray[np.float32]]:
        import numpy as np
        p = {"W": initialize(self.init, rng, (self.in_features, self.out_features),
                             self.in_features, self.out_features)}
        if self.bias:
            p["b"] = np.zeros(self.out_features, dtype=np.float32)
        return p

    def cost_terms(self, batch: int, need_dx: bool = True
                   ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        geom = DenseGeometry("dense", self.in_features, self.out_features)
        n = batch * self.out_features
        fwd = [("gemm", batch, geom), ("elementwise", n)]
        # the activation's gradient and the bias gradient: one reduction pass
        # where there is a bias (Device.activation_bias_backward)
        if self.bias:
            bwd = [("reduce", n)]
        else:
            bwd = [("elementwise", n)] if self.activation != "identity" else []
        bwd += [("gemm_dw", batch, geom)]
        bwd += [("gemm_dx", batch, geom)] if need_dx else []
        return fwd, bwd, self._update_terms()

    def forward(self, x: Any, training: bool = False) -> Any:
        dev = self.device
        y = dev.gemm(x, self.params["W"], self.buffer("y", (x.shape[0], self.out_features)))
        dev.bias_activation(y, self.params.get("b"), self.activation)
        self._x, self._y = x, y
        return y

    def backward(self, dy: Any, need_dx: bool = True) -> Any:
        dev = self.device
        if self.activation != "identity" or self.bias:
            dy = dev.activation_bias_backward(self.activation, self._y, dy, self.grads.get("b"))
        dev.gemm(self._x, dy, self.grads["W"], trans_a=True)
        if not need_dx:
            return None
        return dev.gemm(dy, self.params["W"], self.buffer("dx", self._x.shape), trans_b=True)
