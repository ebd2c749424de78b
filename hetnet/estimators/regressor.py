"""The scikit-learn regressor: :class:`HetNetRegressor`."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score

from .base import _BaseHetNet


class HetNetRegressor(RegressorMixin, _BaseHetNet):
    """A hetnet network as a scikit-learn regressor (mean squared error).

    Takes the parameters of :class:`HetNetClassifier` except ``class_weight``;
    ``y`` may have several columns (one network output each).  With
    ``early_stopping`` the validation score is R^2.  Targets are used as
    given: scale them (e.g. ``TransformedTargetRegressor`` with a
    ``StandardScaler``) when they are far from unit size.  Its attributes are
    those of :class:`HetNetClassifier` except ``classes_``, and one more:

    Attributes
    ----------
    n_outputs_ : int
        Target columns.
    """

    _loss = "mse"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _encode_targets(self, y, reset, classes):
        y = np.asarray(y, dtype=np.float64)
        n_outputs = 1 if y.ndim == 1 else y.shape[1]
        if reset:
            self._y_ndim = y.ndim
        elif n_outputs != self.n_outputs_:
            raise ValueError(f"y has {n_outputs} target column(s), but {type(self).__name__} was "
                             f"fitted on {self.n_outputs_}")
        return np.ascontiguousarray(y.reshape(len(y), n_outputs), dtype=np.float32), n_outputs

    def _apply_class_weight(self, w, y, incremental):
        return w

    def partial_fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
                    ) -> HetNetRegressor:
        """One epoch over ``(X, y)`` from the current weights (the first call
        initialises them).

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X: ArrayLike) -> NDArray[np.float32]:
        """Predicted targets: ``(n_samples,)`` for one output, else
        ``(n_samples, n_outputs)``; float64."""
        X = self._check_predict_X(X)
        out = self._logits(X)
        return out[:, 0] if out.shape[1] == 1 else out

    def _score_targets(self, model, X, targets, weights):
        pred = model.predict_logits(X).astype(np.float64)
        return float(r2_score(targets, pred, sample_weight=weights))


__all__ = ["HetNetRegressor"]
