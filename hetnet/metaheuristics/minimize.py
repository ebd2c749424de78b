"""``minimize``: the metaheuristics on a plain function."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .base import OptimizeResult, _check_int
from .problem import Problem
from .shade import SHADE
from .shadeils import SHADEILS

_METHODS = {"shade": SHADE, "shade-ils": SHADEILS}


def _as_bounds(bounds):
    """(lower, upper), each (D,), from a (D, 2) array-like or a scipy ``Bounds``."""
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):
        b = np.stack(np.broadcast_arrays(np.asarray(bounds.lb, dtype=np.float64),
                                         np.asarray(bounds.ub, dtype=np.float64)), axis=-1)
    else:
        try:
            b = np.asarray(bounds, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"bounds must be a (D, 2) array of (lower, upper) pairs, "
                             f"got {bounds!r}") from None
    if b.ndim != 2 or b.shape[1] != 2 or b.shape[0] < 1:
        raise ValueError(f"bounds must have shape (D, 2) (one (lower, upper) pair per "
                         f"variable), got shape {b.shape}")
    lower, upper = b[:, 0].copy(), b[:, 1].copy()
    if not (np.isfinite(lower).all() and np.isfinite(upper).all()):
        raise ValueError("bounds must be finite (the population is drawn within them); "
                         "give x0 without bounds for an unbounded problem")
    bad = np.flatnonzero(lower >= upper)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"bounds must have lower < upper; variable {i} has lower="
                         f"{float(lower[i])!r} >= upper={float(upper[i])!r}")
    return lower, upper


def _rowwise(fun):
    """A vectorised wrapper of a scalar ``fun(x) -> float``."""
    def vectorised(pop):
        out = np.empty(len(pop))
        for i, x in enumerate(pop):
            v = np.asarray(fun(x), dtype=np.float64)
            if v.size != 1:
                raise ValueError(f"fun (vectorized=False) must return a scalar, got an array "
                                 f"of shape {v.shape}")
            out[i] = v.reshape(())
        return out
    return vectorised


def minimize(fun: Callable[..., Any], bounds: Any = None, x0: ArrayLike | None = None,
             method: str = "shade", max_evals: int | None = None,
             seed: int | np.random.SeedSequence | None = None, vectorized: bool = True,
             pop_size: int = 10, jac: Callable[[NDArray[np.float64]], ArrayLike] | None = None,
             callback: Callable[[OptimizeResult], Any] | None = None, init_scale: float = 1.0,
             **options: Any) -> OptimizeResult:
    """Minimise ``fun`` with SHADE or SHADE-ILS.

    Parameters
    ----------
    fun : callable
        ``fun(pop) -> (P,)`` for ``pop`` of shape (P, D) when ``vectorized``;
        ``fun(x) -> float`` for ``x`` of shape (D,) otherwise.  Non-finite
        values lose (count as +inf).
    bounds : array-like of shape (D, 2), scipy ``Bounds`` or None
        Box of the search: the initial population is uniform in it and
        mutants are kept in it.  Without bounds, ``x0`` is required.
    x0 : array-like of shape (D,) or None
        A start point, the first individual.  Without bounds the population
        is ``x0 + init_scale * N(0, 1)`` and the search is unbounded.
    method : {"shade", "shade-ils"}
    max_evals : int or None
        Evaluations (points) allowed, never exceeded; default 10,000 D.
    seed : int, SeedSequence or None
        The same seed gives the same run, and the same initial population
        for every method.
    vectorized : bool
    pop_size : int, >= 4
    jac : callable or None
        ``jac(x) -> (D,)``, the gradient, for SHADE-ILS's L-BFGS (a loss
        and gradient at one point count as one evaluation).  Without it the
        gradient is a vectorised forward difference (D + 1 evaluations).
    callback : callable or None
        ``callback(result)`` after every step with the result so far;
        returning True stops the run.
    init_scale : float
        Spread of the initial population around ``x0`` when unbounded.
    **options
        Passed to :class:`SHADE` / :class:`SHADEILS` (``memory_size``,
        ``de_evals``, ``ls_evals``, ``gd``, ``gd_every``, ...).

    Returns
    -------
    OptimizeResult
        ``.x`` (D,), ``.fun``, ``.nfev``, ``.nit``, ``.history``.
    """
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {fun!r}")
    if not isinstance(method, str) or method.lower() not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}")
    if jac is not None and not callable(jac):
        raise TypeError(f"jac must be callable jac(x) -> (D,) or None, got {jac!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {callback!r}")
    if bounds is None and x0 is None:
        raise ValueError("give bounds (D, 2), x0 (D,), or both")

    lower = upper = None
    if bounds is not None:
        lower, upper = _as_bounds(bounds)
    if x0 is not None:
        x0 = np.asarray(x0, dtype=np.float64)
        dim = len(lower) if lower is not None else (x0.shape[0] if x0.ndim == 1 else None)
        if x0.ndim != 1 or x0.shape[0] != dim or dim < 1:
            expected = f"({dim},)" if dim else "(D,) with D >= 1"
            raise ValueError(f"x0 must have shape {expected}, got shape {x0.shape}")
        if not np.isfinite(x0).all():
            raise ValueError("x0 must be finite")
        if lower is not None and ((x0 < lower).any() or (x0 > upper).any()):
            raise ValueError("x0 lies outside bounds")
    dim = len(lower) if lower is not None else x0.shape[0]

    if max_evals is None:
        max_evals = 10000 * dim
    max_evals = _check_int("max_evals", max_evals, 1)
    if not isinstance(init_scale, numbers.Real) or not init_scale > 0:
        raise ValueError(f"init_scale must be a number > 0, got {init_scale!r}")

    vfun = fun if vectorized else _rowwise(fun)
    value_and_grad = None
    if jac is not None:
        def value_and_grad(x):
            return vfun(x[None, :])[0], jac(x)

    sampler = None
    if lower is None:
        centre, scale = x0.copy(), float(init_scale)

        def sampler(rng, n):
            return centre + scale * rng.standard_normal((n, dim))

    problem = Problem(vfun, dim, max_evals, lower=lower, upper=upper,
                      value_and_grad=value_and_grad, sampler=sampler)
    opt = _METHODS[method.lower()](pop_size=pop_size, **options)
    return opt.run(problem, seed=seed, x0=x0, callback=callback)
