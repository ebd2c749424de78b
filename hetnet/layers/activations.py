"""Activation layers.  A dense or conv layer directly before ReLU, Sigmoid or
Tanh absorbs it (``Sequential`` fuses them), so these run alone only where
nothing precedes them that can."""

from .base import Layer


class Activation(Layer):
    """Elementwise activation, its gradient taken from the saved output."""

    kind = "identity"

    def forward(self, x, training=False):
        y = self.device.activation(self.kind, x, out=self.buffer("y", x.shape))
        self._y = y
        return y

    def backward(self, dy, need_dx=True):
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

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"Softmax takes (N, features) input, got per-sample shape {input_shape}")
        return input_shape
