"""Training callbacks: hooks that :meth:`hetnet.Sequential.fit` calls.

A callback is any object with some of these methods; :class:`Callback` is a
base with all of them doing nothing, so a subclass defines only what it needs.

====================================  ============================================
``on_fit_begin(model)``               once, before the first epoch
``on_epoch_begin(model, epoch)``      before each epoch (``epoch`` counts from 0)
``on_batch_end(model, batch)``        after each optimiser step (``batch`` from 0)
``on_epoch_end(model, epoch, logs)``  after each epoch; return True to stop
``on_fit_end(model, history)``        once, after the last epoch
====================================  ============================================

``model`` is the :class:`~hetnet.Sequential` being trained.  ``logs`` is a dict
of the epoch's figures: ``loss``, ``images_per_s``, ``time_s``, and with
validation data ``val_loss`` and ``val_accuracy``; the scikit-learn
estimators add ``val_score`` when ``early_stopping=True``.  Callbacks run in
list order and all of them see every hook, so an entry one callback adds to
``logs`` is visible to those after it.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Any, TextIO

__all__ = ["Callback", "ProgressBar", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau",
           "CSVLogger"]


class Callback:
    """Base class: every hook exists and does nothing."""

    def on_fit_begin(self, model: Any) -> None:
        """Called once before training starts."""

    def on_epoch_begin(self, model: Any, epoch: int) -> None:
        """Called before epoch ``epoch`` (0-based)."""

    def on_batch_end(self, model: Any, batch: int) -> None:
        """Called after the optimiser step of batch ``batch`` (0-based)."""

    def on_epoch_end(self, model: Any, epoch: int, logs: dict[str, float]) -> bool | None:
        """Called after epoch ``epoch``; return True to stop training."""
        return False

    def on_fit_end(self, model: Any, history: dict[str, Any]) -> None:
        """Called once after training, with the :class:`~hetnet.History`."""


class ProgressBar(Callback):
    """A tqdm progress bar per epoch, closed with the epoch's loss, images/s
    and any validation figures.

    Parameters
    ----------
    n_samples : int, optional
        Training samples per epoch.  With ``batch_size`` the bar counts
        images; otherwise it counts batches (its length is learnt in the
        first epoch).
    batch_size : int, optional
        Samples per batch (the last batch may be smaller).
    file : file-like, optional
        Where the bar is written (tqdm's default, standard error, if None).
    leave : bool, default True
        Keep each finished epoch's bar on screen.
    """

    def __init__(self, n_samples: int | None = None, batch_size: int | None = None,
                 file: TextIO | None = None, leave: bool = True) -> None:
        self.n_samples = n_samples
        self.batch_size = batch_size
        self.file = file
        self.leave = leave
        self._bar = None
        self._epochs = None
        self._batches = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_bar"] = None   # a live terminal bar does not travel
        return state

    def _counts_images(self):
        return self.n_samples is not None and self.batch_size is not None

    def on_fit_begin(self, model: Any) -> None:
        self._batches = None

    def on_epoch_begin(self, model: Any, epoch: int) -> None:
        from tqdm.auto import tqdm
        if self._counts_images():
            total, unit, scale = int(self.n_samples), "img", True
        else:
            total, unit, scale = self._batches, "batch", False
        self._seen = 0
        self._bar = tqdm(total=total, desc=f"epoch {epoch + 1}", unit=unit, unit_scale=scale,
                         leave=self.leave, file=self.file, dynamic_ncols=True)

    def on_batch_end(self, model: Any, batch: int) -> None:
        if self._bar is None:
            return
        if self._counts_images():
            step = min(int(self.batch_size), int(self.n_samples) - self._seen)
        else:
            step = 1
        self._seen += step
        self._bar.update(step)

    def on_epoch_end(self, model: Any, epoch: int, logs: dict[str, float]) -> bool | None:
        if self._bar is None:
            return False
        if not self._counts_images():
            self._batches = self._seen
        shown = {k: f"{v:.4g}" for k, v in logs.items()
                 if k != "time_s" and isinstance(v, (int, float))}
        self._bar.set_postfix(shown, refresh=False)
        self._bar.close()
        self._bar = None
        return False

    def on_fit_end(self, model: Any, history: dict[str, Any]) -> None:
        if self._bar is not None:   # an epoch that did not reach on_epoch_end
            self._bar.close()
            self._bar = None


def _is_better(mode, value, reference, margin=0.0):
    if reference is None:
        return True
    return value < reference - margin if mode == "min" else value > reference + margin


class EarlyStopping(Callback):
    """Stop when a monitored figure stops improving; optionally put back the
    weights of its best epoch.

    Parameters
    ----------
    monitor : str, default "val_loss"
        A key of the epoch ``logs``: ``"loss"``, ``"val_loss"``,
        ``"val_accuracy"``, ``"val_score"`` (scikit-learn estimators with
        ``early_stopping=True``), or one a callback earlier in the list adds.
    min_delta : float, default 0.0
        An epoch counts as an improvement only when it beats the best value
        so far by more than this.
    patience : int, default 5
        Stop after this many consecutive epochs without an improvement.
    mode : {"auto", "min", "max"}, default "auto"
        Whether smaller or larger is better; ``"auto"`` takes ``"max"`` for
        monitors named like accuracy or score and ``"min"`` otherwise.
    restore_best_weights : bool, default True
        At the end of training, load the weights of the epoch with the best
        value (best by any margin).

    Attributes
    ----------
    best : float or None
        Best value seen.
    best_epoch : int or None
        Epoch (0-based) where it was seen.
    stopped_epoch : int or None
        Epoch after which this callback stopped training (None if it did not).
    wait : int
        Consecutive epochs without an improvement.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 5,
                 mode: str = "auto", restore_best_weights: bool = True) -> None:
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an int >= 1, got {patience!r}")
        min_delta = float(min_delta)
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        self.monitor = monitor
        self.min_delta = min_delta
        self.patience = patience
        self.mode = mode
        self.restore_best_weights = bool(restore_best_weights)
        self._reset()

    def _reset(self):
        self.best = None
        self.best_epoch = None
        self.stopped_epoch = None
        self.wait = 0
        self._best_weights = None
        self._last_epoch = None

    @property
    def resolved_mode(self) -> str:
        """``"min"`` or ``"max"``."""
        if self.mode != "auto":
            return self.mode
        name = self.monitor.lower()
        return "max" if ("acc" in name or "score" in name) else "min"

    def on_fit_begin(self, model: Any) -> None:
        self._reset()

    def on_epoch_end(self, model: Any, epoch: int, logs: dict[str, float]) -> bool | None:
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, but the epoch logs hold "
                             f"{sorted(logs)}; 'val_*' entries need validation_data in fit")
        value = float(logs[self.monitor])
        if math.isnan(value):
            raise ValueError(f"EarlyStopping: {self.monitor} is NaN in epoch {epoch + 1}")
        mode = self.resolved_mode
        self._last_epoch = epoch
        improved = _is_better(mode, value, self.best, self.min_delta)
        if _is_better(mode, value, self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self._best_weights = model.get_weights()
        self.wait = 0 if improved else self.wait + 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_fit_end(self, model: Any, history: dict[str, Any]) -> None:
        if (self.restore_best_weights and self._best_weights is not None
                and self.best_epoch != self._last_epoch):
            model.set_weights(self._best_weights)
        self._best_weights = None   # do not keep a copy of the model alive


def _monitored(name, monitor, logs, epoch):
    if monitor not in logs:
        raise ValueError(f"{name} monitors {monitor!r}, but the epoch logs hold {sorted(logs)}; "
                         "'val_*' entries need validation_data in fit")
    value = float(logs[monitor])
    if math.isnan(value):
        raise ValueError(f"{name}: {monitor} is NaN in epoch {epoch + 1}")
    return value


def _resolve_mode(mode, monitor):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    name = monitor.lower()
    return "max" if ("acc" in name or "score" in name) else "min"


def _distributed(model):
    """The MPI context of the data-parallel fit ``model`` is in, or None
    (a plain fit, or a job of one rank)."""
    return model.__dict__.get("_distributed") if model is not None else None


def _metaheuristic(model):
    """``(metaheuristic, its gradient optimizer or None)`` of the
    metaheuristic fit ``model`` is in, or None (a gradient fit)."""
    return model.__dict__.get("_metaheuristic") if model is not None else None


class ModelCheckpoint(Callback):
    """Write a checkpoint (the model, the optimizer's state, the epoch, the
    shuffling state, the history) every ``every`` epochs, atomically (a
    crash while writing leaves the previous file whole);
    ``fit(..., resume_from=path)`` continues from it.

    Parameters
    ----------
    path : str or path-like
        The file; ``{epoch}`` in it (e.g. ``"ckpt-{epoch:03d}.npz"``) is
        replaced by the epoch number (from 1), else each write replaces
        the last.  :func:`hetnet.load` reads a checkpoint as the model.
    every : int, default 1
        Epochs between writes.
    save_best_only : bool, default False
        Write only when ``monitor`` improved on the best value so far.
    monitor : str, default "val_loss"
        A key of the epoch logs (for ``save_best_only``).
    mode : {"auto", "min", "max"}
        Whether smaller or larger ``monitor`` is better (``"auto"``: larger
        for names with "acc" or "score").

    Notes
    -----
    In a data-parallel fit (``fit(..., distributed=...)`` over several MPI
    ranks) the replicas are identical and rank 0 alone writes the file
    (:meth:`hetnet.distributed.Context.write`); the other ranks wait until
    it is complete, and ``fit(..., distributed=..., resume_from=path)``
    has every rank read it.

    In a metaheuristic fit (``optimizer=hn.SHADE(...)``, ``max_evals=``)
    the model holds the best individual at each epoch's end, so the file's
    weights are the best found so far; the checkpoint also holds the
    search's state (population, losses, memories, archive, random
    generator, evaluations used, a hybrid's gradient optimizer), and
    ``fit(..., optimizer=<the same settings>, max_evals=<the same>,
    resume_from=path)`` continues the search exactly.

    Attributes
    ----------
    best : float or None
    last_path : str or None
        The file written last.
    """

    def __init__(self, path: str | os.PathLike[str], every: int = 1, save_best_only: bool = False,
                 monitor: str = "val_loss", mode: str = "auto") -> None:
        path = os.fspath(path)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        self.path = path
        self.every = every
        self.save_best_only = bool(save_best_only)
        self.monitor = monitor
        self.mode = _resolve_mode(mode, monitor)
        self.best = None
        self.last_path = None
        folder = os.path.dirname(os.path.abspath(path.replace("{", "").replace("}", "")))
        if not os.path.isdir(folder):
            raise ValueError(f"ModelCheckpoint path {path!r}: the folder {folder!r} does not exist")

    def on_fit_begin(self, model: Any) -> None:
        self.best = None

    def on_epoch_end(self, model: Any, epoch: int, logs: dict[str, float]) -> bool | None:
        if (epoch + 1) % self.every:
            return False
        if self.save_best_only:
            value = _monitored("ModelCheckpoint", self.monitor, logs, epoch)
            if not _is_better(self.mode, value, self.best):
                return False
            self.best = value
        path = self.path.format(epoch=epoch + 1) if "{" in self.path else self.path
        ctx = _distributed(model)
        if ctx is None:
            model.save_checkpoint(path)
        else:
            # one file for the job: the replicas are identical, rank 0 writes
            # (atomically) and the others wait until it is there
            ctx.write(path, model.save_checkpoint, what=f"rank 0 to write checkpoint {path}")
        self.last_path = path
        return False


class ReduceLROnPlateau(Callback):
    """Multiply the optimizer's learning rate by ``factor`` when ``monitor``
    has not improved for ``patience`` epochs (Keras' and PyTorch's
    ``ReduceLROnPlateau``).  Not with an ``lr_schedule``, which sets the
    rate at every step.

    In a metaheuristic fit it reduces the learning rate of a hybrid's
    gradient optimizer (``gd=hn.Adam(...)``), the one rate such a fit has;
    a metaheuristic without a gradient optimizer has no learning rate, and
    the fit refuses this callback (a ValueError at its start).

    Parameters
    ----------
    monitor : str, default "val_loss"
    factor : float, default 0.1
        In (0, 1).
    patience : int, default 10
        Epochs without an improvement before a reduction.
    min_delta : float, default 1e-4
        An improvement must beat the best by more than this.
    cooldown : int, default 0
        Epochs after a reduction before counting again.
    min_lr : float, default 0
        The rate is never set below this.
    mode : {"auto", "min", "max"}

    Attributes
    ----------
    reductions : list of (epoch, new lr)
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0,
                 mode: str = "auto") -> None:
        factor = float(factor)
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        for name, v in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "patience" else 0):
                raise ValueError(f"{name} must be an int >= {1 if name == 'patience' else 0}, "
                                 f"got {v!r}")
        min_delta, min_lr = float(min_delta), float(min_lr)
        if not (min_delta >= 0 and math.isfinite(min_delta)):
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        if not (min_lr >= 0 and math.isfinite(min_lr)):
            raise ValueError(f"min_lr must be a finite number >= 0, got {min_lr!r}")
        self.monitor, self.factor, self.patience = monitor, factor, patience
        self.min_delta, self.cooldown, self.min_lr = min_delta, cooldown, min_lr
        self.mode = _resolve_mode(mode, monitor)
        self.on_fit_begin(None)

    def on_fit_begin(self, model: Any) -> None:
        self.best, self.wait, self._cooling, self.reductions = None, 0, 0, []
        search = _metaheuristic(model)
        if search is not None and search[1] is None:
            raise ValueError(f"ReduceLROnPlateau adjusts a learning rate, and this "
                             f"{type(search[0]).__name__} fit has none (no gradient "
                             "optimizer: give the metaheuristic gd=hn.Adam(...) to reduce "
                             "its rate, or drop the callback)")

    def on_epoch_end(self, model: Any, epoch: int, logs: dict[str, float]) -> bool | None:
        value = _monitored("ReduceLROnPlateau", self.monitor, logs, epoch)
        if _is_better(self.mode, value, self.best, self.min_delta):
            self.best, self.wait = value, 0
            return False
        if self._cooling:
            self._cooling -= 1
            return False
        self.wait += 1
        if self.wait >= self.patience:
            opt = model.optimizer
            new = max(opt.lr * self.factor, self.min_lr)
            if new < opt.lr:
                opt.lr = new
                self.reductions.append((epoch, new))
            self.wait, self._cooling = 0, self.cooldown
        return False


class CSVLogger(Callback):
    """Append one row per epoch (the epoch, from 1, and every figure of the
    logs) to a CSV file, flushed at each row, so a crashed run keeps its
    curve.  In a data-parallel fit over several MPI ranks, rank 0 alone
    writes (every rank has the same logs).

    Parameters
    ----------
    path : str or path-like
    append : bool, default False
        Add to an existing file (a resumed run) instead of starting it anew.
    separator : str, default ","
    """

    def __init__(self, path: str | os.PathLike[str], append: bool = False,
                 separator: str = ",") -> None:
        self.path = os.fspath(path)
        if os.path.isdir(self.path):
            raise ValueError(f"CSVLogger path {self.path!r} is a directory")
        self.append = bool(append)
        self.separator = separator
        self._file = self._writer = self._keys = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = state["_writer"] = None
        return state

    def on_fit_begin(self, model: Any) -> None:
        self._file = None
        ctx = _distributed(model)
        if ctx is not None and not ctx.is_root:
            return          # every rank has the same logs: rank 0 alone writes them
        exists = self.append and os.path.exists(self.path) and os.path.getsize(self.path) > 0
        self._file = open(self.path, "a" if self.append else "w", newline="")
        self._writer = csv.writer(self._file, delimiter=self.separator)
        self._keys = None
        if exists:
            with open(self.path, newline="") as f:
                first = f.readline().strip()
            self._keys = first.split(self.separator)[1:] if first else None

    def on_epoch_end(self, model: Any, epoch: int, logs: dict[str, float]) -> bool | None:
        if self._file is None:      # not rank 0 of a data-parallel fit
            return False
        if self._keys is None:
            self._keys = [k for k, v in logs.items() if isinstance(v, (int, float))]
            self._writer.writerow(["epoch"] + self._keys)
        self._writer.writerow([epoch + 1] + [logs.get(k, "") for k in self._keys])
        self._file.flush()
        return False

    def on_fit_end(self, model: Any, history: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
