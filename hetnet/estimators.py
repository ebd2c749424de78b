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

import copy
import json
import math
import os
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .callbacks import EarlyStopping, ProgressBar
from .devices import Device, get_device
from .layers import LAYERS, Conv2D, Flatten, Layer, MaxPool2D, ReLU, Sigmoid, Tanh
from .model import History, Sequential
from .models import lenet5_layers, mlp_layers
from .optim import NAMES, OPTIMIZERS, Adam, AdamW, Optimizer, RMSProp, SGD

__all__ = ["HetNetClassifier", "HetNetRegressor", "DeviceFallbackWarning", "load_estimator"]

#: file format tag; an estimator file is also a ``hetnet-model/1`` model file
MODEL_FORMAT = "hetnet-model/1"
ESTIMATOR_FORMAT = "hetnet-estimator/1"

_ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "logistic": Sigmoid, "sigmoid": Sigmoid}
_DEVICE_HINT = "'auto', 'cpu', 'gpu', 'opencl', 'opencl:P:D' or 'numpy'"


class DeviceFallbackWarning(UserWarning):
    """An unpickled or loaded estimator's device is missing here; it runs on the CPU."""


# ----------------------------------------------------------------- checks
def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_float(name, value, low, high=math.inf, low_open=False, high_open=True):
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if isinstance(value, bool) or not (
            (v > low if low_open else v >= low) and (v < high if high_open else v <= high)):
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be a number in {lo}{low}, {high}{hi}, got {value!r}")
    return v


def _check_sample_weight(sample_weight, n_samples):
    """float64 ``(n,)`` weights, or None."""
    if sample_weight is None:
        return None
    if np.isscalar(sample_weight):
        sample_weight = np.full(n_samples, sample_weight)
    try:
        w = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("sample_weight must be numbers, one per sample") from None
    if w.shape != (n_samples,):
        raise ValueError(f"sample_weight must have shape ({n_samples},), got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("sample_weight must be finite and non-negative")
    return w


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
    """A Device from the estimator's ``device`` and ``n_threads`` parameters."""
    if not isinstance(spec, str):
        raise ValueError(f"device must be one of {_DEVICE_HINT}, got {spec!r}")
    key = spec.strip().lower()
    if n_threads is None:
        # 'auto' is the model's placement policy (the scheduler), not one device
        return "auto" if key == "auto" else get_device(key)
    n = _check_int("n_threads", n_threads, 1)
    if key not in ("cpu", "auto"):
        raise ValueError(f"n_threads sets the CPU's thread count; it does not apply to "
                         f"device={spec!r} (use device='cpu' or leave n_threads=None)")
    return _cpu_device(n)


_CPU_DEVICES = {}


def _cpu_device(num_threads):
    if num_threads not in _CPU_DEVICES:
        from .devices.cpu import CPUDevice
        _CPU_DEVICES[num_threads] = CPUDevice(num_threads=num_threads)
    return _CPU_DEVICES[num_threads]


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
class _BaseHetNet(BaseEstimator):
    """What the classifier and the regressor share: input checks, the
    network, the training loop around :meth:`Sequential.fit`, persistence."""

    _loss = None   # "cross_entropy" or "mse"

    def __init__(self, architecture="mlp", *, hidden_layer_sizes=(100,), activation="relu",
                 input_shape=None, optimizer="adam", learning_rate_init=0.001, momentum=0.9,
                 alpha=0.0001, batch_size="auto", max_iter=200, shuffle=True, tol=1e-4,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 warm_start=False, random_state=None, device="auto", n_threads=None,
                 callbacks=None, verbose=0):
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
        if isinstance(opt, Optimizer):
            opt = copy.copy(opt)   # the parameter keeps no training state
            opt.reset()
            return opt
        if not isinstance(opt, str) or opt.lower() not in NAMES:
            raise ValueError(f"optimizer must be one of {sorted(NAMES)} or a hetnet Optimizer, "
                             f"got {opt!r}")
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
        optimizer = None if incremental and self.model_.optimizer is not None \
            else self._make_optimizer(min(batch_size, n) * mean_weight)
        try:
            history = self.model_.fit(X, targets, epochs=epochs, batch_size=batch_size,
                                      optimizer=optimizer, shuffle=bool(self.shuffle),
                                      sample_weight=w, callbacks=callbacks,
                                      check_input=False)   # validate_data scanned X
        except FloatingPointError as exc:
            raise FloatingPointError(f"{type(self).__name__}: {exc} (learning_rate_init="
                                     f"{self.learning_rate_init})") from None
        self._record(history, n)
        if (not incremental and history.epochs == self.max_iter
                and stopper is not None and stopper.stopped_epoch is None):
            what = "validation score" if self.early_stopping else "training loss"
            warnings.warn(f"{type(self).__name__}: max_iter={self.max_iter} epochs reached and the "
                          f"{what} was still improving by more than tol={self.tol}",
                          ConvergenceWarning)
        return self

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

    def fit(self, X, y, sample_weight=None):
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
    def save(self, path):
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
        from . import __version__
        check_is_fitted(self)
        config = self.model_.get_config()
        attributes = {k: _json_value(getattr(self, k)) for k in _JSON_ATTRIBUTES
                      if hasattr(self, k)}
        attributes["history_"] = _json_value(dict(self.history_))
        config.update(format=MODEL_FORMAT, hetnet_version=__version__,
                      estimator={"format": ESTIMATOR_FORMAT, "class": type(self).__name__,
                                 "params": _params_to_json(self), "attributes": attributes})
        arrays = {f"w{i:04d}": w for i, w in enumerate(self.model_.get_weights())}
        if hasattr(self, "classes_"):
            arrays["classes"] = _label_array(self.classes_, "classes_")
        if hasattr(self, "feature_names_in_"):
            arrays["feature_names_in"] = _label_array(self.feature_names_in_, "feature names")
        arrays["config"] = np.array(json.dumps(config))
        path = os.fspath(path)
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path, device=None):
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
    optimizer : {"adam", "sgd", "nag", "rmsprop", "adamw"} or hetnet Optimizer, default "adam"
        ``"nag"`` is SGD with Nesterov momentum; ``"adamw"`` applies ``alpha``
        as AdamW's decoupled decay (``w *= 1 - lr alpha`` a step) instead of
        an L2 penalty.  An ``Optimizer`` instance is copied and used as it is
        (``learning_rate_init``, ``momentum`` and ``alpha`` then do not apply).
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

    def __init__(self, architecture="mlp", *, hidden_layer_sizes=(100,), activation="relu",
                 input_shape=None, optimizer="adam", learning_rate_init=0.001, momentum=0.9,
                 alpha=0.0001, batch_size="auto", max_iter=200, shuffle=True, tol=1e-4,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 class_weight=None, warm_start=False, random_state=None, device="auto",
                 n_threads=None, callbacks=None, verbose=0):
        super().__init__(
            architecture=architecture, hidden_layer_sizes=hidden_layer_sizes,
            activation=activation, input_shape=input_shape, optimizer=optimizer,
            learning_rate_init=learning_rate_init, momentum=momentum, alpha=alpha,
            batch_size=batch_size, max_iter=max_iter, shuffle=shuffle, tol=tol,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change, warm_start=warm_start,
            random_state=random_state, device=device, n_threads=n_threads,
            callbacks=callbacks, verbose=verbose)
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

    def partial_fit(self, X, y, sample_weight=None, classes=None):
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

    def predict_proba(self, X):
        """Class probabilities, ``(n_samples, n_classes)``, columns in ``classes_`` order."""
        X = self._check_predict_X(X)
        z = self._logits(X)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return p

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        X = self._check_predict_X(X)
        z = self._logits(X)
        z -= z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def predict(self, X):
        """Most probable class label per sample, ``(n_samples,)``."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def _score_targets(self, model, X, targets, weights):
        return float(accuracy_score(targets, model.predict(X), sample_weight=weights))


# ---------------------------------------------------------- the regressor
class HetNetRegressor(RegressorMixin, _BaseHetNet):
    """A hetnet network as a scikit-learn regressor (mean squared error).

    Takes the parameters of :class:`HetNetClassifier` except ``class_weight``;
    ``y`` may have several columns (one network output each).  With
    ``early_stopping`` the validation score is R^2.  Targets are used as
    given: scale them (e.g. ``TransformedTargetRegressor`` with a
    ``StandardScaler``) when they are far from unit size.

    Attributes
    ----------
    n_outputs_ : int
        Target columns.
    (the others as for :class:`HetNetClassifier`, without ``classes_``)
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

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``(X, y)`` from the current weights (the first call
        initialises them).

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predicted targets: ``(n_samples,)`` for one output, else
        ``(n_samples, n_outputs)``; float64."""
        X = self._check_predict_X(X)
        out = self._logits(X)
        return out[:, 0] if out.shape[1] == 1 else out

    def _score_targets(self, model, X, targets, weights):
        pred = model.predict_logits(X).astype(np.float64)
        return float(r2_score(targets, pred, sample_weight=weights))


_ESTIMATORS = {"HetNetClassifier": HetNetClassifier, "HetNetRegressor": HetNetRegressor}


def load_estimator(path, device=None):
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
    from .io import load as load_model, open_npz
    path = os.fspath(path)
    data = open_npz(path, "estimator")
    with data:
        try:
            config = json.loads(str(data["config"]))
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
    est = cls(**_params_from_json(spec["params"]))
    if isinstance(device, Device):
        dev = device
    elif device is not None:
        est.device = device
        dev = _resolve_device(device, est.n_threads)
    else:
        dev = _restore_device(est)
    est.model_ = load_model(path, device=dev)
    attributes = dict(spec["attributes"])
    history = History()
    history.update(attributes.pop("history_", {}))
    for key, value in attributes.items():
        setattr(est, key, tuple(value) if key == "input_shape_" else value)
    est.history_ = history
    est.device_ = dev if isinstance(dev, str) else dev.name
    if classes is not None:
        est.classes_ = classes
    if names is not None:
        est.feature_names_in_ = names.astype(object)
    return est
