"""Model zoo."""

from ..layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from .sequential import Sequential


def lenet5_layers(in_channels=1, num_classes=10, input_size=28):
    """LeNet-5 with ReLU and max pooling (padding 2 on the first convolution
    keeps a 28x28 input at 28x28, as the classic 32x32 input would be)."""
    pad = 2 if input_size == 28 else 0
    side = ((input_size + 2 * pad - 4) // 2 - 4) // 2
    return [Conv2D(in_channels, 6, kernel_size=5, padding=pad), ReLU(), MaxPool2D(2),
            Conv2D(6, 16, kernel_size=5), ReLU(), MaxPool2D(2),
            Flatten(), Dense(16 * side * side, 120), ReLU(), Dense(120, 84), ReLU(),
            Dense(84, num_classes)]


def lenet5(in_channels=1, num_classes=10, input_size=28, **kwargs):
    """LeNet-5 for ``input_size`` x ``input_size`` images (28 or 32)."""
    kwargs.setdefault("input_shape", (in_channels, input_size, input_size))  # built now: summary() works
    return Sequential(lenet5_layers(in_channels, num_classes, input_size), **kwargs)


def mlp_layers(sizes, activation=ReLU):
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2:
        raise ValueError(f"mlp needs at least input and output sizes, got {sizes}")
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Dense(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return layers


def mlp(sizes, activation=ReLU, **kwargs):
    """Multi-layer perceptron ``sizes = [in, hidden..., out]`` with ReLU."""
    layers = mlp_layers(sizes, activation)
    kwargs.setdefault("input_shape", (int(sizes[0]),))
    return Sequential(layers, **kwargs)


def convnet_layers(in_channels=1, num_classes=10, input_size=28, widths=(32, 64, 128)):
    """A wider CNN: 3x3 convolutions (padding 1) of ``widths`` channels, each
    followed by ReLU and 2x2 max pooling, then Dense(256) and the classifier."""
    layers, c, side = [], in_channels, input_size
    for w in widths:
        layers += [Conv2D(c, w, kernel_size=3, padding=1), ReLU(), MaxPool2D(2)]
        c, side = w, side // 2
    return layers + [Flatten(), Dense(c * side * side, 256), ReLU(), Dense(256, num_classes)]


def convnet(in_channels=1, num_classes=10, input_size=28, **kwargs):
    """The wider CNN of :func:`convnet_layers` (32-64-128 channels by default)."""
    kwargs.setdefault("input_shape", (in_channels, input_size, input_size))
    return Sequential(convnet_layers(in_channels, num_classes, input_size), **kwargs)
