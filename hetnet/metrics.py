"""Metrics of a model's predictions, as scikit-learn defines them.

:meth:`hetnet.Sequential.evaluate` with ``metrics=`` runs the data through
the model once (inference mode), keeps the predictions on the host and
computes each metric here, in float64:

* ``accuracy``: the fraction of samples predicted right (every output right,
  for binary cross-entropy with several outputs: scikit-learn's subset
  accuracy), ``sklearn.metrics.accuracy_score``;
* ``balanced_accuracy``: the mean over the classes present in ``y_true`` of
  their recall, ``sklearn.metrics.balanced_accuracy_score``;
* ``r2``, ``mae``, ``mse``: ``sklearn.metrics.r2_score``,
  ``mean_absolute_error``, ``mean_squared_error``, each averaged uniformly
  over the outputs (``r2`` of an output whose targets are all equal is 1 if
  predicted exactly, else 0: scikit-learn's ``force_finite``).

Every metric takes ``sample_weight``.  The functions take class labels
``(n,)`` (or 0/1 indicators ``(n, k)``) for the classification metrics and
``(n,)`` or ``(n, k)`` values for the regression ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray


def _weights(sample_weight, n):
    if sample_weight is None:
        return np.ones(n)
    w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
    return w


def _pair(y_true, y_pred):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape[:1] != y_pred.shape[:1] or y_true.size != y_pred.size:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    return y_true, y_pred.reshape(y_true.shape)


def accuracy(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None
             ) -> float:
    """Weighted fraction of samples whose label (all labels, for 2-D
    indicators) is predicted right."""
    y_true, y_pred = _pair(y_true, y_pred)
    right = y_true == y_pred
    if right.ndim > 1:
        right = right.reshape(len(right), -1).all(axis=1)
    w = _weights(sample_weight, len(right))
    return float(np.average(right, weights=w)) if len(right) else 0.0


def balanced_accuracy(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None
                      ) -> float:
    """Mean recall over the classes present in ``y_true`` (weighted counts)."""
    y_true, y_pred = _pair(y_true, y_pred)
    if y_true.ndim != 1:
        raise ValueError("balanced_accuracy takes one label per sample (a class index or a "
                         f"single binary output), got targets of shape {y_true.shape}")
    w = _weights(sample_weight, len(y_true))
    recalls = []
    for c in np.unique(y_true):
        is_c = y_true == c
        total = w[is_c].sum()
        if total > 0:
            recalls.append(w[is_c & (y_pred == c)].sum() / total)
    return float(np.mean(recalls)) if recalls else 0.0


def _columns(y_true, y_pred):
    y_true, y_pred = _pair(y_true, y_pred)
    t = y_true.astype(np.float64).reshape(len(y_true), -1)
    return t, y_pred.astype(np.float64).reshape(t.shape)


def mean_squared_error(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None
                       ) -> float:
    t, p = _columns(y_true, y_pred)
    w = _weights(sample_weight, len(t))
    return float(np.average(np.average((p - t) ** 2, axis=0, weights=w)))


def mean_absolute_error(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None
                        ) -> float:
    t, p = _columns(y_true, y_pred)
    w = _weights(sample_weight, len(t))
    return float(np.average(np.average(np.abs(p - t), axis=0, weights=w)))


def r2(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None
       ) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` per output,
    averaged uniformly over the outputs."""
    t, p = _columns(y_true, y_pred)
    w = _weights(sample_weight, len(t))[:, None]
    ss_res = (w * (t - p) ** 2).sum(axis=0)
    mean = (w * t).sum(axis=0) / w.sum()
    ss_tot = (w * (t - mean) ** 2).sum(axis=0)
    scores = np.ones_like(ss_res)
    ok = ss_tot != 0
    scores[ok] = 1 - ss_res[ok] / ss_tot[ok]
    scores[~ok & (ss_res != 0)] = 0.0
    return float(scores.mean())


#: name -> (function, True for a classification metric)
def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None,
                     n_classes: int | None = None) -> NDArray[Any]:
    """``(k, k)`` counts (weighted: sums of weights) of samples of true class
    ``i`` (row) predicted as ``j`` (column), scikit-learn's layout;
    ``k = n_classes``, or one more than the largest label seen."""
    y_true, y_pred = _pair(y_true, y_pred)
    if y_true.ndim != 1:
        raise ValueError("confusion_matrix takes one label per sample, got targets of shape "
                         f"{y_true.shape}")
    y_true, y_pred = y_true.astype(np.int64), y_pred.astype(np.int64)
    k = int(n_classes) if n_classes is not None else int(max(y_true.max(initial=-1),
                                                             y_pred.max(initial=-1)) + 1)
    if len(y_true) and (min(y_true.min(), y_pred.min()) < 0
                        or max(y_true.max(), y_pred.max()) >= k):
        raise ValueError(f"labels must lie in 0..{k - 1}")
    w = _weights(sample_weight, len(y_true))
    out = np.zeros((k, k), dtype=np.float64)
    np.add.at(out, (y_true, y_pred), w)
    return out.astype(np.int64) if sample_weight is None else out


def per_class_accuracy(y_true: ArrayLike, y_pred: ArrayLike,
                       sample_weight: ArrayLike | None = None, n_classes: int | None = None
                       ) -> NDArray[np.float64]:
    """``(k,)``: the fraction of each true class predicted right (its
    recall); NaN for a class with no samples."""
    cm = confusion_matrix(y_true, y_pred, sample_weight, n_classes).astype(np.float64)
    totals = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(cm) / totals, np.nan)


#: the metrics that take the number of classes and return arrays
PER_CLASS = ("confusion_matrix", "per_class_accuracy")

METRICS = {
    "accuracy": (accuracy, True),
    "balanced_accuracy": (balanced_accuracy, True),
    "r2": (r2, False),
    "mae": (mean_absolute_error, False),
    "mse": (mean_squared_error, False),
    "confusion_matrix": (confusion_matrix, True),
    "per_class_accuracy": (per_class_accuracy, True),
}


def check_metrics(metrics: str | Iterable[str], classification: bool) -> tuple[str, ...]:
    """The metric names as a tuple, each known and fit for the model's kind."""
    if isinstance(metrics, str):
        metrics = (metrics,)
    try:
        names = tuple(metrics)
    except TypeError:
        raise ValueError(f"metrics must be a list of names from {sorted(METRICS)}, "
                         f"got {metrics!r}") from None
    for name in names:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; expected names from {sorted(METRICS)}")
        if METRICS[name][1] != classification:
            kind = "classification" if METRICS[name][1] else "regression"
            other = "a classification" if classification else "a regression"
            raise ValueError(f"metric {name!r} is for {kind} models; for {other} model use "
                             f"{sorted(k for k, v in METRICS.items() if v[1] == classification)}")
    return names


def score(names: Iterable[str], loss_name: str, yt: NDArray[Any], logits: NDArray[Any],
          sample_weight: NDArray[Any] | None = None) -> dict[str, Any]:
    """The metrics ``names`` (checked by :func:`check_metrics`) of a model
    with loss ``loss_name`` from its ``logits`` (n, k) and the targets ``yt``
    as :func:`hetnet._validation.check_targets` gives them: classes by
    arg-max for cross-entropy, by the sign of each logit for binary
    cross-entropy, the outputs themselves for regression."""
    if loss_name == "cross_entropy":
        y_true, y_pred = yt, logits.argmax(axis=1)
    elif loss_name == "binary_cross_entropy":
        y_true, y_pred = (yt > 0.5).astype(np.int64), (logits > 0).astype(np.int64)
        if y_true.shape[1] == 1:
            y_true, y_pred = y_true[:, 0], y_pred[:, 0]
    else:
        y_true, y_pred = yt, logits
    k = logits.shape[1] if loss_name == "cross_entropy" else 2
    out = {}
    for name in names:
        fn = METRICS[name][0]
        if name in PER_CLASS:
            if y_true.ndim != 1:
                raise ValueError(f"{name} needs one class per sample; this model has "
                                 f"{logits.shape[1]} binary outputs")
            out[name] = fn(y_true, y_pred, sample_weight, n_classes=k)
        else:
            out[name] = fn(y_true, y_pred, sample_weight)
    return out


__all__ = ["METRICS", "accuracy", "balanced_accuracy", "r2", "mean_absolute_error",
           "mean_squared_error", "confusion_matrix", "per_class_accuracy", "score",
           "check_metrics"]
