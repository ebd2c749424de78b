"""hetnet: a small, fast, understandable CNN/MLP trainer for heterogeneous machines."""

import sys

from ._version import __version__
from .layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid, Softmax, Tanh, Layer
from .model import Sequential, History, load
from .model import zoo as models
from .optim import SGD, Adam
from .info import build_info
from .devices import get_device
from . import devices          # callable: hn.devices() lists what this machine offers
from . import datasets, schedules
from .schedules import OneCycle, CosineDecay
from .sched.costmodel import recalibrate as calibrate

# the model zoo's public name: ``hn.models.lenet5``, ``import hetnet.models``
sys.modules[__name__ + ".models"] = models

__all__ = ["Conv2D", "Dense", "Flatten", "MaxPool2D", "ReLU", "Sigmoid", "Softmax", "Tanh",
           "Layer", "Sequential", "History", "SGD", "Adam", "load", "build_info", "get_device",
           "devices", "models", "datasets", "schedules", "OneCycle", "CosineDecay", "calibrate",
           "__version__"]

__all__ += ["HetNetClassifier", "HetNetRegressor"]


def __getattr__(name):
    # The scikit-learn estimators load on first use: scikit-learn is an optional extra.
    if name in ("HetNetClassifier", "HetNetRegressor"):
        from . import estimators
        return getattr(estimators, name)
    raise AttributeError(f"module 'hetnet' has no attribute {name!r}")
