"""Input checks at the public API: errors name the value and what was expected."""

import math

import numpy as np


_FINITE_BLOCK = 1 << 16


def all_finite(a):
    """Whether every value of the float array ``a`` is finite: the scan
    ``np.isfinite(a).all()`` makes, a block of 64k values at a time into one
    small buffer.  The whole-array form allocates a temporary of a.size
    bytes (31 MB for 40k LeNet-5 images) at every fit and predict, whose
    cost depends on whether the allocator hands back memory already mapped
    (several times the scan's own time at a process's first call); the block
    scan costs the same every time (docs/performance.md, "Input check")."""
    flat = a.reshape(-1)
    buf = np.empty(min(flat.size, _FINITE_BLOCK), dtype=bool)
    for start in range(0, flat.size, _FINITE_BLOCK):
        block = flat[start:start + _FINITE_BLOCK]
        ok = buf[:block.size]
        np.isfinite(block, out=ok)
        if not ok.all():
            return False
    return True


def check_X(X, input_shape=None, name="X", check_finite=True):
    """Validate inputs; returns a float32, C-contiguous array of shape
    ``(n, *input_shape)``.

    uint8 input is taken for 8-bit image intensities and scaled to [0, 1]
    (``X / 255``), as the command line and the data set loaders scale
    them, in every entry point (fit, predict, evaluate), so that a model
    trained on uint8 images predicts on uint8 images.  Pass float data to
    keep raw values.

    A 2-D ``(n, prod(input_shape))`` array is reshaped to ``input_shape``
    (scikit-learn passes images flattened).  ``check_finite=False`` skips the
    scan for NaN and infinity (a pass over all of X), for callers that have
    made it already.
    """
    try:
        X = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} could not be read as an array: {exc}") from None
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold numbers, got dtype {X.dtype}")
    if X.dtype == np.uint8:
        X = X.astype(np.float32) / 255.0
    if X.ndim < 2:
        raise ValueError(f"{name} must be at least 2-D (n_samples, features...), got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {X.shape} (need at least one sample)")
    if 0 in X.shape[1:]:
        raise ValueError(f"{name} has a zero-length feature axis: shape {X.shape}")
    if input_shape is not None:
        input_shape = tuple(input_shape)
        if X.shape[1:] != input_shape:
            if X.ndim == 2 and X.shape[1] == int(np.prod(input_shape)):
                X = X.reshape((X.shape[0],) + input_shape)
            else:
                raise ValueError(f"{name} has per-sample shape {X.shape[1:]}, but the model "
                                 f"takes {input_shape} (or flattened, {int(np.prod(input_shape))})")
    X_in = X
    with np.errstate(over="ignore"):
        X = np.ascontiguousarray(X, dtype=np.float32)
    if check_finite and not all_finite(X):
        bad = int(X.size - np.isfinite(X).sum())
        if X_in.dtype.kind == "f" and X_in.dtype.itemsize > 4 and all_finite(X_in):
            peak = float(np.max(np.abs(X_in)))
            raise ValueError(f"{name} holds values beyond float32's range (|x| up to {peak:.3g}; "
                             f"{bad} overflow to infinity); hetnet computes in float32: scale "
                             "the data")
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    return X


def check_targets(y, n_samples, loss, n_outputs, name="y"):
    """Validate targets for ``loss``; returns int32 class indices for
    cross-entropy, float32 ``(n, n_outputs)`` otherwise."""
    y = np.asarray(y)
    if y.shape[:1] != (n_samples,):
        raise ValueError(f"{name} has {y.shape[0] if y.ndim else 0} entries but X has "
                         f"{n_samples} samples")
    if y.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold numbers, got dtype {y.dtype}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if loss == "cross_entropy":
        if y.ndim == 2:
            if y.shape[1] != n_outputs:
                raise ValueError(f"one-hot {name} has {y.shape[1]} columns, the model has "
                                 f"{n_outputs} outputs")
            if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
                raise ValueError(f"2-D {name} must be one-hot (0/1, one 1 per row)")
            return np.ascontiguousarray(y.argmax(axis=1), dtype=np.int32)
        if y.ndim != 1:
            raise ValueError(f"{name} must be class indices (n,) or one-hot (n, k), got shape {y.shape}")
        if y.dtype.kind == "f" and (y != np.round(y)).any():
            raise ValueError(f"{name} holds non-integer class labels; use indices 0..{n_outputs - 1}")
        lo, hi = y.min(), y.max()
        if lo < 0 or hi >= n_outputs:
            raise ValueError(f"{name} has labels in [{lo}, {hi}], but the model has {n_outputs} "
                             f"classes (labels must be 0..{n_outputs - 1})")
        return np.ascontiguousarray(y, dtype=np.int32)
    if y.ndim == 1:
        y = y.reshape(-1, 1)
    if y.ndim != 2 or y.shape[1] != n_outputs:
        raise ValueError(f"{name} must have shape (n, {n_outputs}) for this model, got {y.shape}")
    if loss == "binary_cross_entropy" and ((y < 0) | (y > 1)).any():
        raise ValueError(f"binary cross-entropy targets must lie in [0, 1]; {name} has values "
                         f"in [{y.min()}, {y.max()}]")
    return np.ascontiguousarray(y, dtype=np.float32)


def check_sample_weight(sample_weight, n_samples, dtype=np.float32, allow_scalar=False):
    """``(n_samples,)`` finite, non-negative weights as ``dtype``, or None;
    with ``allow_scalar`` a number stands for that weight on every sample."""
    if sample_weight is None:
        return None
    if allow_scalar and np.isscalar(sample_weight):
        sample_weight = np.full(n_samples, sample_weight)
    try:
        w = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("sample_weight must be numbers, one per sample") from None
    if w.shape != (n_samples,):
        raise ValueError(f"sample_weight must have shape ({n_samples},), got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("sample_weight must be finite and non-negative")
    return np.ascontiguousarray(w, dtype=dtype)


def check_float(name, value, low, high=math.inf, low_open=False, high_open=True):
    """``value`` as a float in the interval from ``low`` to ``high`` (each
    end open or closed as given), else a ValueError naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if isinstance(value, bool) or not (
            (v > low if low_open else v >= low) and (v < high if high_open else v <= high)):
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be a number in {lo}{low}, {high}{hi}, got {value!r}")
    return v


def check_positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_input_shape(input_shape, name="input_shape"):
    """A per-sample shape as a tuple of positive ints; a float such as 4.7,
    a bool, a zero or a negative size is refused (``int()`` would truncate)."""
    try:
        dims = tuple(input_shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of positive ints, got {input_shape!r}") from None
    if not dims:
        raise ValueError(f"{name} must have at least one dimension, got {input_shape!r}")
    out = []
    for d in dims:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) or d < 1:
            raise ValueError(f"{name} must be a tuple of positive ints, got {input_shape!r} "
                             f"(entry {d!r})")
        out.append(int(d))
    return tuple(out)


def check_weight_list(weights, current, name="weights"):
    """Every array of ``weights`` checked against ``current`` (the model's
    arrays now, for their count and shapes) before any is used: numbers,
    the same shape, finite.  Returns float32 copies, in order."""
    if weights is None or isinstance(weights, (str, bytes, np.ndarray)):
        raise TypeError(f"{name} must be a list of arrays, as get_weights() returns, got "
                        f"{type(weights).__name__}")
    try:
        weights = list(weights)
    except TypeError:
        raise TypeError(f"{name} must be a list of arrays, got {type(weights).__name__}") from None
    if len(weights) != len(current):
        raise ValueError(f"set_weights needs {len(current)} arrays, got {len(weights)}")
    out = []
    for i, (w, ref) in enumerate(zip(weights, current)):
        if w is None:
            raise TypeError(f"{name}[{i}] is None; expected an array of shape {ref.shape}")
        try:
            a = np.asarray(w)
        except Exception as exc:
            raise ValueError(f"{name}[{i}] could not be read as an array: {exc}") from None
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{name}[{i}] must hold numbers, got dtype {a.dtype}")
        if a.shape != ref.shape:
            raise ValueError(f"{name}[{i}]: expected shape {ref.shape}, got {a.shape}")
        a = np.array(a, dtype=np.float32)
        if not all_finite(a):
            raise ValueError(f"{name}[{i}] (shape {ref.shape}) contains NaN or infinite values")
        out.append(a)
    return out


def check_size(what, value):
    """A layer size (features, channels): a positive whole number (an int,
    or a float such as 4.0 that is one); NaN, infinity, 4.5, a bool or a
    string is refused with a ValueError naming ``what``."""
    ok = False
    if not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        ok = math.isfinite(value) and value == int(value) and value >= 1
    if not ok:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return int(value)
