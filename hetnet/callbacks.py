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

import math

__all__ = ["Callback", "ProgressBar", "EarlyStopping"]


class Callback:
    """Base class: every hook exists and does nothing."""

    def on_fit_begin(self, model):
        """Called once before training starts."""

    def on_epoch_begin(self, model, epoch):
        """Called before epoch ``epoch`` (0-based)."""

    def on_batch_end(self, model, batch):
        """Called after the optimiser step of batch ``batch`` (0-based)."""

    def on_epoch_end(self, model, epoch, logs):
        """Called after epoch ``epoch``; return True to stop training."""
        return False

    def on_fit_end(self, model, history):
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

    def __init__(self, n_samples=None, batch_size=None, file=None, leave=True):
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

    def on_fit_begin(self, model):
        self._batches = None

    def on_epoch_begin(self, model, epoch):
        from tqdm.auto import tqdm
        if self._counts_images():
            total, unit, scale = int(self.n_samples), "img", True
        else:
            total, unit, scale = self._batches, "batch", False
        self._seen = 0
        self._bar = tqdm(total=total, desc=f"epoch {epoch + 1}", unit=unit, unit_scale=scale,
                         leave=self.leave, file=self.file, dynamic_ncols=True)

    def on_batch_end(self, model, batch):
        if self._bar is None:
            return
        if self._counts_images():
            step = min(int(self.batch_size), int(self.n_samples) - self._seen)
        else:
            step = 1
        self._seen += step
        self._bar.update(step)

    def on_epoch_end(self, model, epoch, logs):
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

    def on_fit_end(self, model, history):
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

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=5, mode="auto",
                 restore_best_weights=True):
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
    def resolved_mode(self):
        """``"min"`` or ``"max"``."""
        if self.mode != "auto":
            return self.mode
        name = self.monitor.lower()
        return "max" if ("acc" in name or "score" in name) else "min"

    def on_fit_begin(self, model):
        self._reset()

    def on_epoch_end(self, model, epoch, logs):
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

    def on_fit_end(self, model, history):
        if (self.restore_best_weights and self._best_weights is not None
                and self.best_epoch != self._last_epoch):
            model.set_weights(self._best_weights)
        self._best_weights = None   # do not keep a copy of the model alive
