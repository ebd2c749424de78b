"""Model zoo.

The classic networks (:func:`lenet5`, :func:`mlp`, :func:`convnet`) and the
models of the training-techniques thesis (its tables 2-4 and its MLP list):
:func:`lenet5` with ``batch_norm=True, input_size=32``, :func:`resnet15`,
:func:`resnet57` and :func:`thesis_mlp`.  Each ``*_layers`` function returns
the list of layers; the function without the suffix wraps it in a
:class:`~hetnet.Sequential` built for its input shape, so ``summary()`` and
``count_params()`` work before ``fit``.  Parameter counts are those of
PyTorch's ``sum(p.numel() for p in model.parameters())``: BatchNorm's gamma
and beta count, its running statistics (state, not trained) do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..layers import (BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,
                     GlobalAvgPool2D, Layer, MaxPool2D, ReLU, Residual)
from .sequential import Sequential


def _positive_int(name, value):
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _built(layers, input_shape, kwargs):
    """A Sequential of ``layers`` built for ``input_shape`` unless the caller
    gives its own ``input_shape``."""
    kwargs.setdefault("input_shape", input_shape)
    return Sequential(layers, **kwargs)


# ------------------------------------------------------------------- LeNet-5
def lenet5_layers(in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
                  batch_norm: bool = False, init: str = "he") -> list[Layer]:
    """LeNet-5 with ReLU and max pooling.

    A 28x28 input gets padding 2 on the first convolution (so it sees what
    the classic 32x32 input would); a 32x32 input none.  With
    ``batch_norm=True`` a BatchNorm2D follows each convolution and a
    BatchNorm1D each hidden dense layer, before its ReLU: the thesis's table 2
    (62,158 parameters at 32x32 and 10 classes).
    """
    in_channels = _positive_int("in_channels", in_channels)
    num_classes = _positive_int("num_classes", num_classes)
    input_size = _positive_int("input_size", input_size)
    pad = 2 if input_size == 28 else 0
    side = ((input_size + 2 * pad - 4) // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"LeNet-5 needs input_size >= 16 (two 5x5 convolutions and two 2x2 "
                         f"poolings), got {input_size}")
    if not batch_norm:
        return [Conv2D(in_channels, 6, kernel_size=5, padding=pad, init=init), ReLU(),
                MaxPool2D(2),
                Conv2D(6, 16, kernel_size=5, init=init), ReLU(), MaxPool2D(2),
                Flatten(), Dense(16 * side * side, 120, init=init), ReLU(),
                Dense(120, 84, init=init), ReLU(), Dense(84, num_classes, init=init)]
    return [Conv2D(in_channels, 6, kernel_size=5, padding=pad, init=init), BatchNorm2D(6),
            ReLU(), MaxPool2D(2),
            Conv2D(6, 16, kernel_size=5, init=init), BatchNorm2D(16), ReLU(), MaxPool2D(2),
            Flatten(), Dense(16 * side * side, 120, init=init), BatchNorm1D(120), ReLU(),
            Dense(120, 84, init=init), BatchNorm1D(84), ReLU(),
            Dense(84, num_classes, init=init)]


def lenet5(in_channels: int = 1, num_classes: int = 10, *, batch_norm: bool = False,
           input_size: int = 28, init: str = "he", **kwargs: Any) -> Sequential:
    """LeNet-5 for ``input_size`` x ``input_size`` images (:func:`lenet5_layers`),
    built for input ``(in_channels, input_size, input_size)``.

    ``hn.models.lenet5(batch_norm=True, input_size=32, init="glorot")`` is the
    thesis's model.  Other keyword arguments go to :class:`~hetnet.Sequential`.
    """
    return _built(lenet5_layers(in_channels, num_classes, input_size, batch_norm, init),
                  (in_channels, input_size, input_size), kwargs)


# ------------------------------------------------------------------ ResNets
#: Blocks per stage of the thesis's ResNets (tables 3 and 4); the stages
#: output 64, 128, 256 and 512 channels, the last three at stride 2.
RESNET_STAGES = {"resnet15": (1, 1, 1, 1), "resnet57": (3, 4, 4, 3)}
RESNET_WIDTHS = (64, 128, 256, 512)
#: bottleneck blocks narrow to out_channels / 4 inside
BOTTLENECK_RATIO = 4


def bottleneck_block(in_channels: int, out_channels: int, stride: int = 1,
                     init: str = "glorot") -> list[Layer]:
    """A bottleneck residual block and the ReLU after its sum, as two layers.

    Branch: 1x1 convolution to ``out_channels // 4``, BatchNorm, ReLU; 3x3
    convolution (padding 1, ``stride``), BatchNorm, ReLU; 1x1 convolution to
    ``out_channels``, BatchNorm; no convolution has a bias (BatchNorm's beta
    is one).  Shortcut: the identity, or, where the stride or the width
    changes, a 1x1 convolution with ``stride`` and a BatchNorm.

    Returns
    -------
    [Residual, ReLU]
    """
    mid = out_channels // BOTTLENECK_RATIO
    branch = [Conv2D(in_channels, mid, 1, bias=False, init=init), BatchNorm2D(mid), ReLU(),
              Conv2D(mid, mid, 3, stride=stride, padding=1, bias=False, init=init),
              BatchNorm2D(mid), ReLU(),
              Conv2D(mid, out_channels, 1, bias=False, init=init), BatchNorm2D(out_channels)]
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = [Conv2D(in_channels, out_channels, 1, stride=stride, bias=False, init=init),
                    BatchNorm2D(out_channels)]
    return [Residual(branch, shortcut), ReLU()]


def resnet_layers(blocks: Sequence[int], in_channels: int = 1, num_classes: int = 10,
                  input_size: int = 32, init: str = "glorot", dropout: float = 0.5
                  ) -> list[Layer]:
    """The thesis's ResNet stem, bottleneck stages and head.

    Stem: 7x7 convolution to 64 channels (no padding, no bias), BatchNorm2D,
    ReLU, 3x3 max pooling at stride 2 with padding 1 (32x32 -> 26x26 ->
    13x13).  Stages of ``blocks[i]`` bottleneck blocks (:func:`bottleneck_block`)
    of 64, 128, 256, 512 channels, the first block of the last three at
    stride 2 (13 -> 7 -> 4 -> 2).  Head: global average pooling, BatchNorm1D(512),
    Dropout(``dropout``), one dense layer to ``num_classes``.

    Tables 3 and 4 list the pooling as "2x2, stride 2, padding 1" but its
    output as 13x13, which is what the 3x3 window of the thesis's code gives
    (a 2x2 window with padding 1 would give 14x14); the code is followed.
    The tables' order BatchNorm then ReLU in the stem is kept (the code
    applies ReLU first).
    """
    in_channels = _positive_int("in_channels", in_channels)
    num_classes = _positive_int("num_classes", num_classes)
    input_size = _positive_int("input_size", input_size)
    blocks = tuple(_positive_int("blocks per stage", b) for b in blocks)
    if len(blocks) != len(RESNET_WIDTHS):
        raise ValueError(f"blocks must give {len(RESNET_WIDTHS)} stages, got {blocks}")
    if input_size < 7:
        raise ValueError(f"the ResNets' 7x7 stem needs input_size >= 7, got {input_size}")
    layers = [Conv2D(in_channels, 64, 7, bias=False, init=init), BatchNorm2D(64), ReLU(),
              MaxPool2D(3, stride=2, padding=1)]
    c = 64
    for stage, (width, n) in enumerate(zip(RESNET_WIDTHS, blocks)):
        for b in range(n):
            stride = 2 if stage > 0 and b == 0 else 1
            layers += bottleneck_block(c, width, stride, init)
            c = width
    layers += [GlobalAvgPool2D(), BatchNorm1D(c), Dropout(dropout),
               Dense(c, num_classes, init=init)]
    return layers


def resnet15(in_channels: int = 1, num_classes: int = 10, input_size: int = 32, *,
             init: str = "glorot", dropout: float = 0.5, **kwargs: Any) -> Sequential:
    """The thesis's ResNet-15 (table 3): one bottleneck block per stage,
    built for input ``(in_channels, input_size, input_size)``
    (:func:`resnet_layers`).  Other keyword arguments go to
    :class:`~hetnet.Sequential`."""
    return _built(resnet_layers(RESNET_STAGES["resnet15"], in_channels, num_classes,
                                input_size, init, dropout),
                  (in_channels, input_size, input_size), kwargs)


def resnet57(in_channels: int = 1, num_classes: int = 10, input_size: int = 32, *,
             init: str = "glorot", dropout: float = 0.5, **kwargs: Any) -> Sequential:
    """The thesis's ResNet-57 (table 4): 3, 4, 4 and 3 bottleneck blocks per
    stage, built for input ``(in_channels, input_size, input_size)``
    (:func:`resnet_layers`).  Other keyword arguments go to
    :class:`~hetnet.Sequential`."""
    return _built(resnet_layers(RESNET_STAGES["resnet57"], in_channels, num_classes,
                                input_size, init, dropout),
                  (in_channels, input_size, input_size), kwargs)


# -------------------------------------------------------------- thesis MLPs
#: Hidden widths of the thesis's MLPs by number of hidden layers.
THESIS_MLP_WIDTHS = {
    1: (64,),
    2: (64, 64),
    5: (64, 128, 256, 128, 64),
    11: (32, 64, 128, 256, 512, 1024, 512, 256, 128, 64, 32),
}


def thesis_mlp_layers(hidden: int, n_inputs: int, n_outputs: int,
                      init: str = "glorot") -> list[Layer]:
    """The thesis's MLP with ``hidden`` hidden layers (1, 2, 5 or 11), as
    fastai's ``TabularModel`` builds it (the thesis's implementation):

    ``BatchNorm1D(n_inputs)``, then per hidden width ``w``: ``Dense(., w,
    bias=False)``, ReLU, ``BatchNorm1D(w)``; then ``Dense(., n_outputs)`` with
    a bias.  So a BatchNorm1D comes before each dense layer, and a dense
    layer followed by BatchNorm has no bias (BatchNorm's beta is one).  For
    30 inputs and 2 outputs: 2,238 / 6,462 / 85,310 / 1,403,838 parameters,
    the thesis's counts.
    """
    try:
        widths = THESIS_MLP_WIDTHS[hidden]
    except (KeyError, TypeError):
        raise ValueError(f"thesis_mlp hidden must be one of {sorted(THESIS_MLP_WIDTHS)} "
                         f"(the thesis's MLPs), got {hidden!r}") from None
    n_inputs = _positive_int("n_inputs", n_inputs)
    n_outputs = _positive_int("n_outputs", n_outputs)
    layers: list[Layer] = [BatchNorm1D(n_inputs)]
    prev = n_inputs
    for w in widths:
        layers += [Dense(prev, w, bias=False, init=init), ReLU(), BatchNorm1D(w)]
        prev = w
    return layers + [Dense(prev, n_outputs, init=init)]


def thesis_mlp(hidden: int, n_inputs: int, n_outputs: int, *, init: str = "glorot",
               **kwargs: Any) -> Sequential:
    """The thesis's MLP (:func:`thesis_mlp_layers`) built for ``(n_inputs,)``.

    Use ``loss="mse"`` for regression (the thesis's) and the default
    cross-entropy for classification.  Other keyword arguments go to
    :class:`~hetnet.Sequential`.
    """
    return _built(thesis_mlp_layers(hidden, n_inputs, n_outputs, init), (int(n_inputs),),
                  kwargs)


# ------------------------------------------------------------ plain models
def mlp_layers(sizes: Sequence[int], activation: type[Layer] = ReLU) -> list[Layer]:
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2:
        raise ValueError(f"mlp needs at least input and output sizes, got {sizes}")
    layers: list[Layer] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Dense(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return layers


def mlp(sizes: Sequence[int], activation: type[Layer] = ReLU, **kwargs: Any) -> Sequential:
    """Multi-layer perceptron ``sizes = [in, hidden..., out]`` with ReLU."""
    layers = mlp_layers(sizes, activation)
    return _built(layers, (int(sizes[0]),), kwargs)      # built now: summary() works


def convnet_layers(in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
                   widths: Sequence[int] = (32, 64, 128)) -> list[Layer]:
    """A wider CNN: 3x3 convolutions (padding 1) of ``widths`` channels, each
    followed by ReLU and 2x2 max pooling, then Dense(256) and the classifier."""
    layers, c, side = [], in_channels, input_size
    for w in widths:
        layers += [Conv2D(c, w, kernel_size=3, padding=1), ReLU(), MaxPool2D(2)]
        c, side = w, side // 2
    return layers + [Flatten(), Dense(c * side * side, 256), ReLU(), Dense(256, num_classes)]


def convnet(in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
            **kwargs: Any) -> Sequential:
    """The wider CNN of :func:`convnet_layers` (32-64-128 channels by default)."""
    return _built(convnet_layers(in_channels, num_classes, input_size),
                  (in_channels, input_size, input_size), kwargs)
