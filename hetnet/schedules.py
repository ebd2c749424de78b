"""Learning-rate (and momentum) schedules: functions of (step, total_steps).

``Sequential.fit(..., lr_schedule=s)`` sets the optimizer's ``lr`` to
``s(step, total_steps)`` before every step (``step`` counts from 0 over the
whole ``fit`` call).  Any callable of that signature is a schedule; one that
also has a ``momentum(step, total_steps)`` method returning a number (not
None) sets the optimizer's momentum too: SGD's and RMSProp's ``momentum``,
Adam's ``beta1`` (:attr:`hetnet.optim.Optimizer.momentum_attribute`).
Schedules are control work and always run on the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .optim import Optimizer


class Schedule:
    """A learning rate as a function of the step: ``schedule(step, total_steps) -> lr``."""

    def __call__(self, step: int, total_steps: int) -> float:
        raise NotImplementedError

    def momentum(self, step: int, total_steps: int) -> float | None:
        """The momentum at ``step``, or None: leave the optimizer's as it is."""
        return None

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _check_lr(name, value):
    value = float(value)
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


class Constant(Schedule):
    """The same learning rate at every step."""

    def __init__(self, lr: float) -> None:
        self.lr = _check_lr("lr", lr)

    def __call__(self, step: int, total_steps: int) -> float:
        return self.lr


class CosineDecay(Schedule):
    """Cosine from ``lr`` down to ``final_lr`` over the run."""

    def __init__(self, lr: float, final_lr: float = 0.0) -> None:
        self.lr = _check_lr("lr", lr)
        self.final_lr = float(final_lr)
        if not 0 <= self.final_lr <= self.lr:
            raise ValueError(f"final_lr must be in [0, lr], got {final_lr!r}")

    def __call__(self, step: int, total_steps: int) -> float:
        frac = min(1.0, step / max(1, total_steps - 1))
        return self.final_lr + 0.5 * (self.lr - self.final_lr) * (1 + math.cos(math.pi * frac))


def _cos(start, end, pos):
    """fastai's ``sched_cos``: ``start`` at ``pos`` 0 to ``end`` at 1, half a cosine."""
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def _combined_cos(pct, start, middle, end, pos):
    """fastai's ``combined_cos``: ``start`` to ``middle`` over ``pos`` in
    [0, pct), then ``middle`` to ``end`` over [pct, 1]."""
    if pos < pct:
        return _cos(start, middle, pos / pct)
    return _cos(middle, end, (pos - pct) / (1 - pct))


class OneCycle(Schedule):
    """fastai's ``fit_one_cycle`` policy (Smith's one-cycle, cosine phases).

    At step ``i`` of ``T``, ``pos = i / T`` (fastai's fraction of training
    done); the learning rate goes by half a cosine from ``max_lr /
    div_factor`` to ``max_lr`` over ``pos`` in [0, pct_start), then to
    ``max_lr / final_div_factor`` at ``pos`` = 1 (fastai's ``lr_max /
    div_final``; PyTorch's ``OneCycleLR`` ends at ``max_lr / (div_factor *
    final_div_factor)`` and reaches its peak one step earlier, at ``pct_start
    * T - 1``).  The momentum goes the other way, ``moms[0]`` to ``moms[1]``
    and back to ``moms[2]`` on the same two phases; ``moms=None`` leaves it
    alone.

    Parameters
    ----------
    max_lr : float
    pct_start : float in (0, 1)
    div_factor, final_div_factor : float > 0
    moms : (float, float, float) in [0, 1), or None
    """

    def __init__(self, max_lr: float, pct_start: float = 0.25, div_factor: float = 25.0,
                 final_div_factor: float = 1e5,
                 moms: tuple[float, float, float] | None = (0.95, 0.85, 0.95)) -> None:
        self.max_lr = _check_lr("max_lr", max_lr)
        if not 0 < pct_start < 1:
            raise ValueError(f"pct_start must be in (0, 1), got {pct_start!r}")
        self.pct_start = float(pct_start)
        self.div_factor = _check_lr("div_factor", div_factor)
        self.final_div_factor = _check_lr("final_div_factor", final_div_factor)
        if moms is not None:
            moms = tuple(float(m) for m in moms)
            if len(moms) != 3 or not all(0 <= m < 1 for m in moms):
                raise ValueError(f"moms must be three momenta in [0, 1) or None, got {moms!r}")
        self.moms = moms

    def _pos(self, step, total_steps):
        return min(1.0, max(0.0, step / max(1, total_steps)))

    def __call__(self, step: int, total_steps: int) -> float:
        return _combined_cos(self.pct_start, self.max_lr / self.div_factor, self.max_lr,
                             self.max_lr / self.final_div_factor, self._pos(step, total_steps))

    def momentum(self, step: int, total_steps: int) -> float | None:
        if self.moms is None:
            return None
        return _combined_cos(self.pct_start, *self.moms, self._pos(step, total_steps))


def get_schedule(spec: Callable[[int, int], float] | None
                 ) -> Callable[[int, int], float] | None:
    """None, a Schedule / callable ``(step, total) -> lr``."""
    if spec is None or callable(spec):
        return spec
    raise ValueError(f"lr_schedule must be a callable (step, total_steps) -> lr, got {spec!r}")


def apply_schedule(schedule: Callable[[int, int], float], optimizer: Optimizer, step: int,
                   total_steps: int) -> None:
    """Set ``optimizer``'s learning rate, and its momentum where the schedule
    gives one, for ``step`` of ``total_steps``
    (:meth:`hetnet.optim.Optimizer.follow_schedule`)."""
    optimizer.follow_schedule(schedule, step, total_steps)
