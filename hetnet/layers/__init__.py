"""Layers: each describes its math once in device operations."""

from .base import Layer
from .activations import Activation, ReLU, Sigmoid, Tanh, Softmax
from .conv import Conv2D
from .dense import Dense
from .pool import MaxPool2D
from .reshape import Flatten

#: name -> class, used to rebuild saved models without executing anything
LAYERS = {cls.__name__: cls for cls in
          (Dense, Conv2D, MaxPool2D, Flatten, ReLU, Sigmoid, Tanh, Softmax)}

__all__ = ["Layer", "Activation", "ReLU", "Sigmoid", "Tanh", "Softmax", "Conv2D",
           "Dense", "MaxPool2D", "Flatten", "LAYERS"]
