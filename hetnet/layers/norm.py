"""Batch normalisation (PyTorch's semantics) with a fused activation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .base import Layer
from .._validation import check_size
from ..devices import Device


class _BatchNorm(Layer):
    """Normalises each feature (axis 1) over the batch and the spatial axes.

    Training normalises with the batch's mean and biased variance and moves
    the running statistics towards the batch's (``running = (1 - momentum) *
    running + momentum * batch``, the variance unbiased); inference
    normalises with the running statistics.  ``gamma`` (ones) and ``beta``
    (zeros) are trained; ``running_mean`` (zeros) and ``running_var`` (ones)
    are state, saved and loaded with the weights but not trained.

    ``get_weights()`` is ``[gamma, beta, running_mean, running_var]`` (Keras's
    order) and ``set_weights`` takes the same four.  A ReLU, Sigmoid or Tanh
    right after it is fused into it by ``Sequential`` (and inside a
    :class:`Residual`).
    """

    config_keys = ("num_features", "momentum", "eps")
    #: the input's rank per sample this layer takes (1: (F,), 3: (C, H, W))
    sample_rank = 1
    #: Sequential fuses a following activation into this layer
    fusable_activations = ("relu", "sigmoid", "tanh")

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        num_features = check_size(f"{type(self).__name__} num_features", num_features)
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        if not float(eps) > 0.0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.num_features = int(num_features)
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.activation = "identity"
        self.state = {}

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        if len(shape) != self.sample_rank or shape[0] != self.num_features:
            want = "(F,)" if self.sample_rank == 1 else "(C, H, W)"
            raise ValueError(f"{type(self).__name__}({self.num_features}) expects per-sample "
                             f"input {want} with {self.num_features} features on the first "
                             f"axis, got {shape}")
        return shape

    def init_params(self, rng: np.random.Generator) -> dict[str, NDArray[np.float32]]:
        f = self.num_features
        return {"gamma": np.ones(f, dtype=np.float32), "beta": np.zeros(f, dtype=np.float32)}

    def build(self, device: Device, input_shape: Sequence[int], rng: np.random.Generator
              ) -> tuple[int, ...]:
        shape = super().build(device, input_shape, rng)
        f = self.num_features
        self.state = {"running_mean": device.zeros((f,)),
                      "running_var": device.asarray(np.ones(f, dtype=np.float32))}
        return shape

    # ------------------------------------------------------------ compute
    def forward(self, x: Any, training: bool = False) -> Any:
        dev = self.device
        if training and x.shape[0] * int(np.prod(self.input_shape[1:])) < 2:
            raise ValueError(f"{type(self).__name__} in training needs more than one value "
                             f"per feature, got a batch of {x.shape[0]} of per-sample shape "
                             f"{self.input_shape} (use a larger batch_size)")
        f = self.num_features
        self._mean, self._invstd = self.buffer("mean", (f,)), self.buffer("invstd", (f,))
        y = dev.batchnorm_forward(x, self.params["gamma"], self.params["beta"], self._mean,
                                  self._invstd, self.state["running_mean"],
                                  self.state["running_var"], self.momentum, self.eps,
                                  bool(training), self.activation,
                                  out=self.buffer("y", x.shape))
        self._x, self._y, self._training = x, y, bool(training)
        return y

    def backward(self, dy: Any, need_dx: bool = True) -> Any:
        return self.device.batchnorm_backward(
            self._x, self._y, dy, self.params["gamma"], self._mean, self._invstd,
            self._training, self.activation, self.grads["gamma"], self.grads["beta"],
            need_dx, self.buffer("dx", self._x.shape) if need_dx else None)

    def cost_terms(self, batch: int, need_dx: bool = True
                   ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        # training: one reduction pass for the statistics, one for the
        # normalisation; backward: the two sums, then dx
        n = batch * int(np.prod(self.output_shape))
        fwd = [("reduce", n), ("elementwise", n)]
        bwd = [("reduce", n)] + ([("elementwise", n)] if need_dx else [])
        return fwd, bwd, self._update_terms()

    def set_weights(self, weights: Sequence[ArrayLike]) -> None:
        weights = list(weights)
        if len(weights) == 4 and not (np.asarray(weights[3]) >= 0).all():
            raise ValueError(f"{type(self).__name__}: running_var (the fourth array) must "
                             "be >= 0")
        super().set_weights(weights)


class BatchNorm1D(_BatchNorm):
    """Batch normalisation of ``(N, F)`` inputs over the batch.

    Parameters
    ----------
    num_features : int
    momentum : float
        Weight of the batch in the running statistics' update.
    eps : float
        Added to the variance before its square root.

    Shapes: x, y ``(N, F)``; gamma, beta, running_mean, running_var ``(F,)``.
    """

    sample_rank = 1


class BatchNorm2D(_BatchNorm):
    """Batch normalisation of ``(N, C, H, W)`` inputs per channel, over the
    batch and the spatial axes.

    Parameters
    ----------
    num_channels : int
    momentum, eps : float
        As :class:`BatchNorm1D`.

    Shapes: x, y ``(N, C, H, W)``; gamma, beta, running_mean, running_var ``(C,)``.
    """

    config_keys = ("num_channels", "momentum", "eps")
    sample_rank = 3

    def __init__(self, num_channels: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__(num_channels, momentum, eps)

    @property
    def num_channels(self) -> int:
        return self.num_features
