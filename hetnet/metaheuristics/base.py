"""The step engine shared by the metaheuristics, and the hybrid with gradient descent.

An optimiser is driven in steps over a :class:`~hetnet.metaheuristics.problem.Problem`::

    opt.start(problem, seed=0)        # draws and evaluates the initial population
    while problem.remaining > 0:
        if not opt.step(problem):     # one generation (or one local search)
            break
        ...                           # read opt.best, problem.nfev; log, stop early

so a training loop can put its History, callbacks and early stopping between
steps.  :meth:`Metaheuristic.run` is that loop for plain functions.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import check_positive_int as _check_int
from .problem import Problem


def _check_unit(name, value, low_open=True):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and (0.0 < value <= 1.0 if low_open else 0.0 <= value <= 1.0)
    if not ok:
        raise ValueError(f"{name} must be a number in {'(0' if low_open else '[0'}, 1], "
                         f"got {value!r}")
    return float(value)


class OptimizeResult:
    """What a run found.

    Attributes
    ----------
    x : ndarray of shape (D,)
        The best point evaluated.
    fun : float
        Its loss (+inf if every evaluated loss was non-finite).
    nfev : int
        Evaluations used (never more than ``max_evals``).
    nit : int
        Steps taken (generations, plus local searches for SHADE-ILS).
    n_gd : int
        Gradient-descent calls of a hybrid.
    history : dict of ndarray
        ``history["nfev"]`` (S,) evaluations used after each step (the first
        entry after the initial population) and ``history["fun"]`` (S,) the
        best loss so far at that point.
    message : str
    """

    def __init__(self, x: NDArray[np.float64], fun: float, nfev: int, nit: int, n_gd: int,
                 history: dict[str, NDArray[np.float64]], message: str) -> None:
        self.x = x
        self.fun = fun
        self.nfev = nfev
        self.nit = nit
        self.n_gd = n_gd
        self.history = history
        self.message = message

    def __repr__(self):
        return (f"OptimizeResult(fun={self.fun!r}, nfev={self.nfev}, nit={self.nit}, "
                f"n_gd={self.n_gd}, message={self.message!r})")


class Metaheuristic:
    """Base of the population optimisers: seeding, history and the GD hybrid.

    Parameters
    ----------
    pop_size : int, >= 4
        Population size P.
    gd : callable or None
        The hybrid's gradient step, ``gd(x) -> x_new`` on a copy of the best
        individual, shape (D,) -> (D,) (for a model: one epoch of a
        gradient optimiser from those weights).  The new point costs one
        evaluation; it replaces the best individual when its loss is not
        higher (so a hybrid never loses its best).
    gd_every : int or None
        Evaluations between two gradient steps; the check runs after every
        step, so the step lands on the first step boundary past each
        ``gd_every`` evaluations.  Default ``20 * pop_size``, about the
        thesis's metaheuristic "epoch" (4,200 evaluations over 20 epochs).
    """

    def __init__(self, pop_size: int = 10, gd: Callable[[NDArray[np.float64]], ArrayLike] | None = None,
                 gd_every: int | None = None) -> None:
        self.pop_size = pop_size
        self.gd = gd
        self.gd_every = gd_every

    # -- validation -------------------------------------------------------------
    def _validate(self):
        self.pop_size = _check_int("pop_size", self.pop_size, 4)
        if self.gd is not None and not callable(self.gd):
            raise TypeError(f"gd must be callable gd(x) -> x_new, got {self.gd!r}")
        if self.gd_every is not None:
            _check_int("gd_every", self.gd_every, 1)

    # -- driving ----------------------------------------------------------------
    def start(self, problem: Problem, seed: int | np.random.SeedSequence | None = None,
              x0: ArrayLike | None = None) -> None:
        """Draw and evaluate the initial population.

        The population comes from its own random stream of ``seed``, so every
        strategy given the same seed (and the same sampler) starts from the
        same population; ``x0`` (D,), if given, is its first row.
        """
        self._validate()
        init_rng, self.rng = self.seeded_streams(seed)
        pop = problem.sample(init_rng, self.pop_size)
        if x0 is not None:
            x0 = np.asarray(x0, dtype=np.float64)
            if x0.shape != (problem.dim,):
                raise ValueError(f"x0 must have shape ({problem.dim},), got shape {x0.shape}")
            pop[0] = x0
        self.n_steps = 0
        self.n_gd = 0
        self._gd_every = (20 * self.pop_size if self.gd_every is None else int(self.gd_every))
        self._hist_nfev = []
        self._hist_fun = []
        self._start(problem, pop)
        self._last_gd = problem.nfev
        self._record(problem)

    @staticmethod
    def seeded_streams(seed: int | np.random.SeedSequence | None
                       ) -> tuple[np.random.Generator, np.random.Generator]:
        """(initial-population Generator, algorithm Generator) of ``seed``.

        The first stream draws only the initial population, so anything that
        draws its start from it (another strategy, a gradient run starting
        from row 0) starts from the same points for the same seed.
        """
        seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        init_seq, alg_seq = seq.spawn(2)
        return np.random.default_rng(init_seq), np.random.default_rng(alg_seq)

    def step(self, problem: Problem) -> bool:
        """One generation (SHADE-ILS: one generation or one local search),
        then the gradient step when it is due.  False once nothing was left
        to evaluate."""
        if problem.remaining <= 0:
            return False
        before = problem.nfev
        did = self._step(problem)
        if did and self.gd is not None and problem.nfev - self._last_gd >= self._gd_every:
            self._gd_step(problem)
        if did:
            self.n_steps += 1
        if problem.nfev > before:
            self._record(problem)
        return did

    def run(self, problem: Problem, seed: int | np.random.SeedSequence | None = None,
            x0: ArrayLike | None = None,
            callback: Callable[[OptimizeResult], Any] | None = None) -> OptimizeResult:
        """Start and step until the budget is spent or ``callback`` returns True.

        ``callback(result)`` gets an :class:`OptimizeResult` of the run so far
        after every step.
        """
        self.start(problem, seed=seed, x0=x0)
        message = "max_evals reached"
        while problem.remaining > 0:
            if not self.step(problem):
                message = "no evaluation possible"
                break
            if callback is not None and callback(self.result(problem, "running")) is True:
                message = "stopped by callback"
                break
        return self.result(problem, message)

    def result(self, problem: Problem, message: str = "") -> OptimizeResult:
        x = problem.best_x if problem.best_x is not None else self._any_point()
        return OptimizeResult(
            x=np.array(x, dtype=np.float64), fun=problem.best_f, nfev=problem.nfev,
            nit=self.n_steps, n_gd=self.n_gd,
            history={"nfev": np.array(self._hist_nfev, dtype=np.int64),
                     "fun": np.array(self._hist_fun, dtype=np.float64)},
            message=message)

    def _record(self, problem):
        self._hist_nfev.append(problem.nfev)
        self._hist_fun.append(problem.best_f)

    def _gd_step(self, problem):
        x, f = self.best
        x_new = np.asarray(self.gd(np.array(x, copy=True)), dtype=np.float64)
        if x_new.shape != (problem.dim,):
            raise ValueError(f"gd returned shape {x_new.shape}, expected ({problem.dim},)")
        if problem.bounded:
            x_new = np.clip(x_new, problem.lower, problem.upper)
        f_new = problem.evaluate(x_new[None, :])
        self.n_gd += 1
        self._last_gd = problem.nfev
        if len(f_new) and f_new[0] <= f:
            self._replace_best(x_new, float(f_new[0]))

    # -- saving and resuming a run -------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The constructor's arguments but ``gd`` (a JSON-able dict): what a
        run to be resumed must be given again."""
        import inspect
        names = [p for p in inspect.signature(type(self).__init__).parameters
                 if p not in ("self", "gd")]
        return {name: getattr(self, name) for name in names}

    def get_state(self) -> dict[str, Any]:
        """Where the run stands between two steps: a flat dict of numpy
        arrays and JSON-able values (ints, floats, strings, the random
        generator's state), everything :meth:`set_state` needs to continue
        the run exactly as an uninterrupted one (the gradient step ``gd``
        excepted: its state is its owner's to keep)."""
        return {"rng": self.rng.bit_generator.state, "n_steps": int(self.n_steps),
                "n_gd": int(self.n_gd), "gd_every_used": int(self._gd_every),
                "last_gd": int(self._last_gd),
                "hist_nfev": np.array(self._hist_nfev, dtype=np.int64),
                "hist_fun": np.array(self._hist_fun, dtype=np.float64)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (what :meth:`get_state` returned, possibly
        after a trip through a file), in place of :meth:`start`."""
        import copy
        checked = copy.copy(self)       # the settings, not gd (a model's hybrid sets it later)
        checked.gd = None
        checked._validate()
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        self.n_steps, self.n_gd = int(state["n_steps"]), int(state["n_gd"])
        self._gd_every, self._last_gd = int(state["gd_every_used"]), int(state["last_gd"])
        self._hist_nfev = [int(v) for v in np.asarray(state["hist_nfev"])]
        self._hist_fun = [float(v) for v in np.asarray(state["hist_fun"])]

    # -- for subclasses -----------------------------------------------------------
    @property
    def best(self) -> tuple[NDArray[np.float64], float]:
        """(x, f) of the optimiser's current best individual."""
        raise NotImplementedError

    def _replace_best(self, x, f):
        raise NotImplementedError

    def _start(self, problem, pop):
        raise NotImplementedError

    def _step(self, problem):
        raise NotImplementedError

    def _any_point(self):
        return self.best[0]
