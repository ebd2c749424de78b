"""Learning-rate schedules: plain functions of (step, total_steps).

``Sequential.fit(..., lr_schedule=s)`` sets the optimizer's ``lr`` to
``s(step, total_steps)`` before every step (``step`` counts from 0 over the
whole ``fit`` call).  Schedules are control work and always run on the host.
"""

import math


class Schedule:
    def __call__(self, step, total_steps):
        raise NotImplementedError

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

    def __init__(self, lr):
        self.lr = _check_lr("lr", lr)

    def __call__(self, step, total_steps):
        return self.lr


class CosineDecay(Schedule):
    """Cosine from ``lr`` down to ``final_lr`` over the run."""

    def __init__(self, lr, final_lr=0.0):
        self.lr = _check_lr("lr", lr)
        self.final_lr = float(final_lr)
        if not 0 <= self.final_lr <= self.lr:
            raise ValueError(f"final_lr must be in [0, lr], got {final_lr!r}")

    def __call__(self, step, total_steps):
        frac = min(1.0, step / max(1, total_steps - 1))
        return self.final_lr + 0.5 * (self.lr - self.final_lr) * (1 + math.cos(math.pi * frac))


class OneCycle(Schedule):
    """One-cycle policy (Smith): warm up from ``max_lr / div_factor`` to
    ``max_lr`` over the first ``pct_start`` of the steps, then anneal (cosine)
    to ``max_lr / (div_factor * final_div_factor)``."""

    def __init__(self, max_lr, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
        self.max_lr = _check_lr("max_lr", max_lr)
        if not 0 < pct_start < 1:
            raise ValueError(f"pct_start must be in (0, 1), got {pct_start!r}")
        self.pct_start = float(pct_start)
        self.div_factor = _check_lr("div_factor", div_factor)
        self.final_div_factor = _check_lr("final_div_factor", final_div_factor)

    def __call__(self, step, total_steps):
        start = self.max_lr / self.div_factor
        end = start / self.final_div_factor
        peak = max(1, int(self.pct_start * total_steps))
        if step < peak:
            a, b, frac = start, self.max_lr, step / peak
        else:
            a, b, frac = self.max_lr, end, min(1.0, (step - peak) / max(1, total_steps - 1 - peak))
        return b + 0.5 * (a - b) * (1 + math.cos(math.pi * frac))


def get_schedule(spec):
    """None, a Schedule / callable ``(step, total) -> lr``."""
    if spec is None or callable(spec):
        return spec
    raise ValueError(f"lr_schedule must be a callable (step, total_steps) -> lr, got {spec!r}")
