"""Layers: each describes its math once in device operations."""

from .base import Layer
from .activations import Activation, ReLU, Sigmoid, Tanh, Softmax, fuse_activations, walk
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .norm import BatchNorm1D, BatchNorm2D
from .pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .reshape import Flatten
from .residual import Residual
from .registry import LAYERS

LAYERS.update({cls.__name__: cls for cls in
               (Dense, Conv2D, MaxPool2D, Flatten, ReLU, Sigmoid, Tanh, Softmax, BatchNorm1D,
                BatchNorm2D, Dropout, AvgPool2D, GlobalAvgPool2D, Residual)})

__all__ = ["Layer", "Activation", "ReLU", "Sigmoid", "Tanh", "Softmax", "Conv2D",
           "Dense", "MaxPool2D", "Flatten", "BatchNorm1D", "BatchNorm2D", "Dropout",
           "AvgPool2D", "GlobalAvgPool2D", "Residual", "fuse_activations", "walk", "LAYERS"]
