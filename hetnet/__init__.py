"""hetnet: a small, fast, understandable CNN/MLP trainer for heterogeneous machines."""

__version__ = "0.1.0"

from .layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid, Softmax, Tanh, Layer
from .model import Sequential, History
from .optim import SGD, Adam
from .io import load
from .info import build_info
from .devices import get_device
from . import devices          # callable: hn.devices() lists what this machine offers
from . import models, datasets, schedules
from .schedules import OneCycle, CosineDecay
from .costmodel import recalibrate as calibrate
from .metaheuristics import SHADE, SHADEILS
from . import metaheuristics

__all__ = ["Conv2D", "Dense", "Flatten", "MaxPool2D", "ReLU", "Sigmoid", "Softmax", "Tanh",
           "Layer", "Sequential", "History", "SGD", "Adam", "load", "build_info", "get_device",
           "devices", "models", "datasets", "schedules", "OneCycle", "CosineDecay", "calibrate",
           "SHADE", "SHADEILS", "metaheuristics", "__version__"]

__all__ += ["HetNetClassifier", "HetNetRegressor"]


def __getattr__(name):
    # The scikit-learn estimators load on first use: scikit-learn is an optional extra.
    if name in ("HetNetClassifier", "HetNetRegressor"):
        from . import estimators
        return getattr(estimators, name)
    raise AttributeError(f"module 'hetnet' has no attribute {name!r}")
