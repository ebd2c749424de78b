"""scikit-learn estimators: :class:`HetNetClassifier` and :class:`HetNetRegressor`.

They follow scikit-learn's conventions (``__init__`` only stores parameters,
validation happens in ``fit``, learned attributes end in ``_``) and the
parameter names of :class:`sklearn.neural_network.MLPClassifier` where the
two overlap, so either can stand in for the other in a ``Pipeline``,
``GridSearchCV`` or ``cross_val_score``.  The network itself is a
:class:`hetnet.Sequential`, kept in ``model_``.

Inputs
------
``X`` is ``(n_samples, n_features)``, which is what scikit-learn passes
around, or images ``(n, H, W)`` (one channel) / ``(n, C, H, W)``.  Flat rows
are reshaped to ``input_shape`` for convolutional architectures; without
``input_shape`` a square one-channel image is assumed (784 features ->
``(1, 28, 28)``).

Persistence
-----------
A fitted estimator pickles with its weights as numpy arrays and its device as
the *name* it was given (never a device handle), so a model trained on a GPU
unpickles on a machine without one: when the recorded device is not
available the model is rebuilt on the CPU with a :class:`DeviceFallbackWarning`
(the one place hetnet runs somewhere other than where it was asked to).
:meth:`save` writes plain arrays + JSON that :func:`load_estimator` reads
back without executing anything; the same file is also a model file that
:func:`hetnet.load` reads as a :class:`~hetnet.Sequential`.

This module needs scikit-learn (``pip install 'hetnet[sklearn]'``).
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .._validation import check_float as _check_float, check_positive_int, check_sample_weight
from ..callbacks import Callback, EarlyStopping, ProgressBar
from ..devices import Device, get_device, resolve
from ..layers import LAYERS, Conv2D, Flatten, Layer, MaxPool2D, ReLU, Sigmoid, Tanh
from ..model import History, Sequential, io, load as load_model
from ..model.zoo import lenet5_layers, mlp_layers
from ..metaheuristics import BY_NAME as METAHEURISTICS, Metaheuristic
from ..optim import NAMES, OPTIMIZERS, Adam, AdamW, Optimizer, RMSProp, SGD

__all__ = ["DeviceFallbackWarning", "load_estimator"]

#: the estimator entry's tag; an estimator file is also a model file
#: (:mod:`hetnet.model.io`), which :func:`hetnet.load` reads
ESTIMATOR_FORMAT = "hetnet-estimator/1"

_ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "logistic": Sigmoid, "sigmoid": Sigmoid}
_DEVICE_HINT = "'auto', 'cpu', 'gpu', 'opencl', 'opencl:P:D' or 'numpy'"


class DeviceFallbackWarning(UserWarning):
    """An unpickled or loaded estimator's device is missing here; it runs on the CPU."""


# ----------------------------------------------------------------- checks
def _check_int(name, value, minimum):
    return check_positive_int(name, value, minimum)


def _check_sample_weight(sample_weight, n_samples):
    """float64 ``(n,)`` weights (a number: the same for every sample), or None."""
    return check_sample_weight(sample_weight, n_samples, dtype=np.float64, allow_scalar=True)


def _normalize_weights(w):
    """Weights scaled to mean 1 (None when all are equal: the unweighted fast
    path), and their mean before scaling.

    ``Sequential`` divides a batch's weighted loss by the batch size, so
    weights of mean 1 make each batch an unbiased estimate of
    ``sum(w_i l_i) / sum(w_i)``: fitting with integer weights then matches
    fitting on repeated samples, and the weights' scale is no learning-rate
    factor."""
    if w is None:
        return None, 1.0
    total = w.sum()
    if not total > 0:
        raise ValueError("sample weights (sample_weight times class_weight) sum to zero: "
                         "no sample is left to learn from")
    mean = total / len(w)
    if np.all(w == w[0]):
        return None, mean
    return w / mean, mean


def _resolve_device(spec, n_threads):
    """A Device (or ``"auto"``, the model's placement policy) from the
    estimator's ``device`` and ``n_threads`` parameters (:func:`hetnet.devices.resolve`)."""
    if not isinstance(spec, str):
        raise ValueError(f"device must be one of {_DEVICE_HINT}, got {spec!r}")
    return resolve(spec, n_threads, allow_auto=True, threads_param="n_threads")


def _restore_device(est):
    """The estimator's device, or the CPU (with a warning) where that device is
    missing on this machine: used only when unpickling or loading."""
    try:
        return _resolve_device(est.device, est.n_threads)
    except (ImportError, RuntimeError, ValueError, OSError) as exc:
        warnings.warn(f"{type(est).__name__} was fitted on device={est.device!r}, which is not "
                      f"available here ({exc}); its model runs on the CPU instead",
                      DeviceFallbackWarning, stacklevel=3)
        return get_device("cpu")


# ------------------------------------------------------------ architecture
def _layer_from_spec(spec, i):
    """A fresh, unbuilt layer from a Layer, ``{"class": name, "config": {...}}``
    (or ``{"class": name, **kwargs}``) or a layer name (``"relu"``)."""
    if isinstance(spec, Layer):
        cls = type(spec)
        if LAYERS.get(cls.__name__) is cls:
            return cls(**spec.get_config())   # never train the parameter object itself
        if spec.device is not None:
            raise ValueError(f"architecture[{i}] ({spec!r}) is already built; pass an unbuilt layer")
        return copy.deepcopy(spec)
    if isinstance(spec, str):
        by_lower = {name.lower(): cls for name, cls in LAYERS.items()}
        cls = by_lower.get(spec.lower())
        if cls is None:
            raise ValueError(f"architecture[{i}]: unknown layer {spec!r}; expected one of "
                             f"{sorted(LAYERS)}")
        return cls()
    if isinstance(spec, dict):
        cls = LAYERS.get(spec.get("class"))
        if cls is None:
            raise ValueError(f"architecture[{i}]: unknown layer class {spec.get('class')!r}; "
                             f"expected one of {sorted(LAYERS)}")
        kwargs = spec["config"] if "config" in spec else {k: v for k, v in spec.items()
                                                          if k != "class"}
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ValueError(f"architecture[{i}]: {exc}") from None
    raise ValueError(f"architecture[{i}] must be a hetnet Layer, a dict with a 'class' key or "
                     f"a layer name, got {spec!r}")


def _mlp_architecture(est, input_shape, n_outputs):
    sizes = est.hidden_layer_sizes
    if np.isscalar(sizes):
        sizes = (sizes,)
    try:
        sizes = [_check_int("hidden_layer_sizes entries", s, 1) for s in sizes]
    except TypeError:
        raise ValueError(f"hidden_layer_sizes must be a sequence of positive ints, got "
                         f"{est.hidden_layer_sizes!r}") from None
    act = _ACTIVATIONS.get(est.activation)
    if act is None:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {est.activation!r}")
    layers = mlp_layers([int(np.prod(input_shape))] + sizes + [n_outputs], act)
    return ([Flatten()] if len(input_shape) > 1 else []) + layers


def _lenet5_architecture(est, input_shape, n_outputs):
    if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
        raise ValueError(f"architecture='lenet5' takes square images (C, H, H); the input shape "
                         f"is {input_shape} (set input_shape=(C, H, W))")
    return lenet5_layers(input_shape[0], n_outputs, input_shape[1])


#: architecture name -> builder(estimator, per-sample input shape, n_outputs) -> layers
ARCHITECTURES = {"mlp": _mlp_architecture, "lenet5": _lenet5_architecture}


def _architecture_layers(est, input_shape, n_outputs):
    arch = est.architecture
    if isinstance(arch, str):
        builder = ARCHITECTURES.get(arch)
        if builder is None:
            raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)} or a list of "
                             f"layers, got {arch!r}")
        return builder(est, input_shape, n_outputs)
    if isinstance(arch, (list, tuple)) and len(arch) > 0:
        if all(isinstance(a, (int, np.integer)) for a in arch):
            raise ValueError(f"architecture={arch!r} is a list of sizes; for an MLP pass "
                             f"hidden_layer_sizes={tuple(arch)!r} (parameters after architecture "
                             "are keyword-only)")
        return [_layer_from_spec(spec, i) for i, spec in enumerate(arch)]
    raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)} or a non-empty list "
                     f"of layers, got {arch!r}")


def _wants_images(est):
    """The channel count the first layer needs, or None for flat input."""
    arch = est.architecture
    if isinstance(arch, str):
        return 1 if arch == "lenet5" else None
    if isinstance(arch, (list, tuple)) and arch and isinstance(arch[0], (Layer, str, dict)):
        first = _layer_from_spec(arch[0], 0)
        if isinstance(first, Conv2D):
            return first.in_channels
        if isinstance(first, MaxPool2D):
            return 1
    return None


def _square_image_shape(n_features, channels):
    side = math.isqrt(n_features // channels) if n_features % channels == 0 else 0
    if side * side * channels != n_features:
        return None
    return (channels, side, side)


# ------------------------------------------------------------ persistence
def _export_model(model):
    """What a pickle carries of a Sequential: its layer classes (by reference),
    configuration and weights as numpy; no device, no optimiser state."""
    return {"config": model.get_config(), "classes": [type(layer) for layer in model.layers],
            "weights": model.get_weights()}


def _import_model(payload, device):
    config = payload["config"]
    layers = [cls(**spec["config"]) for cls, spec in zip(payload["classes"], config["layers"])]
    model = Sequential(layers, loss=config["loss"], device=device, seed=config.get("seed"),
                       input_shape=config["input_shape"])
    model.set_weights(payload["weights"])
    return model


def _label_array(values, what):
    """``values`` as an array ``np.save`` can write without pickle."""
    a = np.asarray(values)
    if a.dtype.kind in "biufUS":
        return a
    items = a.tolist()
    if all(isinstance(v, str) for v in items):
        return np.array(items, dtype=str)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
        return np.array(items, dtype=np.int64)
    raise ValueError(f"cannot save {what} of mixed or non-scalar types ({a.dtype}): {items[:5]}")


def _json_value(value):
    """Parameters and attributes as JSON (numpy scalars and tuples converted)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value


def _params_to_json(est):
    """``get_params()`` as JSON.  Callbacks are code, so they are not saved;
    a RandomState instance is saved as None."""
    out = {}
    for name, value in est.get_params(deep=False).items():
        if name == "callbacks":
            value = None
        elif name == "random_state" and not (value is None or isinstance(value, (int, np.integer))):
            value = None
        elif name == "architecture" and not isinstance(value, str):
            value = [_spec_to_json(spec, i) for i, spec in enumerate(value)]
        elif name == "optimizer" and isinstance(value, Optimizer):
            value = {"optimizer": value.get_config()}
        elif name == "class_weight" and isinstance(value, dict):
            value = {"items": [[_json_value(k), _json_value(v)] for k, v in value.items()]}
        out[name] = _json_value(value)
    return out


def _spec_to_json(spec, i):
    if isinstance(spec, Layer):
        if LAYERS.get(type(spec).__name__) is not type(spec):
            raise ValueError(f"cannot save architecture[{i}]: {type(spec).__name__} is not a "
                             "built-in hetnet layer")
        return {"class": type(spec).__name__, "config": spec.get_config()}
    return spec


def _params_from_json(params):
    params = dict(params)
    for name in ("hidden_layer_sizes", "input_shape"):
        if isinstance(params.get(name), list):
            params[name] = tuple(params[name])
    opt = params.get("optimizer")
    if isinstance(opt, dict):
        cfg = dict(opt["optimizer"])
        cls = OPTIMIZERS.get(cfg.pop("name", None))
        if cls is None:
            raise ValueError(f"unknown optimizer in file: {opt!r}")
        params["optimizer"] = cls(**cfg)
    cw = params.get("class_weight")
    if isinstance(cw, dict):
        params["class_weight"] = {k: v for k, v in cw["items"]}
    return params


#: learned attributes saved as JSON (arrays go in their own entries)
_JSON_ATTRIBUTES = ("n_features_in_", "input_shape_", "n_outputs_", "n_iter_", "t_",
                    "loss_curve_", "validation_scores_", "best_loss_",
                    "best_validation_score_", "_y_ndim")


# --------------------------------------------------------------- the base
#: estimator class name -> class, for :func:`load_estimator` (each public
#: subclass of :class:`_BaseHetNet` enters itself)
_ESTIMATORS = {}


_E = TypeVar("_E", bound="_BaseHetNet")


class _BaseHetNet(BaseEstimator):
    """What the classifier and the regressor share: input checks, the
    network, the training loop around :meth:`Sequential.fit`, persistence."""

    _loss = None   # "cross_entropy" or "mse"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            _ESTIMATORS[cls.__name__] = cls

    def __init__(self, architecture: str | Sequence[Layer | dict[str, Any] | str] = "mlp", *,
                 hidden_layer_sizes: Sequence[int] = (100,), activation: str = "relu",
                 input_shape: Sequence[int] | None = None,
                 optimizer: str | Optimizer | Metaheuristic = "adam",
                 learning_rate_init: float = 0.001, momentum: float = 0.9, alpha: float = 0.0001,
                 batch_size: int | str = "auto", max_iter: int = 200, shuffle: bool = True,
                 tol: float = 1e-4, early_stopping: bool = False,
                 validation_fraction: float = 0.1, n_iter_no_change: int = 10,
                 warm_start: bool = False,
                 random_state: int | np.random.RandomState | None = None,
                 device: str | Device = "auto", n_threads: int | None = None,
                 callbacks: Sequence[Callback] | None = None, verbose: int = 0,
                 max_evals: int = 4200) -> None:
        self.max_evals = max_evals
        self.architecture = architecture
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.input_shape = input_shape
        self.optimizer = optimizer
        self.learning_rate_init = learning_rate_init
        self.momentum = momentum
        self.alpha = alpha
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.callbacks = callbacks
        self.verbose = verbose

    # ---------------------------------------------------------- inputs
    def _validate_X(self, X, y="no_validation", reset=True):
        """Validated float32 ``(n, n_features)`` X (and y); images are
        flattened first, their per-sample shape returned beside."""
        image_shape = None
        shape = getattr(X, "shape", None)
        if shape is None and isinstance(X, (list, tuple)):
            X = np.asarray(X)
            shape = X.shape
        if shape is not None and len(shape) > 2:
            X = np.asarray(X)
            image_shape = X.shape[1:] if X.ndim == 4 else (1,) + X.shape[1:]
            if X.ndim > 4:
                raise ValueError(f"X must be (n, features), (n, H, W) or (n, C, H, W), got "
                                 f"shape {X.shape}")
            X = X.reshape(X.shape[0], -1)
        if isinstance(y, str) and y == "no_validation":
            X = validate_data(self, X, reset=reset, dtype=np.float32)
        else:
            X, y = validate_data(self, X, y, reset=reset, dtype=np.float32,
                                 multi_output=not is_classifier(self),
                                 y_numeric=not is_classifier(self))
        if image_shape is not None and not reset and hasattr(self, "input_shape_"):
            if tuple(image_shape) != tuple(self.input_shape_) and len(self.input_shape_) > 1:
                raise ValueError(f"X has images of shape {tuple(image_shape)}, but "
                                 f"{type(self).__name__} was fitted on {tuple(self.input_shape_)}")
        return X, y, image_shape

    def _resolve_input_shape(self, n_features, image_shape):
        shape = self.input_shape
        if shape is not None:
            try:
                shape = tuple(_check_int("input_shape entries", s, 1) for s in shape)
            except TypeError:
                raise ValueError(f"input_shape must be a tuple of positive ints such as "
                                 f"(1, 28, 28), got {self.input_shape!r}") from None
            if int(np.prod(shape)) != n_features:
                raise ValueError(f"input_shape={shape} holds {int(np.prod(shape))} values, but X "
                                 f"has {n_features} features per sample")
            if image_shape is not None and tuple(image_shape) != shape and len(shape) > 1:
                raise ValueError(f"X has images of shape {tuple(image_shape)}, but "
                                 f"input_shape={shape}")
            return shape
        if image_shape is not None:
            return tuple(int(s) for s in image_shape)
        channels = _wants_images(self)
        if channels is None:
            return (n_features,)
        shape = _square_image_shape(n_features, channels)
        if shape is None:
            raise ValueError(f"this architecture takes images, and {n_features} features are not "
                             f"{channels} square channel(s); pass input_shape=(C, H, W) or 4-D X")
        return shape

    # ------------------------------------------------------- the network
    def _build_model(self, input_shape, n_outputs, seed, device):
        layers = _architecture_layers(self, input_shape, n_outputs)
        try:
            model = Sequential(layers, loss=self._loss, device=device, seed=seed,
                               input_shape=input_shape)
        except ValueError as exc:
            raise ValueError(f"architecture {self._describe_architecture()} does not fit the "
                             f"input shape {input_shape}: {exc}") from None
        if model.n_outputs != n_outputs:
            what = "classes in y" if is_classifier(self) else "target columns in y"
            raise ValueError(f"the architecture's last layer has {model.n_outputs} outputs, but "
                             f"there are {n_outputs} {what}")
        return model

    def _describe_architecture(self):
        arch = self.architecture
        return repr(arch) if isinstance(arch, str) else f"with {len(arch)} layers"

    def _make_optimizer(self, batch_weight):
        opt = self.optimizer
        if isinstance(opt, Metaheuristic):
            return copy.deepcopy(opt)   # the parameter keeps no search state
        if isinstance(opt, str) and opt.lower() in METAHEURISTICS:
            cls, hybrid = METAHEURISTICS[opt.lower()]
            gd = None
            if hybrid:
                lr = _check_float("learning_rate_init", self.learning_rate_init, 0,
                                  low_open=True)
                gd = Adam(lr=lr, weight_decay=_check_float("alpha", self.alpha, 0) / batch_weight)
            return cls(pop_size=10, gd=gd)
        if isinstance(opt, Optimizer):
            opt = copy.copy(opt)   # the parameter keeps no training state
            opt.reset()
            return opt
        if not isinstance(opt, str) or opt.lower() not in NAMES:
            raise ValueError(f"optimizer must be one of {sorted(NAMES) + sorted(METAHEURISTICS)}, "
                             f"a hetnet Optimizer or a Metaheuristic, got {opt!r}")
        lr = _check_float("learning_rate_init", self.learning_rate_init, 0, low_open=True)
        alpha = _check_float("alpha", self.alpha, 0)
        # MLPClassifier's penalty 0.5 alpha ||W||^2 / (the batch's total sample
        # weight; its size when unweighted), as a decay
        weight_decay = alpha / batch_weight
        name = opt.lower()
        if name in ("sgd", "nag"):
            momentum = _check_float("momentum", self.momentum, 0, 1,
                                    low_open=name == "nag")
            return SGD(lr=lr, momentum=momentum, weight_decay=weight_decay,
                       nesterov=name == "nag")
        if name == "rmsprop":
            return RMSProp(lr=lr, weight_decay=weight_decay)
        if name == "adamw":   # decoupled: w *= 1 - lr alpha each step
            return AdamW(lr=lr, weight_decay=alpha)
        return Adam(lr=lr, weight_decay=weight_decay)

    def _check_params(self):
        _check_int("max_iter", self.max_iter, 1)
        _check_int("n_iter_no_change", self.n_iter_no_change, 1)
        _check_int("verbose", self.verbose, 0)
        _check_float("tol", self.tol, 0)
        if self.early_stopping:
            _check_float("validation_fraction", self.validation_fraction, 0, 1, low_open=True)
        if not isinstance(self.batch_size, str):
            _check_int("batch_size", self.batch_size, 1)
        elif self.batch_size != "auto":
            raise ValueError(f"batch_size must be 'auto' or an int >= 1, got {self.batch_size!r}")
        if self.callbacks is not None and not isinstance(self.callbacks, (list, tuple)):
            raise ValueError(f"callbacks must be a list of callbacks, got {self.callbacks!r}")

    def _batch_size(self, n_samples):
        return min(200, n_samples) if self.batch_size == "auto" else int(self.batch_size)

    # ------------------------------------------------------------ fitting
    def _fit(self, X, y, sample_weight, incremental, classes=None):
        self._check_params()
        fitted = hasattr(self, "model_")
        reset = not fitted if incremental else not (self.warm_start and fitted)
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        X, y, image_shape = self._validate_X(X, y, reset=reset)
        targets, n_outputs = self._encode_targets(y, reset, classes)
        w = _check_sample_weight(sample_weight, X.shape[0])
        w = self._apply_class_weight(w, y, incremental)
        rng = check_random_state(self.random_state)
        if reset:
            input_shape = self._resolve_input_shape(X.shape[1], image_shape)
            device = _resolve_device(self.device, self.n_threads)
            seed = int(rng.randint(np.iinfo(np.int32).max))
            self.model_ = self._build_model(input_shape, n_outputs, seed, device)
            self.input_shape_ = input_shape
            self.n_outputs_ = n_outputs
            self.device_ = device if isinstance(device, str) else device.name
            self.t_ = 0
            self.loss_curve_ = []
            self.validation_scores_ = [] if self.early_stopping else None
            self.history_ = History()
        if self.early_stopping and self.validation_scores_ is None:
            self.validation_scores_ = []

        validation = None
        if self.early_stopping:
            train, val = self._split(targets, rng)
            validation = (X[val], targets[val], None if w is None else w[val])
            X, targets, w = X[train], targets[train], (None if w is None else w[train])
        w, mean_weight = _normalize_weights(w)
        n = X.shape[0]
        batch_size = self._batch_size(n)
        callbacks, stopper = self._callbacks(n, batch_size, validation, incremental)
        epochs = 1 if incremental else self.max_iter
        evolving = self._is_metaheuristic()
        if evolving and incremental:
            raise ValueError(f"partial_fit does not support optimizer={self.optimizer!r} (a "
                             "metaheuristic searches from a fresh population each fit)")
        optimizer = None if incremental and self.model_.optimizer is not None \
            else self._make_optimizer(min(batch_size, n) * mean_weight)
        extra = {}
        if evolving:   # the budget is max_evals loss evaluations, in 20 epochs
            epochs, extra = None, {"max_evals": _check_int("max_evals", self.max_evals, 1)}
        try:
            history = self.model_.fit(X, targets, epochs=epochs, batch_size=batch_size,
                                      optimizer=optimizer, shuffle=bool(self.shuffle),
                                      sample_weight=w, callbacks=callbacks,
                                      check_input=False, **extra)   # validate_data scanned X
        except FloatingPointError as exc:
            raise FloatingPointError(f"{type(self).__name__}: {exc} (learning_rate_init="
                                     f"{self.learning_rate_init})") from None
        self._record(history, n)
        if evolving:
            self.n_evals_ = history.n_evals
        if (not incremental and not evolving and history.epochs == self.max_iter
                and stopper is not None and stopper.stopped_epoch is None):
            what = "validation score" if self.early_stopping else "training loss"
            warnings.warn(f"{type(self).__name__}: max_iter={self.max_iter} epochs reached and the "
                          f"{what} was still improving by more than tol={self.tol}",
                          ConvergenceWarning)
        return self

    def _is_metaheuristic(self):
        opt = self.optimizer
        return isinstance(opt, Metaheuristic) or (isinstance(opt, str)
                                                  and opt.lower() in METAHEURISTICS)

    def _split(self, targets, rng):
        stratify = targets if is_classifier(self) else None
        idx = np.arange(targets.shape[0])
        try:
            train, val = train_test_split(idx, test_size=self.validation_fraction,
                                          random_state=rng.randint(np.iinfo(np.int32).max),
                                          stratify=stratify)
        except ValueError as exc:
            raise ValueError(f"early_stopping: cannot hold out validation_fraction="
                             f"{self.validation_fraction} of {len(idx)} samples: {exc}") from None
        if len(val) < 2 or len(train) < 1:
            raise ValueError(f"early_stopping: the validation set would hold {len(val)} of "
                             f"{len(idx)} samples; raise validation_fraction or add data")
        return np.sort(train), np.sort(val)

    def _callbacks(self, n, batch_size, validation, incremental):
        callbacks, stopper = [], None
        if validation is not None:
            callbacks.append(_ValidationScore(self, *validation))
            stopper = EarlyStopping("val_score", min_delta=self.tol, mode="max",
                                    patience=self.n_iter_no_change, restore_best_weights=True)
        elif not incremental:
            stopper = EarlyStopping("loss", min_delta=self.tol, mode="min",
                                    patience=self.n_iter_no_change, restore_best_weights=False)
        if stopper is not None:
            callbacks.append(stopper)
        callbacks.extend(self.callbacks or [])
        if self.verbose:
            callbacks.append(ProgressBar(n_samples=n, batch_size=batch_size))
        return callbacks, stopper

    def _record(self, history, n):
        self.n_iter_ = history.epochs
        self.t_ += n * history.epochs
        self.loss_curve_.extend(history["loss"])
        self.best_loss_ = float(min(self.loss_curve_))
        for key, values in history.items():
            if values:
                self.history_.setdefault(key, []).extend(values)
        if self.validation_scores_ is not None:
            self.history_["val_score"] = list(self.validation_scores_)
            self.best_validation_score_ = (float(max(self.validation_scores_))
                                           if self.validation_scores_ else None)
        else:
            self.best_validation_score_ = None

    def fit(self: _E, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> _E:
        """Train the network (from scratch, or on from the last fit with
        ``warm_start=True``) for up to ``max_iter`` epochs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), (n, H, W) or (n, C, H, W)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Class labels (classifier) or targets (regressor).
        sample_weight : array-like of shape (n_samples,), optional
            Each sample's loss is multiplied by its weight.  An integer
            weight fits as that many copies of the sample would; the weights
            are scaled to mean 1 for the gradient steps, so their scale is no
            step size (it only weighs the data against the ``alpha`` penalty,
            as more samples would).

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, incremental=False)

    # --------------------------------------------------------- predicting
    def _check_predict_X(self, X):
        check_is_fitted(self)
        X, _, _ = self._validate_X(X, reset=False)
        return X

    def _logits(self, X):
        return self.model_.predict_logits(X).astype(np.float64)

    # ---------------------------------------------------------- pickling
    def __getstate__(self):
        state = dict(super().__getstate__())
        model = state.pop("model_", None)
        if model is not None:
            state["_model_export"] = _export_model(model)
        return state

    def __setstate__(self, state):
        state = dict(state)
        payload = state.pop("_model_export", None)
        super().__setstate__(state)
        if payload is not None:
            device = _restore_device(self)
            self.model_ = _import_model(payload, device)
            self.device_ = device if isinstance(device, str) else device.name

    # -------------------------------------------------------------- files
    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the fitted estimator to ``path`` (.npz): its parameters,
        learned attributes and the network's configuration as JSON, the
        weights and labels as plain arrays.  Nothing in the file is code
        (``callbacks`` are not saved).  Read it with :func:`load_estimator`,
        or with :func:`hetnet.load` to get the bare :class:`~hetnet.Sequential`.

        Returns
        -------
        str
            The path written.
        """
        check_is_fitted(self)
        config = self.model_.get_config()
        attributes = {k: _json_value(getattr(self, k)) for k in _JSON_ATTRIBUTES
                      if hasattr(self, k)}
        attributes["history_"] = _json_value(dict(self.history_))
        config.update(estimator={"format": ESTIMATOR_FORMAT, "class": type(self).__name__,
                                 "params": _params_to_json(self), "attributes": attributes})
        arrays = {}
        if hasattr(self, "classes_"):
            arrays["classes"] = _label_array(self.classes_, "classes_")
        if hasattr(self, "feature_names_in_"):
            arrays["feature_names_in"] = _label_array(self.feature_names_in_, "feature names")
        return io.write(path, config, self.model_.get_weights(), arrays)

    @classmethod
    def load(cls: type[_E], path: str | os.PathLike[str], device: str | Device | None = None
             ) -> _E:
        """Read an estimator of this class written by :meth:`save`
        (see :func:`load_estimator`)."""
        est = load_estimator(path, device=device)
        if not isinstance(est, cls):
            raise ValueError(f"{os.fspath(path)!r} holds a {type(est).__name__}, not a {cls.__name__}")
        return est


class _ValidationScore:
    """Scores the held-out split after each epoch (accuracy or R^2, as
    ``score``) and puts it in the logs as ``val_score``."""

    def __init__(self, est, X, targets, weights):
        self.est, self.X, self.targets, self.weights = est, X, targets, weights

    def on_epoch_end(self, model, epoch, logs):
        score = self.est._score_targets(model, self.X, self.targets, self.weights)
        self.est.validation_scores_.append(score)
        logs["val_score"] = score
        return False


# --------------------------------------------------------- the classifier


def load_estimator(path: str | os.PathLike[str], device: str | Device | None = None
                   ) -> _BaseHetNet:
    """Read an estimator written by :meth:`HetNetClassifier.save` /
    :meth:`HetNetRegressor.save`.

    Arrays are read with ``allow_pickle=False`` and the configuration is
    JSON, so a file cannot make this run code: a pickle payload is refused.

    Parameters
    ----------
    path : str or path-like
    device : str or Device, optional
        Where the network runs; default the device it was fitted with, or the
        CPU (with a :class:`DeviceFallbackWarning`) when that is missing here.
        A device name given here also becomes the estimator's ``device``
        parameter (a Device instance does not: parameters stay names).

    Returns
    -------
    HetNetClassifier or HetNetRegressor
    """
    path = os.fspath(path)
    data = io.open_npz(path, "estimator")
    with data:
        try:
            config = io.read_config(data, path)
            spec = config["estimator"]
            classes = data["classes"] if "classes" in data.files else None
            names = data["feature_names_in"] if "feature_names_in" in data.files else None
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path!r} is not a hetnet estimator file ({exc!r}); a plain model "
                             "file is read with hetnet.load") from None
    if not isinstance(spec, dict) or spec.get("format") != ESTIMATOR_FORMAT:
        raise ValueError(f"{path!r}: unknown estimator format, expected {ESTIMATOR_FORMAT}")
    cls = _ESTIMATORS.get(spec.get("class"))
    if cls is None:
        raise ValueError(f"{path!r}: unknown estimator class {spec.get('class')!r}")
    attributes, params = spec.get("attributes"), spec.get("params")
    if not isinstance(params, dict) or not isinstance(attributes, dict):
        raise ValueError(f"{path!r}: fields 'estimator.params' and 'estimator.attributes' "
                         "must be dicts")
    # only what save writes: a file must not set arbitrary attributes (predict = "...")
    unknown = sorted(set(attributes) - set(_JSON_ATTRIBUTES) - {"history_"})
    if unknown:
        raise ValueError(f"{path!r}: field 'estimator.attributes' holds unknown entries "
                         f"{unknown}; known: {sorted(_JSON_ATTRIBUTES)}")
    unknown = sorted(set(params) - set(cls._get_param_names()))
    if unknown:
        raise ValueError(f"{path!r}: field 'estimator.params' holds unknown parameters "
                         f"{unknown} for {cls.__name__}")
    try:
        est = cls(**_params_from_json(params))
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{path!r}: field 'estimator.params': {exc}") from None
    if isinstance(device, Device):
        dev = device
    elif device is not None:
        est.device = device
        dev = _resolve_device(device, est.n_threads)
    else:
        dev = _restore_device(est)
    est.model_ = load_model(path, device=dev)
    attributes = dict(attributes)
    if classes is not None and (classes.ndim != 1 or len(classes) != est.model_.n_outputs):
        raise ValueError(f"{path!r}: field 'classes' holds {classes.shape} labels, the network "
                         f"has {est.model_.n_outputs} outputs")
    if "n_outputs_" in attributes and attributes["n_outputs_"] != est.model_.n_outputs:
        raise ValueError(f"{path!r}: field 'estimator.attributes.n_outputs_' is "
                         f"{attributes['n_outputs_']!r}, the network has "
                         f"{est.model_.n_outputs} outputs")
    history = History()
    hist = attributes.pop("history_", {})
    if not isinstance(hist, dict) or not all(isinstance(v, list) for v in hist.values()):
        raise ValueError(f"{path!r}: field 'estimator.attributes.history_' must map names to "
                         "lists")
    history.update(hist)
    for key, value in attributes.items():
        setattr(est, key, tuple(value) if key == "input_shape_" else value)
    est.history_ = history
    est.device_ = dev if isinstance(dev, str) else dev.name
    if classes is not None:
        est.classes_ = classes
    if names is not None:
        est.feature_names_in_ = names.astype(object)
    return est
