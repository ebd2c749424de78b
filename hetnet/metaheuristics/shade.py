"""SHADE: success-history based adaptive differential evolution.

Tanabe, R. and Fukunaga, A. (2013), "Success-history based parameter
adaptation for differential evolution", IEEE CEC 2013, pp. 71-78.

One generation is a handful of (P, D) array operations: current-to-pbest/1
mutation with an external archive, binomial crossover, one vectorised
evaluation of the P trials, greedy selection and the update of one slot of the
CR / F memories.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .base import Metaheuristic, _check_int, _check_unit
from .problem import Problem


class SHADE(Metaheuristic):
    """Success-history based adaptive differential evolution.

    Parameters
    ----------
    pop_size : int, >= 4
        Population size N.
    memory_size : int or None
        H, the slots of the CR and F memories; default ``pop_size`` (the
        paper sets H = N).
    p_max : float in (0, 1]
        Each individual's p is drawn from U[2/N, p_max]; its pbest is one of
        the round(p N) best (the paper's 0.2).
    archive_rate : float >= 0
        The archive holds up to round(archive_rate * N) replaced parents
        (the paper's 1.0); 0 disables it.
    gd, gd_every :
        The hybrid with gradient descent, see :class:`Metaheuristic`.

    Notes
    -----
    Per the paper (and the authors' C++ code where the paper leaves a detail
    open): both memories start at 0.5; each individual draws r_i uniformly
    from the H slots, CR_i ~ N(M_CR[r_i], 0.1) clipped to [0, 1] and F_i ~
    Cauchy(M_F[r_i], 0.1), drawn again while F_i <= 0 and truncated to 1;
    p_i ~ U[2/N, p_max] and pbest is uniform among the round(p_i N) best (at
    least 2); current-to-pbest/1 with x_r1 from the population and x_r2 from
    population + archive, r1, r2 and i distinct; binomial crossover with one
    forced coordinate; a mutant coordinate outside the box is set half-way
    between the parent's coordinate and the bound it crossed.  The N trials
    of a generation are made from the same population, then compared: a
    trial replaces its parent when its loss is not higher; only a parent
    beaten strictly enters the archive and gives its CR_i, F_i, weighted by
    the loss improvement, to the update of slot k (M_CR[k] the weighted
    arithmetic mean, M_F[k] the weighted Lehmer mean; k then cycles through
    the H slots; no update in a generation without a strict improvement).
    The archive keeps the beaten parents, not the trials that beat them; in
    row order each is appended while there is room, else written over a
    uniformly drawn member, as in the authors' code, so a parent archived
    early in a generation can be overwritten by a later one.

    Choices of this implementation: H defaults to N, the paper's setting;
    the crossover's uniform draws are float32 (half the memory traffic at
    a network's size, resolution 2**-24); losses that are not finite count
    as +inf, and a finite trial beating such a parent is weighted equally
    with the others that do.
    """

    def __init__(self, pop_size: int = 10, memory_size: int | None = None, p_max: float = 0.2,
                 archive_rate: float = 1.0, gd: Callable[[NDArray[np.float64]], ArrayLike] | None = None,
                 gd_every: int | None = None) -> None:
        super().__init__(pop_size=pop_size, gd=gd, gd_every=gd_every)
        self.memory_size = memory_size
        self.p_max = p_max
        self.archive_rate = archive_rate

    def _validate(self):
        super()._validate()
        if self.memory_size is not None:
            _check_int("memory_size", self.memory_size, 1)
        _check_unit("p_max", self.p_max)
        if not (np.isscalar(self.archive_rate) and np.isfinite(self.archive_rate)
                and self.archive_rate >= 0):
            raise ValueError(f"archive_rate must be a finite number >= 0, got "
                             f"{self.archive_rate!r}")

    # -- state --------------------------------------------------------------------
    def _start(self, problem, pop):
        f = problem.evaluate(pop)
        fit = np.full(len(pop), np.inf)
        fit[:len(f)] = f
        self.set_population(pop, fit, problem.dim)

    def set_population(self, pop: ArrayLike, fit: ArrayLike, dim: int | None = None) -> None:
        """Replace the population (N, D) and its losses (N,); the memories
        and the archive start afresh."""
        pop = np.asarray(pop, dtype=np.float64)
        n = len(pop)
        self.archive_max = int(round(self.archive_rate * n))
        # zeros, not empty: the archive's unused rows are saved with the state,
        # which must not depend on what the allocator left there
        self._union = np.zeros((n + self.archive_max, pop.shape[1]))
        self._union[:n] = pop
        self.pop = self._union[:n]
        self.archive = self._union[n:]
        self.n_archive = 0
        self.fit = np.array(fit, dtype=np.float64)
        h = n if self.memory_size is None else int(self.memory_size)
        self.m_cr = np.full(h, 0.5)
        self.m_f = np.full(h, 0.5)
        self.k = 0

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state.update(self._population_state())
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._set_population_state(state)

    def _population_state(self, prefix=""):
        """The population, its losses, the archive and the memories (the
        rows past ``n_archive`` of the archive are unused)."""
        return {prefix + "union": self._union.copy(), prefix + "n_pop": int(len(self.pop)),
                prefix + "n_archive": int(self.n_archive), prefix + "fit": self.fit.copy(),
                prefix + "m_cr": self.m_cr.copy(), prefix + "m_f": self.m_f.copy(),
                prefix + "k": int(self.k)}

    def _set_population_state(self, state, prefix=""):
        n = int(state[prefix + "n_pop"])
        self._union = np.array(state[prefix + "union"], dtype=np.float64)
        self.archive_max = self._union.shape[0] - n
        self.pop, self.archive = self._union[:n], self._union[n:]
        self.n_archive = int(state[prefix + "n_archive"])
        self.fit = np.array(state[prefix + "fit"], dtype=np.float64)
        self.m_cr = np.array(state[prefix + "m_cr"], dtype=np.float64)
        self.m_f = np.array(state[prefix + "m_f"], dtype=np.float64)
        self.k = int(state[prefix + "k"])
        if (self.fit.shape != (n,) or self.m_cr.shape != self.m_f.shape
                or not 0 <= self.n_archive <= self.archive_max or not 0 <= self.k < len(self.m_cr)):
            raise ValueError("the saved SHADE state is inconsistent (population, losses, "
                             "archive and memories disagree)")

    @property
    def best(self) -> tuple[NDArray[np.float64], float]:
        i = int(np.argmin(self.fit))
        return self.pop[i], float(self.fit[i])

    def _replace_best(self, x, f):
        i = int(np.argmin(self.fit))
        self.pop[i] = x
        self.fit[i] = f

    # -- one generation -----------------------------------------------------------
    def ask(self, problem: Problem) -> NDArray[np.float64]:
        """The N trial vectors of the next generation, shape (N, D).

        Draws CR_i, F_i and the donors; :meth:`tell` must follow with the
        losses of the first n of them (n <= N, fewer when the budget ends).
        """
        rng = self.rng
        pop, fit = self.pop, self.fit
        n, d = pop.shape
        idx = np.arange(n)

        r = rng.integers(len(self.m_cr), size=n)
        cr = np.clip(rng.normal(self.m_cr[r], 0.1), 0.0, 1.0)
        f = self.m_f[r] + 0.1 * rng.standard_cauchy(n)
        bad = f <= 0
        while bad.any():
            f[bad] = self.m_f[r[bad]] + 0.1 * rng.standard_cauchy(int(bad.sum()))
            bad = f <= 0
        f = np.minimum(f, 1.0)

        p_min = 2.0 / n
        p = p_min + rng.random(n) * max(self.p_max - p_min, 0.0)
        n_top = np.maximum(2, np.rint(p * n)).astype(np.int64)
        order = np.argsort(fit, kind="stable")
        pbest = order[(rng.random(n) * n_top).astype(np.int64)]

        # r1 from the population, r2 from population + archive, both != i, r1 != r2.
        r1 = rng.integers(n - 1, size=n)
        r1 += r1 >= idx
        union = n + self.n_archive
        r2 = rng.integers(union, size=n)
        bad = (r2 == idx) | (r2 == r1)
        while bad.any():
            r2[bad] = rng.integers(union, size=int(bad.sum()))
            bad = (r2 == idx) | (r2 == r1)
        # Rows [0, N) of the union buffer are the population, the archive follows.
        x_r2 = self._union[r2]

        # v = x + F (x_pbest - x + x_r1 - x_r2), in place: a generation is
        # memory-bound at the sizes of a network's weights.
        v = pop[pbest]
        v -= pop
        v += pop[r1]
        v -= x_r2
        v *= f[:, None]
        v += pop
        if problem.bounded:
            for out, bound in ((v < problem.lower, problem.lower),
                               (v > problem.upper, problem.upper)):
                if out.any():
                    mid = pop + bound
                    mid *= 0.5
                    np.copyto(v, mid, where=out)

        keep = rng.random((n, d), dtype=np.float32) >= cr.astype(np.float32)[:, None]
        keep[idx, rng.integers(d, size=n)] = False
        np.copyto(v, pop, where=keep)
        self._cr, self._f = cr, f
        return v

    def tell(self, trials: NDArray[np.float64], f_trials: NDArray[np.float64]) -> None:
        """Selection and memory update for the first n trials (n, D) and their losses (n,)."""
        n = len(f_trials)
        if n == 0:
            return
        f_old = self.fit[:n]
        wins = f_trials <= f_old
        strict = f_trials < f_old

        if self.archive_max and strict.any():
            self._archive(np.flatnonzero(strict))

        if strict.any():
            gain = f_old[strict] - f_trials[strict]
            if not np.isfinite(gain).all():
                # A finite trial beating an infinite parent: weigh those alone, equally.
                gain = np.isinf(gain).astype(np.float64)
            w = gain / gain.sum()
            s_cr = self._cr[:n][strict]
            s_f = self._f[:n][strict]
            self.m_cr[self.k] = np.sum(w * s_cr)
            self.m_f[self.k] = np.sum(w * s_f * s_f) / np.sum(w * s_f)
            self.k = (self.k + 1) % len(self.m_cr)

        rows = np.flatnonzero(wins)
        self.pop[rows] = trials[rows]
        self.fit[rows] = f_trials[rows]

    def _archive(self, beaten):
        """Copy the parents ``beaten`` (ascending row indices) into the archive before they
        are replaced.

        The authors' rule, one parent at a time in row order: appended while
        there is room, otherwise written over a uniformly drawn member, which
        may be a parent archived earlier in the same generation.  Done here as
        one row copy: each slot keeps the last parent sent to it.
        """
        cap, na, m = self.archive_max, self.n_archive, len(beaten)
        n_free = min(cap - na, m)
        slots = np.empty(m, dtype=np.int64)
        slots[:n_free] = np.arange(na, na + n_free)
        slots[n_free:] = self.rng.integers(cap, size=m - n_free)
        _, first_in_reversed = np.unique(slots[::-1], return_index=True)
        last = m - 1 - first_in_reversed
        self.archive[slots[last]] = self.pop[beaten[last]]
        self.n_archive = na + n_free

    def _step(self, problem):
        trials = self.ask(problem)
        f = problem.evaluate(trials)
        self.tell(trials[:len(f)], f)
        return len(f) > 0
