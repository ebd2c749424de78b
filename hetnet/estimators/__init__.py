"""scikit-learn estimators: :class:`HetNetClassifier` and :class:`HetNetRegressor`
(:mod:`.base` holds what they share: validation, the network's
architecture, fitting, persistence).

This package needs scikit-learn (``pip install 'hetnet[sklearn]'``).
"""

from .base import DeviceFallbackWarning, load_estimator
from .classifier import HetNetClassifier
from .regressor import HetNetRegressor

__all__ = ["HetNetClassifier", "HetNetRegressor", "DeviceFallbackWarning", "load_estimator"]
