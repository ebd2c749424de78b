"""SHADE-ILS: SHADE with iterated local search and restarts.

Molina, D., LaTorre, A. and Herrera, F. (2018), "SHADE with iterative local
search for large-scale global optimization", IEEE CEC 2018.  As in the
thesis, only the L-BFGS local search is kept (the authors' method also
chooses MTS-LS1 when it improves more): scipy's L-BFGS-B over the problem's
loss and gradient.

The search alternates a SHADE phase (``de_evals`` evaluations, whole
generations) and an L-BFGS phase (``ls_evals`` evaluations) on the current
best, after a first L-BFGS phase on the best of the initial population.
After each DE + LS cycle the relative improvement of the current best over
the cycle is compared with ``threshold``; after ``max_stagnation`` cycles in a
row below it, the search restarts: a random individual, moved by up to
``restart_scale`` of the search span in each coordinate, becomes the current
best, the population is drawn again and SHADE's memories and archive start
afresh.  The best point ever evaluated is kept across restarts.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .base import Metaheuristic, _check_int
from .problem import BudgetExhausted
from .shade import SHADE


class SHADEILS(Metaheuristic):
    """SHADE with iterated L-BFGS local search and restarts.

    Parameters
    ----------
    pop_size : int, >= 4
    memory_size, p_max, archive_rate :
        Of the SHADE phases, see :class:`SHADE`.
    de_evals : int or None
        Evaluations of each SHADE phase (rounded up to whole generations).
        Default: the authors' min(50 D, 25000), at most a tenth of the budget.
    ls_evals : int or None
        Evaluations of each L-BFGS phase (a point's loss and gradient count
        as one; a finite-difference gradient as D + 1).  Default: the
        authors' min(10 D, 5000), at most a tenth of the budget.
    threshold : float
        A cycle improving the current best by a smaller ratio counts as stagnant (0.05).
    max_stagnation : int
        Stagnant cycles in a row that trigger a restart (3).
    restart_scale : float
        Restart perturbation, a fraction of the span per coordinate (0.01).
    gd, gd_every :
        The hybrid with gradient descent, see :class:`Metaheuristic`.
    """

    def __init__(self, pop_size: int = 10, memory_size: int | None = None, p_max: float = 0.2,
                 archive_rate: float = 1.0, de_evals: int | None = None,
                 ls_evals: int | None = None, threshold: float = 0.05, max_stagnation: int = 3,
                 restart_scale: float = 0.01, gd: Callable[[NDArray[np.float64]], ArrayLike] | None = None,
                 gd_every: int | None = None) -> None:
        super().__init__(pop_size=pop_size, gd=gd, gd_every=gd_every)
        self.memory_size = memory_size
        self.p_max = p_max
        self.archive_rate = archive_rate
        self.de_evals = de_evals
        self.ls_evals = ls_evals
        self.threshold = threshold
        self.max_stagnation = max_stagnation
        self.restart_scale = restart_scale

    def _validate(self):
        super()._validate()
        for name in ("de_evals", "ls_evals"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        _check_int("max_stagnation", self.max_stagnation, 1)
        for name in ("threshold", "restart_scale"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Real) or not np.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")

    def _start(self, problem, pop):
        d = problem.dim
        cap = max(1, problem.max_evals // 10)
        self._de_evals = (min(50 * d, 25000, cap) if self.de_evals is None
                          else int(self.de_evals))
        self._ls_evals = (min(10 * d, 5000, cap) if self.ls_evals is None
                          else int(self.ls_evals))
        self.de = SHADE(pop_size=self.pop_size, memory_size=self.memory_size,
                        p_max=self.p_max, archive_rate=self.archive_rate)
        self.de._validate()
        self.de.rng = self.rng
        self.de._start(problem, pop)
        self.cur_x, self.cur_f = (np.array(a) for a in self.de.best)
        self.cur_f = float(self.cur_f)
        self.phase = "ls"
        self.n_stagnant = 0
        self.n_restarts = 0
        self.n_ls = 0
        self._cycle_start_f = self.cur_f
        self._de_left = 0

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state.update(self.de._population_state("de."))
        state.update({"de_evals_used": int(self._de_evals), "ls_evals_used": int(self._ls_evals),
                      "cur_x": np.array(self.cur_x, dtype=np.float64),
                      "cur_f": float(self.cur_f), "phase": self.phase,
                      "n_stagnant": int(self.n_stagnant), "n_restarts": int(self.n_restarts),
                      "n_ls": int(self.n_ls), "cycle_start_f": float(self._cycle_start_f),
                      "de_left": int(self._de_left)})
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.de = SHADE(pop_size=self.pop_size, memory_size=self.memory_size,
                        p_max=self.p_max, archive_rate=self.archive_rate)
        self.de._validate()
        self.de.rng = self.rng          # one stream for both, as in start()
        self.de._set_population_state(state, "de.")
        self._de_evals, self._ls_evals = int(state["de_evals_used"]), int(state["ls_evals_used"])
        self.cur_x = np.array(state["cur_x"], dtype=np.float64)
        self.cur_f = float(state["cur_f"])
        if state["phase"] not in ("de", "ls"):
            raise ValueError(f"the saved SHADE-ILS phase must be 'de' or 'ls', got "
                             f"{state['phase']!r}")
        self.phase = state["phase"]
        self.n_stagnant, self.n_restarts = int(state["n_stagnant"]), int(state["n_restarts"])
        self.n_ls = int(state["n_ls"])
        self._cycle_start_f = float(state["cycle_start_f"])
        self._de_left = int(state["de_left"])

    @property
    def best(self) -> tuple[NDArray[np.float64], float]:
        return self.cur_x, self.cur_f

    def _replace_best(self, x, f):
        self.cur_x, self.cur_f = np.array(x), f
        self.de._replace_best(x, f)

    def _any_point(self):
        return self.cur_x

    def _step(self, problem):
        if self.phase == "de":
            if self._de_left <= 0:
                self._cycle_start_f = self.cur_f
                self._de_left = self._de_evals
                # The DE phase continues from the current best (the reference's applySHADE).
                i = int(np.argmin(self.de.fit))
                if self.cur_f < self.de.fit[i]:
                    self.de.pop[i], self.de.fit[i] = self.cur_x, self.cur_f
            before = problem.nfev
            if not self.de._step(problem):
                return False
            self._de_left -= problem.nfev - before
            x, f = self.de.best
            if f < self.cur_f:
                self.cur_x, self.cur_f = np.array(x), float(f)
            if self._de_left <= 0:
                self.phase = "ls"
            return True

        first = self.n_ls == 0
        self._local_search(problem)
        self.n_ls += 1
        self.phase = "de"
        if not first:
            self._check_restart(problem)
        return True

    def _local_search(self, problem):
        """L-BFGS-B from the current best with at most ``ls_evals`` evaluations."""
        from scipy.optimize import Bounds, minimize

        if not np.isfinite(self.cur_f):
            return
        cost = 1 if problem.has_gradient else problem.dim + 1
        stop_at = min(problem.max_evals, problem.nfev + self._ls_evals)
        best = [self.cur_x, self.cur_f]

        def fg(x):
            if stop_at - problem.nfev < cost:
                raise BudgetExhausted
            f, g = problem.value_and_grad(x)
            if f < best[1]:
                best[0], best[1] = np.array(x), f
            return f, g

        bounds = Bounds(problem.lower, problem.upper) if problem.bounded else None
        maxfun = max(1, self._ls_evals // cost)
        try:
            minimize(fg, self.cur_x, jac=True, method="L-BFGS-B", bounds=bounds,
                     options={"maxfun": maxfun, "maxiter": maxfun})
        except BudgetExhausted:
            pass
        if best[1] < self.cur_f:
            self.cur_x, self.cur_f = best[0], float(best[1])

    def _check_restart(self, problem):
        prev, now = self._cycle_start_f, self.cur_f
        if prev == now:
            ratio = 0.0
        elif not np.isfinite(prev):
            ratio = 1.0
        elif prev == 0:
            ratio = 1.0
        else:
            ratio = (prev - now) / abs(prev)
        if ratio >= self.threshold:
            self.n_stagnant = 0
            return
        self.n_stagnant += 1
        if self.n_stagnant < self.max_stagnation or problem.remaining < 1:
            return
        self.n_stagnant = 0
        self.n_restarts += 1
        rng = self.rng
        pop = problem.sample(rng, self.pop_size)
        span = (problem.upper - problem.lower) if problem.bounded else np.ptp(pop, axis=0)
        x = self.de.pop[rng.integers(self.pop_size)]
        x = x + rng.uniform(-self.restart_scale, self.restart_scale, problem.dim) * span
        if problem.bounded:
            x = np.clip(x, problem.lower, problem.upper)
        f = problem.evaluate(x[None, :])
        self.cur_x, self.cur_f = x, (float(f[0]) if len(f) else np.inf)
        f_pop = problem.evaluate(pop)
        fit = np.full(self.pop_size, np.inf)
        fit[:len(f_pop)] = f_pop
        self.de.set_population(pop, fit)
        self._de_left = 0
        self._cycle_start_f = self.cur_f
