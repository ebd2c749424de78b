"""The fit loop: epochs of shuffled mini-batches, callbacks, history."""

import math
import time

import numpy as np

from .._validation import check_X, check_positive_int, check_targets
from ..optim import get_optimizer
from ..schedules import apply_schedule, get_schedule
from .health import check_epoch, fold_weights


class History(dict):
    """Per-epoch records of a ``fit`` call: ``loss``, ``val_loss``,
    ``val_accuracy``, ``images_per_s``, ``time_s`` (lists, one entry an epoch)."""

    @property
    def epochs(self):
        return len(self.get("loss", []))


def fit(model, X, y, epochs=1, batch_size=32, optimizer=None, validation_data=None,
        verbose=0, shuffle=True, sample_weight=None, callbacks=None, lr_schedule=None,
        check_input=True, resume_from=None):
    """Mini-batch training.

    Each epoch reshuffles (``shuffle=True``), covers every sample once
    (the last, partial batch included) and averages gradients over each
    batch.  The optimizer (default ``SGD(lr=0.01)``) keeps its state
    across calls, so ``fit`` may be called again to continue training.

    Parameters
    ----------
    X : array ``(n, *input_shape)``, or ``(n, prod(input_shape))``
    y : class indices (n,) or one-hot (n, k) for cross-entropy; (n, k)
        or (n,) targets otherwise
    validation_data : (X_val, y_val), optional
        Evaluated after every epoch.
    verbose : {0, 1, 2}
        0: silent.  1: a progress bar per epoch with loss and images/s (on
        a terminal; written to a file or pipe, it updates at most every 30
        s).  2: one line per epoch, no bar (for logs).
    lr_schedule : callable, optional
        ``lr_schedule(step, total_steps) -> lr`` sets the learning rate
        before every step (see :mod:`hetnet.schedules`).
    callbacks : list, optional
        Objects with any of ``on_fit_begin(model)``,
        ``on_epoch_begin(model, epoch)``, ``on_batch_end(model, batch)``,
        ``on_epoch_end(model, epoch, logs)`` (return True to stop) and
        ``on_fit_end(model, history)``.
    check_input : bool
        False skips the scan of X for NaN and infinity (shapes, dtype and
        targets are still checked): for callers that have scanned X
        already, such as the scikit-learn estimators.  Non-finite inputs
        then train to NaN weights instead of raising.
    resume_from : str or path-like, optional
        A checkpoint written by :class:`hetnet.callbacks.ModelCheckpoint`
        in a run with these ``epochs``, samples and ``batch_size``: its
        weights, optimizer (hyper-parameters and state, in place of
        ``optimizer``), shuffling and Dropout state and history are put
        back and training continues after its last epoch, as the
        interrupted run would have (on the CPU, bit for bit).

    Returns
    -------
    History
    """
    if verbose not in (0, 1, 2) or isinstance(verbose, float):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    X, yt, sw = model._prepare(X, y, sample_weight, check_input)
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val), got "
                             f"{type(validation_data).__name__}")
        Xv = check_X(validation_data[0], model.input_shape, name="X_val")
        yv = check_targets(validation_data[1], Xv.shape[0], model.loss.name, model.n_outputs,
                           name="y_val")
    if optimizer is not None or model.optimizer is None:
        model.optimizer = get_optimizer(optimizer)
    schedule = get_schedule(lr_schedule)
    callbacks = list(callbacks or [])
    n = X.shape[0]
    total_steps = epochs * math.ceil(n / batch_size)
    step, start = 0, 0
    history = History(loss=[], val_loss=[], val_accuracy=[], images_per_s=[], time_s=[])
    if resume_from is not None:
        from .checkpoint import resume
        start, step, done = resume(model, resume_from, epochs, n, batch_size)
        history.update({k: list(v) for k, v in done.items()})
    model.history = history
    model._fit_progress = None
    call_callbacks(callbacks, "on_fit_begin", model)
    for epoch in range(start, epochs):
        call_callbacks(callbacks, "on_epoch_begin", model, epoch)
        order = model._shuffle_rng.permutation(n) if shuffle else np.arange(n)
        bar = progress_bar(verbose, n, f"epoch {epoch + 1}/{epochs}")
        model._use_plan(min(batch_size, n), training=True)
        totals = {}
        t0 = time.perf_counter()
        with model.runtime.session():
            for b, start in enumerate(range(0, n, batch_size)):
                idx = order[start:start + batch_size]
                if len(idx) < batch_size and start:   # the short last batch
                    model._use_plan(len(idx), training=True, fixed_params=True)
                if schedule is not None:
                    apply_schedule(schedule, model.optimizer, step, total_steps)
                step += 1
                loss = model.runtime.train_step(*model.runtime.batch_to_device(X, yt, sw, idx))
                dev = model.out_device
                if dev not in totals:
                    totals[dev] = dev.zeros((1,))
                dev.axpy(float(len(idx)), loss, totals[dev])
                if bar is not None:
                    bar.update(len(idx))
                    if b % 50 == 0:
                        bar.set_postfix(loss=f"{float(dev.to_host(loss)[0]):.4f}", refresh=False)
                call_callbacks(callbacks, "on_batch_end", model, b)
            fold_weights(model, totals)   # NaN weights turn the sum NaN (no extra read)
            # reading the sums waits for the devices
            epoch_loss = sum(float(d.to_host(t)[0]) for d, t in totals.items()) / n
        dt = time.perf_counter() - t0
        logs = {"loss": epoch_loss, "images_per_s": n / dt, "time_s": dt}
        if validation_data is not None:
            ev = model._evaluate(Xv, yv, None)
            logs["val_loss"] = ev["loss"]
            if "accuracy" in ev:
                logs["val_accuracy"] = ev["accuracy"]
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        if bar is not None:
            bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k != "time_s"})
            bar.close()
        if verbose == 2:
            print(epoch_line(epoch, epochs, logs), flush=True)
        check_epoch(model, epoch, epoch_loss, X)
        # where training stands, for a checkpoint written by a callback
        model._fit_progress = {"epoch": epoch + 1, "epochs": epochs, "step": step,
                               "total_steps": total_steps, "n_samples": n,
                               "batch_size": batch_size}
        if any(call_callbacks(callbacks, "on_epoch_end", model, epoch, logs)):
            break
    call_callbacks(callbacks, "on_fit_end", model, history)
    model._fit_progress = None        # a checkpoint needs a fit in progress
    return history


def call_callbacks(callbacks, hook, *args):
    results = []
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            results.append(bool(fn(*args)))
    return results


def epoch_line(epoch, epochs, logs):
    """``verbose=2``'s line for an epoch: its figures, no bar."""
    parts = [f"epoch {epoch + 1}/{epochs}"]
    for key, value in logs.items():
        if key == "images_per_s":
            parts.append(f"{value:,.0f} img/s")
        elif key == "time_s":
            parts.append(f"{value:.2f} s")
        elif isinstance(value, (int, float)):
            parts.append(f"{key} {value:.4g}")
    return " - ".join(parts)


def progress_bar(verbose, total, desc):
    if verbose != 1:
        return None
    import sys
    from tqdm.auto import tqdm     # loaded only when a bar is asked for
    if not getattr(sys.stderr, "isatty", lambda: False)():
        # a file or pipe keeps every carriage return: a few updates, not thousands
        return tqdm(total=total, desc=desc, unit="img", unit_scale=True, leave=True,
                    mininterval=30.0, maxinterval=60.0, ncols=80, ascii=True)
    return tqdm(total=total, desc=desc, unit="img", unit_scale=True, leave=True,
                dynamic_ncols=True)


__all__ = ["History", "fit", "call_callbacks", "progress_bar", "epoch_line"]
