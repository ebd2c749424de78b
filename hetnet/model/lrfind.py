"""The learning-rate range test (Smith; fastai's ``lr_find``).

:func:`lr_find` trains for up to ``num_steps`` mini-batches while the
learning rate grows exponentially from ``start_lr`` to ``end_lr``
(``lr_i = start_lr * (end_lr / start_lr) ** (i / num_steps)``, fastai's
``SchedExp``), records the loss of each step smoothed as fastai's
``AvgSmoothLoss`` (an exponential average with ``beta = 0.98``, divided by
``1 - beta ** (i + 1)`` to remove its bias towards 0), stops once the
smoothed loss exceeds four times the best so far, and suggests a learning
rate by fastai's "valley" rule (:func:`valley`).  The model's weights and
its optimiser (hyper-parameters and state) are as they were afterwards.
"""

import copy
from dataclasses import dataclass, field

import numpy as np

from .._validation import check_positive_int


@dataclass
class LRFindResult:
    """What :func:`lr_find` found.

    Attributes
    ----------
    lrs : list of float
        The learning rate of each step run.
    losses : list of float
        The smoothed (debiased) loss after each step.
    raw_losses : list of float
        Each step's mini-batch loss.
    suggestion : float
        The valley rule's learning rate.
    suggestion_index : int
        Its position in ``lrs``.
    stopped_early : bool
        True when the loss diverged (over four times the best) before
        ``num_steps``.
    """
    lrs: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    raw_losses: list = field(default_factory=list)
    suggestion: float = float("nan")
    suggestion_index: int = -1
    stopped_early: bool = False

    def plot(self, path, title="learning-rate finder"):
        """Write the smoothed loss against the learning rate (log scale),
        the suggestion marked, as a PNG (needs matplotlib)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(self.lrs, self.losses)
        if self.suggestion_index >= 0:
            ax.plot([self.suggestion], [self.losses[self.suggestion_index]], "o", color="C3",
                    label=f"valley: {self.suggestion:.3g}")
            ax.legend(loc="best")
        ax.set(xscale="log", xlabel="learning rate", ylabel="loss (smoothed)", title=title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


def valley(losses):
    """fastai's valley rule: the index 2/3 of the way along the longest
    strictly descending run (a longest decreasing subsequence, ending as
    early as it can) of ``losses``."""
    n = len(losses)
    max_start = max_end = 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return max_start + int(sections) + int(sections / 2)


def _suggest(lrs, losses, num_steps):
    """fastai's ``lr_find``: the valley of the curve without its first tenth
    and last five points, cut at the first NaN; the whole curve when that
    leaves fewer than two points."""
    lo = num_steps // 10
    hi = len(losses) - 5
    keep = list(range(lo, hi)) if hi - lo >= 2 else list(range(len(losses)))
    finite = [i for i in keep if np.isfinite(losses[i])]
    if finite and len(finite) < len(keep):     # drop from the first NaN on
        first_bad = next(i for i in keep if not np.isfinite(losses[i]))
        keep = [i for i in keep if i < first_bad]
    if not keep:
        return float("nan"), -1
    k = keep[valley([losses[i] for i in keep])]
    return float(lrs[k]), k


def _snapshot_optimizer(opt):
    """Host copies of ``opt``'s state, its step count and hyper-parameters."""
    state = {}
    for i, st in opt.state.items():
        arrays = st if isinstance(st, tuple) else (st,)
        state[i] = (isinstance(st, tuple), [None if a is None else _host(a) for a in arrays])
    params = {k: v for k, v in vars(opt).items()
              if not k.startswith("_") and k not in ("state", "t")}
    return state, opt.t, copy.deepcopy(params)


def _host(a):
    return np.array(a.get() if hasattr(a, "get") else a, copy=True)


def _restore_optimizer(model, opt, snapshot):
    """Put ``snapshot`` back into ``opt``, each state array on the device
    that holds its parameter now (a plan may have moved it)."""
    state, t, params = snapshot
    where = {}
    for step in model._steps:
        for index, _ in model._param_slots(step):
            where[index] = step.device
    opt.state = {}
    for i, (is_tuple, arrays) in state.items():
        dev = where[i]
        moved = tuple(None if a is None else dev.asarray(a) for a in arrays)
        opt.state[i] = moved if is_tuple else moved[0]
    opt.t = t
    opt._flat = {}
    opt._pending = []
    for k, v in params.items():
        setattr(opt, k, v)


def lr_find(model, X, y, start_lr=1e-7, end_lr=10.0, num_steps=100, batch_size=64,
            optimizer=None, sample_weight=None, stop_div=True, seed=0):
    """Run the learning-rate range test on ``model`` and restore it after.

    Parameters
    ----------
    model : Sequential
    X, y : training data, as :meth:`Sequential.fit` takes them
    start_lr, end_lr : float
        The first learning rate and the one the growth heads for (reached
        at step ``num_steps``, one past the last).
    num_steps : int
        Most mini-batches to run (fastai runs at least 6).
    batch_size : int
    optimizer : Optimizer or name, optional
        Run with a fresh copy of this; default a fresh copy of the model's
        optimizer, or ``SGD(momentum=0.9)`` if it has none.  The model's own
        optimizer is left untouched.
    sample_weight : array (n,), optional
    stop_div : bool
        Stop when the smoothed loss exceeds four times the best (or is not
        finite).
    seed : int
        Seeds the order of the mini-batches (the model's own shuffling is
        not drawn from).

    Returns
    -------
    LRFindResult
    """
    from ..optim import SGD, Optimizer, get_optimizer
    start_lr, end_lr = float(start_lr), float(end_lr)
    if not (start_lr > 0 and np.isfinite(start_lr)):
        raise ValueError(f"start_lr must be a positive number, got {start_lr!r}")
    if not (end_lr > start_lr and np.isfinite(end_lr)):
        raise ValueError(f"end_lr must be a number above start_lr ({start_lr}), got {end_lr!r}")
    num_steps = max(6, check_positive_int("num_steps", num_steps))
    batch_size = check_positive_int("batch_size", batch_size)
    X, yt, sw = model._prepare(X, y, sample_weight)
    n = X.shape[0]
    batch = min(batch_size, n)
    if optimizer is None:
        base = model.optimizer if model.optimizer is not None else SGD(momentum=0.9)
    else:
        base = optimizer if isinstance(optimizer, Optimizer) else get_optimizer(optimizer)
    run_opt = copy.copy(base)
    run_opt.reset()
    own = model.optimizer
    saved_weights = model.get_weights()
    snapshot = _snapshot_optimizer(own) if own is not None else None
    rng = np.random.default_rng(seed)
    result = LRFindResult()
    beta, avg, best = 0.98, 0.0, float("inf")
    model.optimizer = run_opt
    try:
        model._use_plan(batch, training=True)
        order, pos = rng.permutation(n), 0
        with model.runtime.session():
            for i in range(num_steps):
                if pos + batch > n:
                    order, pos = rng.permutation(n), 0
                idx = order[pos:pos + batch]
                pos += batch
                lr = start_lr * (end_lr / start_lr) ** (i / num_steps)
                run_opt.lr = lr
                loss = model.train_step(*model._batch_to_device(X, yt, sw, idx))
                raw = float(model.out_device.to_host(loss)[0])
                avg = beta * avg + (1 - beta) * raw
                smooth = avg / (1 - beta ** (i + 1))
                result.lrs.append(lr)
                result.raw_losses.append(raw)
                result.losses.append(smooth)
                if smooth < best:
                    best = smooth
                if stop_div and (smooth > 4 * best or not np.isfinite(smooth)):
                    result.stopped_early = i + 1 < num_steps
                    break
    finally:
        model.optimizer = run_opt
        model.set_weights(saved_weights)       # (resets run_opt)
        model.optimizer = own
        if own is not None:
            _restore_optimizer(model, own, snapshot)
    result.suggestion, result.suggestion_index = _suggest(result.lrs, result.losses, num_steps)
    return result


__all__ = ["lr_find", "LRFindResult", "valley"]
