"""The scikit-learn classifier: :class:`HetNetClassifier`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets

from .._validation import check_float as _check_float
from ..callbacks import Callback
from ..devices import Device
from ..layers import Layer
from ..metaheuristics import Metaheuristic
from ..optim import Optimizer
from .base import _BaseHetNet


class HetNetClassifier(ClassifierMixin, _BaseHetNet):
    """A hetnet network as a scikit-learn classifier (softmax + cross-entropy).

    Parameters
    ----------
    architecture : {"mlp", "lenet5"} or list, default "mlp"
        ``"mlp"``: dense layers of ``hidden_layer_sizes`` with ``activation``;
        ``"lenet5"``: LeNet-5 for square images; or a list of layers, each a
        hetnet ``Layer`` (used as a template: fit builds a fresh copy), a dict
        ``{"class": "Dense", "config": {...}}`` or a layer name (``"relu"``),
        the last emitting one logit per class.
    hidden_layer_sizes : tuple of int, default (100,)
        Hidden layer widths for ``"mlp"``.
    activation : {"relu", "tanh", "logistic"}, default "relu"
        Hidden activation for ``"mlp"``.
    input_shape : tuple of int, optional
        Per-sample shape, e.g. ``(1, 28, 28)``, for flat X fed to a
        convolutional architecture.  Default: the shape of 3-/4-D X, flat
        for ``"mlp"``, a square one-channel image otherwise.
    optimizer : {"adam", "sgd", "nag", "rmsprop", "adamw", "shade", "shade-ils", \
"shade-gd", "shade-ils-gd"}, hetnet Optimizer or Metaheuristic, default "adam"
        ``"nag"`` is SGD with Nesterov momentum; ``"adamw"`` applies ``alpha``
        as AdamW's decoupled decay (``w *= 1 - lr alpha`` a step) instead of
        an L2 penalty.  An ``Optimizer`` instance is copied and used as it is
        (``learning_rate_init``, ``momentum`` and ``alpha`` then do not apply).
        The metaheuristics (population 10, :mod:`hetnet.model.evolve`) train
        for ``max_evals`` loss evaluations in 20 epochs instead of
        ``max_iter`` epochs; ``"-gd"``: the hybrid with Adam
        (``learning_rate_init``), one gradient epoch every 200 evaluations.
    max_evals : int, default 4200
        Loss evaluations (each over the whole training set) of a
        metaheuristic optimizer; unused by gradient optimizers.
    learning_rate_init : float, default 0.001
    momentum : float, default 0.9
        SGD's and NAG's momentum (``v = momentum v + g; w -= lr v``).
    alpha : float, default 0.0001
        L2 penalty ``0.5 alpha ||w||^2 / batch_size`` (as MLPClassifier),
        applied as weight decay to every parameter, biases included.
    batch_size : int or "auto", default "auto"
        ``"auto"`` is ``min(200, n_samples)``.
    max_iter : int, default 200
        Most epochs per ``fit``.
    shuffle : bool, default True
        Reshuffle the samples each epoch.
    tol : float, default 1e-4
        Improvement that counts (training loss, or validation score with
        ``early_stopping``).
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the data (stratified), stop when
        its accuracy has not improved by ``tol`` for ``n_iter_no_change``
        epochs and restore the weights of the best epoch.  Without it,
        training stops when the training loss has not improved by ``tol``
        for ``n_iter_no_change`` epochs.
    validation_fraction : float, default 0.1
    n_iter_no_change : int, default 10
    class_weight : dict, "balanced" or None, default None
        Per-class loss weights (keys are class labels); ``"balanced"``
        weights classes inversely to their frequency.  Multiplies
        ``sample_weight``.
    warm_start : bool, default False
        ``fit`` continues from the current weights instead of starting anew.
    random_state : int, RandomState or None
        Seeds initialisation, shuffling and the validation split.
    device : str, default "auto"
        ``"auto"``, ``"cpu"``, ``"gpu"``, ``"opencl:P:D"`` or ``"numpy"``.
    n_threads : int, optional
        CPU threads (only for ``"cpu"``/``"auto"``); default from
        ``HETNET_NUM_THREADS`` / ``OMP_NUM_THREADS`` / the CPUs available.
    callbacks : list, optional
        :mod:`hetnet.callbacks` objects (hooks get the ``Sequential``).
    verbose : int, default 0
        1: a progress bar per epoch with loss and images/s.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, in the order of ``predict_proba``'s columns.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X had string column names (a DataFrame).
    input_shape_ : tuple
        Per-sample shape the network takes.
    n_outputs_ : int
        Network outputs (the number of classes).
    model_ : hetnet.Sequential
        The trained network.
    device_ : str
        Name of the device the network is on.
    n_iter_ : int
        Epochs run by the last ``fit`` (1 after ``partial_fit``).
    t_ : int
        Training samples seen since the weights were initialised.
    loss_curve_ : list of float
        Training loss per epoch since initialisation.
    best_loss_ : float
        Least of ``loss_curve_``.
    validation_scores_ : list of float or None
        Validation accuracy per epoch with ``early_stopping``, else None.
    best_validation_score_ : float or None
    history_ : hetnet.History
        Per-epoch ``loss``, ``images_per_s``, ``time_s`` (and ``val_score``).
    """

    _loss = "cross_entropy"

    def __init__(self, architecture: str | Sequence[Layer | dict[str, Any] | str] = "mlp", *,
                 hidden_layer_sizes: Sequence[int] = (100,), activation: str = "relu",
                 input_shape: Sequence[int] | None = None,
                 optimizer: str | Optimizer | Metaheuristic = "adam",
                 learning_rate_init: float = 0.001, momentum: float = 0.9, alpha: float = 0.0001,
                 batch_size: int | str = "auto", max_iter: int = 200, shuffle: bool = True,
                 tol: float = 1e-4, early_stopping: bool = False,
                 validation_fraction: float = 0.1, n_iter_no_change: int = 10,
                 class_weight: dict[Any, float] | str | None = None, warm_start: bool = False,
                 random_state: int | np.random.RandomState | None = None,
                 device: str | Device = "auto", n_threads: int | None = None,
                 callbacks: Sequence[Callback] | None = None, verbose: int = 0,
                 max_evals: int = 4200) -> None:
        super().__init__(
            architecture=architecture, hidden_layer_sizes=hidden_layer_sizes,
            activation=activation, input_shape=input_shape, optimizer=optimizer,
            learning_rate_init=learning_rate_init, momentum=momentum, alpha=alpha,
            batch_size=batch_size, max_iter=max_iter, shuffle=shuffle, tol=tol,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change, warm_start=warm_start,
            random_state=random_state, device=device, n_threads=n_threads,
            callbacks=callbacks, verbose=verbose, max_evals=max_evals)
        self.class_weight = class_weight

    def _encode_targets(self, y, reset, classes):
        check_classification_targets(y)
        if reset:
            if classes is None:
                found = np.unique(y)
            else:
                found = np.unique(np.asarray(classes))
                if not np.isin(y, found).all():
                    unseen = np.setdiff1d(np.unique(y), found)
                    raise ValueError(f"y holds labels {unseen.tolist()} that are not in "
                                     f"classes={found.tolist()}")
            if len(found) < 2:
                raise ValueError(f"{type(self).__name__} needs at least 2 classes in y; got 1 "
                                 f"class: {found.tolist()}")
            self.classes_ = found
        else:
            if classes is not None and not np.array_equal(np.unique(np.asarray(classes)),
                                                          self.classes_):
                raise ValueError(f"classes={list(classes)} differs from the classes of the first "
                                 f"partial_fit call, {self.classes_.tolist()}")
            unseen = np.setdiff1d(np.unique(y), self.classes_)
            if unseen.size:
                raise ValueError(f"y holds labels {unseen.tolist()} not seen when the model was "
                                 f"first fitted (classes_ = {self.classes_.tolist()}); "
                                 "refit with warm_start=False")
        return np.searchsorted(self.classes_, y).astype(np.int32), len(self.classes_)

    def _apply_class_weight(self, w, y, incremental):
        cw = self.class_weight
        if cw is None:
            return w
        if isinstance(cw, str) and cw != "balanced":
            raise ValueError(f"class_weight must be a dict, 'balanced' or None, got {cw!r}")
        if not isinstance(cw, (str, dict)):
            raise ValueError(f"class_weight must be a dict, 'balanced' or None, got {cw!r}")
        if incremental and cw == "balanced":
            raise ValueError("class_weight='balanced' is not supported by partial_fit (the "
                             "class frequencies of later batches are unknown); pass a dict")
        if isinstance(cw, dict):
            unknown = [k for k in cw if not np.isin(k, self.classes_)]
            if unknown:
                raise ValueError(f"class_weight has labels {unknown} that are not classes "
                                 f"{self.classes_.tolist()}")
            for k, v in cw.items():
                _check_float(f"class_weight[{k!r}]", v, 0)
        cw_samples = compute_sample_weight(cw, y)
        return cw_samples if w is None else w * cw_samples

    def partial_fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None,
                    classes: ArrayLike | None = None) -> HetNetClassifier:
        """One epoch over ``(X, y)`` from the current weights (the first call
        initialises them and needs ``classes``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or images
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), optional
        classes : array-like, optional
            Every class label that will ever appear; required on the first call.

        Returns
        -------
        self
        """
        if not hasattr(self, "model_") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit "
                             "(every label that will ever appear)")
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float32]:
        """Class probabilities, ``(n_samples, n_classes)``, columns in ``classes_`` order."""
        X = self._check_predict_X(X)
        z = self._logits(X)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return p

    def predict_log_proba(self, X: ArrayLike) -> NDArray[np.floating[Any]]:
        """Logarithm of :meth:`predict_proba`."""
        X = self._check_predict_X(X)
        z = self._logits(X)
        z -= z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """Most probable class label per sample, ``(n_samples,)``."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def _score_targets(self, model, X, targets, weights):
        return float(accuracy_score(targets, model.predict(X), sample_weight=weights))


# ---------------------------------------------------------- the regressor


__all__ = ["HetNetClassifier"]
