"""hetnet: a small, fast, understandable CNN/MLP trainer for heterogeneous machines."""

from __future__ import annotations

import os
import sys
from typing import Any

from ._version import __version__
from .layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid, Softmax, Tanh, Layer
from .layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Dropout, GlobalAvgPool2D,
                     Residual)
from .model import Sequential, History
from .model import load as _load_model
from .model import io as _io
from .model import zoo as models
from .optim import SGD, Adam, AdamW, RMSProp
from .info import build_info
from .devices import Device, get_device
from . import devices          # callable: hn.devices() lists what this machine offers
from . import datasets, schedules, metrics
from .schedules import OneCycle, CosineDecay
from .sched.costmodel import recalibrate as calibrate
from .metaheuristics import SHADE, SHADEILS
from . import metaheuristics

# the model zoo's public name: ``hn.models.lenet5``, ``import hetnet.models``
sys.modules[__name__ + ".models"] = models

__all__ = ["Conv2D", "Dense", "Flatten", "MaxPool2D", "ReLU", "Sigmoid", "Softmax", "Tanh",
           "Layer", "Sequential", "History", "SGD", "Adam", "AdamW", "RMSProp", "load",
           "build_info", "get_device", "devices", "models", "datasets", "schedules", "metrics",
           "OneCycle", "CosineDecay", "calibrate", "SHADE", "SHADEILS", "metaheuristics",
           "__version__"]

__all__ += ["HetNetClassifier", "HetNetRegressor"]
__all__ += ["AvgPool2D", "BatchNorm1D", "BatchNorm2D", "Dropout", "GlobalAvgPool2D", "Residual"]


def load(path: str | os.PathLike[str], device: str | Device | None = None) -> Any:
    """Read a file written by :meth:`Sequential.save` (returns the
    :class:`Sequential`) or by an estimator's ``save`` (returns the
    :class:`HetNetClassifier` or :class:`HetNetRegressor`, with its labels).

    ``device``: where the network runs; default the CPU for a model, the
    device it was fitted with for an estimator.  Files are read with
    ``allow_pickle=False`` and checked against the format's schema.
    """
    if _io.holds_estimator(path):
        try:
            from .estimators import load_estimator
        except ImportError as exc:
            raise ImportError(f"{path!r} holds a scikit-learn estimator, which needs "
                              f"scikit-learn ({exc}); hetnet.model.load reads its bare "
                              "network") from None
        return load_estimator(path, device=device)
    return _load_model(path, device="cpu" if device is None else device)


def __getattr__(name):
    # The scikit-learn estimators load on first use: scikit-learn is an optional extra.
    if name in ("HetNetClassifier", "HetNetRegressor"):
        from . import estimators
        return getattr(estimators, name)
    raise AttributeError(f"module 'hetnet' has no attribute {name!r}")
