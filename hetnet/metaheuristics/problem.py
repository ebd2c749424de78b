"""The budgeted objective every metaheuristic evaluates through.

A :class:`Problem` owns the evaluation count: every loss value an optimiser
sees passes through :meth:`Problem.evaluate` (a population, one vectorised
call) or :meth:`Problem.value_and_grad` (one point, for the L-BFGS local
search), each counted as one evaluation per point, and neither ever goes past
``max_evals``.  It also keeps the best point seen so far, so an optimiser can
be stopped at any step and still report the best it evaluated.

A model is one more objective: phase 2 of the training work hands the
optimisers a Problem whose ``fun`` is the population loss over flat weight
vectors, ``value_and_grad`` the model's loss and backward pass, and
``sampler`` the layers' initialiser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray


class BudgetExhausted(Exception):
    """Raised inside a local search when the evaluation budget is spent."""


class Problem:
    """A vectorised objective with an exact evaluation budget.

    Parameters
    ----------
    fun : callable
        ``fun(pop) -> (P,)`` for ``pop`` of shape (P, D), float64.
    dim : int
        D, the number of variables.
    max_evals : int
        The most evaluations (points) this problem will ever evaluate.
    lower, upper : ndarray of shape (D,) or None
        Box bounds; None for an unbounded problem.
    value_and_grad : callable or None
        ``value_and_grad(x) -> (float, (D,))`` at one point of shape (D,);
        counted as one evaluation.  Required by gradient-based local search.
    sampler : callable or None
        ``sampler(rng, n) -> (n, D)``: initial / restart individuals.  Defaults
        to uniform within the bounds.

    Notes
    -----
    Non-finite losses (NaN, +-inf) are replaced by +inf: such a candidate
    loses every comparison and never becomes the best.
    """

    def __init__(self, fun: Callable[[NDArray[np.float64]], ArrayLike], dim: int, max_evals: int,
                 lower: NDArray[np.float64] | None = None,
                 upper: NDArray[np.float64] | None = None,
                 value_and_grad: Callable[[NDArray[np.float64]], tuple[float, ArrayLike]]
                 | None = None,
                 sampler: Callable[[np.random.Generator, int], ArrayLike] | None = None
                 ) -> None:
        self.fun = fun
        self.dim = int(dim)
        self.max_evals = int(max_evals)
        self.lower = lower
        self.upper = upper
        self._value_and_grad = value_and_grad
        self.sampler = sampler
        self.nfev = 0
        self.best_x = None
        self.best_f = np.inf

    @property
    def bounded(self) -> bool:
        return self.lower is not None

    @property
    def remaining(self) -> int:
        return self.max_evals - self.nfev

    @property
    def has_gradient(self) -> bool:
        return self._value_and_grad is not None

    def get_state(self) -> dict[str, Any]:
        """The evaluations used and the best point so far (for a resumed run)."""
        return {"nfev": int(self.nfev), "best_f": float(self.best_f),
                "best_x": (np.zeros(0) if self.best_x is None
                           else np.array(self.best_x, dtype=np.float64))}

    def set_state(self, state: dict[str, Any]) -> None:
        """Take :meth:`get_state`'s values back."""
        nfev = int(state["nfev"])
        if not 0 <= nfev <= self.max_evals:
            raise ValueError(f"the saved evaluation count {nfev} is outside [0, "
                             f"max_evals={self.max_evals}]")
        best_x = np.asarray(state["best_x"], dtype=np.float64).reshape(-1)
        if best_x.size not in (0, self.dim):
            raise ValueError(f"the saved best point has {best_x.size} values, the problem "
                             f"{self.dim}")
        self.nfev = nfev
        self.best_f = float(state["best_f"])
        self.best_x = best_x.copy() if best_x.size else None

    def sample(self, rng: np.random.Generator, n: int) -> NDArray[np.float64]:
        """``n`` new individuals, shape (n, D), from the sampler or the box."""
        if self.sampler is not None:
            pop = np.asarray(self.sampler(rng, n), dtype=np.float64)
            if pop.shape != (n, self.dim):
                raise ValueError(f"sampler returned shape {pop.shape}, expected {(n, self.dim)}")
            return pop
        return self.lower + rng.random((n, self.dim)) * (self.upper - self.lower)

    def _track(self, X, f):
        i = int(np.argmin(f))
        if f[i] < self.best_f:
            self.best_f = float(f[i])
            self.best_x = np.array(X[i], dtype=np.float64)

    def evaluate(self, pop: NDArray[np.float64]) -> NDArray[np.float64]:
        """Losses of the first rows of ``pop`` that the budget allows.

        Parameters
        ----------
        pop : ndarray of shape (P, D)

        Returns
        -------
        f : ndarray of shape (n,), n = min(P, remaining); non-finite values as +inf.
        """
        n = min(len(pop), self.remaining)
        if n <= 0:
            return np.empty(0)
        X = pop[:n]
        f = np.asarray(self.fun(X), dtype=np.float64)
        if f.shape != (n,):
            raise ValueError(f"fun returned an array of shape {f.shape} for a population of "
                             f"shape {X.shape}; expected shape ({n},)")
        self.nfev += n
        f = np.where(np.isfinite(f), f, np.inf)
        self._track(X, f)
        return f

    def value_and_grad(self, x: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        """Loss and gradient at one point, counted as one evaluation.

        Raises :class:`BudgetExhausted` when no evaluation is left.  A
        non-finite loss comes back as +inf with a zero gradient, so a line
        search backs off instead of stepping on NaN.  Without a
        ``value_and_grad`` the gradient is a forward difference, D + 1
        evaluations in one vectorised call.
        """
        if self._value_and_grad is None:
            return self._fd_value_and_grad(x)
        if self.remaining < 1:
            raise BudgetExhausted
        f, g = self._value_and_grad(x)
        self.nfev += 1
        f = float(f)
        g = np.asarray(g, dtype=np.float64).reshape(-1)
        if g.shape != (self.dim,):
            raise ValueError(f"the gradient has shape {g.shape}, expected ({self.dim},)")
        if not np.isfinite(f):
            return np.inf, np.zeros(self.dim)
        self._track(x[None, :], np.array([f]))
        return f, np.where(np.isfinite(g), g, 0.0)

    def _fd_value_and_grad(self, x):
        d = self.dim
        if self.remaining < d + 1:
            raise BudgetExhausted
        # Step scaled to the point, as scipy's approx_grad does (sqrt(eps)).
        h = np.sqrt(np.finfo(np.float64).eps) * np.maximum(1.0, np.abs(x))
        if self.bounded:
            # Step backwards where a forward step would leave the box.
            h = np.where(x + h > self.upper, -h, h)
        pts = np.repeat(x[None, :], d + 1, axis=0)
        pts[1 + np.arange(d), np.arange(d)] += h
        f = self.evaluate(pts)
        if not np.isfinite(f[0]):
            return np.inf, np.zeros(d)
        g = (f[1:] - f[0]) / h
        return float(f[0]), np.where(np.isfinite(g), g, 0.0)
