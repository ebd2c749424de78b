"""The fit loop: epochs of shuffled mini-batches, callbacks, history."""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np

from .._validation import check_X, check_positive_int, check_targets
from ..optim import get_optimizer
from ..schedules import apply_schedule, get_schedule
from .health import check_epoch, fold_weights


class History(dict):
    """Per-epoch records of a ``fit`` call: ``loss``, ``val_loss``,
    ``val_accuracy``, ``images_per_s``, ``time_s`` (lists, one entry an
    epoch); with a metaheuristic also ``evals`` (evaluations used so far),
    and the attributes ``n_evals`` and ``result`` (:mod:`hetnet.model.evolve`)."""

    @property
    def epochs(self) -> int:
        return len(self.get("loss", []))


def fit(model, X, y, epochs=1, batch_size=32, optimizer=None, validation_data=None,
        verbose=0, shuffle=True, sample_weight=None, callbacks=None, lr_schedule=None,
        check_input=True, distributed=False, resume_from=None, data_parallel=None):
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
    distributed : bool or hetnet.distributed.Context
        Data-parallel training over the ranks of an MPI job (started with
        ``mpirun -n K``; every rank calls ``fit`` with the same data and
        arguments): ``batch_size`` is the global mini-batch, split across
        the ranks (:attr:`hetnet.distributed.Context.balance`), the
        gradients averaged after each backward pass (a gradient hook), so
        every rank ends each step with the same weights, those one process
        would have at ``batch_size`` (to float32 rounding; BatchNorm uses
        per-rank statistics, see :mod:`hetnet.distributed.data_parallel`).
        The replicas start from rank 0's weights and shuffle by rank 0's
        order; losses and metrics are over all ranks; only rank 0 shows
        progress.  History gains ``allreduce_s`` and ``shares`` per epoch.
        ``True`` joins the job (:func:`hetnet.distributed.init`); pass the
        Context from ``init`` to choose its settings.  With one rank this is
        a plain fit.  Needs mpi4py and an MPI library.
    resume_from : str or path-like, optional
        A checkpoint written by :class:`hetnet.callbacks.ModelCheckpoint`
        in a run with these ``epochs``, samples and ``batch_size``: its
        weights, optimizer (hyper-parameters and state, in place of
        ``optimizer``), shuffling and Dropout state and history are put
        back and training continues after its last epoch, as the
        interrupted run would have (on the CPU, bit for bit).  With
        ``distributed``, every rank reads the file (rank 0 wrote it; over
        several hosts, on a file system they share) and resumes alike; with ``balance="speed"`` the split continues from
        the one last measured.
    data_parallel : hetnet.distributed.DataParallel, optional
        With ``distributed``: the data-parallel side of an earlier fit
        over the same context and ``batch_size`` to continue, its split
        and measured speeds with it (a metaheuristic hybrid's gradient
        epochs, each a fit of one epoch, pass theirs, so that
        ``balance="speed"`` splits each by the speeds the last measured).

    Returns
    -------
    History
    """
    if verbose not in (0, 1, 2) or isinstance(verbose, float):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    ctx = distributed_context(distributed, model.placement.primary)
    X, yt, sw = model._prepare(X, y, sample_weight, check_input)
    Xv, yv = check_validation(model, validation_data)
    if optimizer is not None or model.optimizer is None:
        model.optimizer = get_optimizer(optimizer)
    schedule = get_schedule(lr_schedule)
    callbacks = list(callbacks or [])
    history = History(loss=[], val_loss=[], val_accuracy=[], images_per_s=[], time_s=[])
    start = step = 0
    balance = None
    if resume_from is not None:
        # in a distributed fit every rank reads the file rank 0 wrote (atomically), so
        # every replica resumes from the same weights, optimizer state and shuffle position
        from .checkpoint import resume
        start, step, done, balance = resume(model, resume_from, epochs, X.shape[0],
                                            batch_size)
        history.update({k: list(v) for k, v in done.items()})
    model.history = history
    model._fit_progress = None
    n = X.shape[0]
    hooks = model.runtime.gradient_hooks if model.runtime is not None else ()
    use, _ = model.fusion.decide(model, min(batch_size, n), True,
                                 fused_unsupported(sw, callbacks, ctx, model.optimizer,
                                                   resume_from is not None) or
                                 ("the model has gradient hooks (the fused step has no "
                                  "per-layer gradients to show them)" if hooks else ""),
                                 X.nbytes)
    if use:
        trainer = model.fusion.trainer(model, min(batch_size, n), model.optimizer)
        return fit_fused(model, trainer, X, yt, epochs, batch_size, shuffle,
                         None if validation_data is None else (Xv, yv), callbacks,
                         schedule, verbose, history)
    dp = None
    if ctx is not None:
        from ..distributed.data_parallel import DataParallel
        if data_parallel is None:
            dp = DataParallel(ctx, model, batch_size)
        elif data_parallel.context is not ctx or data_parallel.batch_size != batch_size:
            raise ValueError(f"data_parallel was made for batch_size="
                             f"{data_parallel.batch_size} over another context; this fit has "
                             f"batch_size={batch_size}")
        else:
            dp = data_parallel
        if balance is not None:
            dp.restore_balance(balance)
        dp.begin()
        if not ctx.is_root:
            verbose = 0
    previous_ctx = model.__dict__.get("_distributed")
    model._distributed = ctx        # what callbacks that write files consult
    try:
        call_callbacks(callbacks, "on_fit_begin", model)
        with dp.attached() if dp is not None else contextlib.nullcontext():
            _epochs(model, X, yt, sw, epochs, batch_size,
                    None if validation_data is None else (Xv, yv), verbose, shuffle, callbacks,
                    schedule, history, dp, start, step)
        call_callbacks(callbacks, "on_fit_end", model, history)
    finally:
        model._distributed = previous_ctx
    if dp is not None and data_parallel is None:
        dp.close()      # collective, so not on the way out of an exception
    model._fit_progress = None        # a checkpoint needs a fit in progress
    return history


def _epochs(model, X, yt, sw, epochs, batch_size, validation, verbose, shuffle, callbacks,
            schedule, history, dp, start=0, step=0):
    """The epochs of :func:`fit` from epoch ``start`` and schedule step
    ``step`` (0, 0 unless resumed); ``dp``, a DataParallel, or None."""
    n = X.shape[0]
    total_steps = epochs * math.ceil(n / batch_size)
    ctx = None if dp is None else dp.context
    for epoch in range(start, epochs):
        call_callbacks(callbacks, "on_epoch_begin", model, epoch)
        order = model._shuffle_rng.permutation(n) if shuffle else np.arange(n)
        if dp is not None:
            order = dp.epoch_order(order)
        bar = progress_bar(verbose, n, f"epoch {epoch + 1}/{epochs}")
        planned = min(batch_size, n) if dp is None else max(1, int(dp.shares[ctx.rank]))
        model._use_plan(planned, training=True)
        if dp is not None:
            dp.check_placement()
        totals = {}
        t0 = time.perf_counter()
        with model.runtime.session():
            for b, start in enumerate(range(0, n, batch_size)):
                idx = order[start:start + batch_size]
                rows, count = (idx, len(idx)) if dp is None else dp.local_rows(idx)
                if len(rows) != planned:   # the short last batch
                    model._use_plan(len(rows), training=True, fixed_params=True)
                if dp is not None and len(idx) != batch_size:
                    # a collective, so decided by the global batch, the same on every
                    # rank: with unequal shares one rank's rows of the short last batch
                    # may match its plan while another's do not
                    dp.check_placement()
                if schedule is not None:
                    apply_schedule(schedule, model.optimizer, step, total_steps)
                step += 1
                batch = model.runtime.batch_to_device(X, yt, sw, rows)
                if dp is not None:
                    dp.step_begins()
                loss = model.runtime.train_step(*batch)
                dev = model.out_device
                if dev not in totals:
                    totals[dev] = dev.zeros((1,))
                dev.axpy(float(count), loss, totals[dev])
                if bar is not None:
                    bar.update(len(idx))
                    if b % 50 == 0:
                        bar.set_postfix(loss=f"{float(dev.to_host(loss)[0]):.4f}", refresh=False)
                call_callbacks(callbacks, "on_batch_end", model, b)
            fold_weights(model, totals)   # NaN weights turn the sum NaN (no extra read)
            # reading the sums waits for the devices
            epoch_loss = sum(float(d.to_host(t)[0]) for d, t in totals.items())
        if dp is not None:
            epoch_loss = dp.sum(epoch_loss)
        epoch_loss /= n
        dt = time.perf_counter() - t0
        logs = {"loss": epoch_loss, "images_per_s": n / dt, "time_s": dt}
        if dp is not None:
            logs["allreduce_s"] = dp.averager.seconds
            logs["shares"] = dp.shares.tolist()
            dp.averager.reset_stats()
            dp.end_epoch()
        Xv, yv = validation if validation is not None else (None, None)
        record_epoch(model, history, logs, Xv, yv, bar, distributed=ctx)
        if verbose == 2:
            print(epoch_line(epoch, epochs, logs), flush=True)
        check_epoch(model, epoch, epoch_loss, X)
        # where training stands, for a checkpoint written by a callback
        model._fit_progress = {"epoch": epoch + 1, "epochs": epochs, "step": step,
                               "total_steps": total_steps, "n_samples": n,
                               "batch_size": batch_size}
        if dp is not None:
            model._fit_progress["balance"] = dp.balance_state()
        stop = any(call_callbacks(callbacks, "on_epoch_end", model, epoch, logs))
        if dp is not None:
            stop = dp.stop(stop)        # rank 0's callbacks decide for every rank
        if stop:
            break
    if dp is not None:
        dp.verify_replicas()


def distributed_context(distributed, device):
    """The Context of a ``distributed=`` argument, or None for a plain run
    (also for a job of one rank)."""
    if distributed is None or distributed is False:
        return None
    from ..distributed.data_parallel import resolve
    ctx = resolve(distributed, device)
    return ctx if ctx.size > 1 else None


def fit_fused(model, trainer, X, yt, epochs, batch_size, shuffle, validation_data,
              callbacks, schedule, verbose, history):
    """:meth:`Sequential.fit`'s loop on the fused step: the data resident,
    each epoch's shuffle on the device (keyed from the model's shuffle
    generator), the weights written back to the model's layers after every
    epoch (callbacks and validation see them)."""
    n = X.shape[0]
    if validation_data is not None and model.fusion.mode == "always":
        # the validation's inference is fused too, or the fit raises here
        # (before training) with the reason: BatchNorms that train fused may
        # fold into no layer for inference
        model.fusion.decide(model, min(batch_size, len(validation_data[0])), False)
    trainer.set_data(X, yt)
    total = epochs * math.ceil(n / batch_size)
    call_callbacks(callbacks, "on_fit_begin", model)
    for epoch in range(epochs):
        call_callbacks(callbacks, "on_epoch_begin", model, epoch)
        bar = progress_bar(verbose, n, f"epoch {epoch + 1}/{epochs} (fused)")
        if getattr(trainer, "orders_on_host", False):
            # the CPU trainer takes the layer path's own order: the same epochs as _epochs
            key, order = None, (model._shuffle_rng.permutation(n) if shuffle else False)
        else:
            key = int(model._shuffle_rng.integers(0, 2 ** 31)) if shuffle else None
            order = bool(shuffle)
        h = trainer.fit(epochs=1, batch_size=batch_size, shuffle=order, seed=key,
                        lr_schedule=schedule,
                        step0=epoch * math.ceil(n / batch_size), total_steps=total)[0]
        trainer.write_back()
        logs = {"loss": h["loss"], "images_per_s": h["images_per_s"], "time_s": h["time_s"]}
        if validation_data is not None:
            from ..runtime.fused import FusionUnsupported
            try:
                ev = trainer.evaluate(*validation_data)
            except FusionUnsupported:
                # BatchNorms trained fused that fold into no layer for
                # inference (after an activation or a pool): the model's own
                # evaluate (its policy decides, layer by layer here)
                ev = model.evaluate(*validation_data)
            logs["val_loss"], logs["val_accuracy"] = ev["loss"], ev["accuracy"]
        if bar is not None:
            bar.update(n)
        if verbose == 2:
            print(epoch_line(epoch, epochs, logs), flush=True)
        if end_epoch(model, epoch, logs, history, bar, callbacks, X):
            break
    call_callbacks(callbacks, "on_fit_end", model, history)
    return history


def check_validation(model, validation_data):
    """``(X_val, y_val)`` checked against the built model, or ``(None, None)``."""
    if validation_data is None:
        return None, None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ValueError("validation_data must be a pair (X_val, y_val), got "
                         f"{type(validation_data).__name__}")
    Xv = check_X(validation_data[0], model.input_shape, name="X_val")
    yv = check_targets(validation_data[1], Xv.shape[0], model.loss.name, model.n_outputs,
                       name="y_val")
    return Xv, yv


def record_epoch(model, history, logs, Xv, yv, bar, distributed=None):
    """Add the validation figures (``Xv`` not None; evaluated over the ranks
    of ``distributed``, a Context, when given) to an epoch's ``logs``,
    append them to ``history``, close the epoch's progress ``bar``; returns ``logs``."""
    if Xv is not None:
        ev = model._evaluate(Xv, yv, None, distributed=distributed)
        logs["val_loss"] = ev["loss"]
        if "accuracy" in ev:
            logs["val_accuracy"] = ev["accuracy"]
    for key, value in logs.items():
        history.setdefault(key, []).append(value)
    if bar is not None:
        bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()
                         if k != "time_s" and isinstance(v, (int, float))})
        bar.close()
    return logs


def end_epoch(model, epoch, logs, history, bar, callbacks, X=None):
    """An epoch's logs into ``history`` and its bar; raises on a diverged
    loss (:func:`hetnet.model.health.check_epoch`'s diagnosis, from the
    weights written back and the inputs ``X``); returns True when a callback
    stops training."""
    for key, value in logs.items():
        history.setdefault(key, []).append(value)
    if bar is not None:
        bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k != "time_s"})
        bar.close()
    check_epoch(model, epoch, logs["loss"], X)
    return any(call_callbacks(callbacks, "on_epoch_end", model, epoch, logs))


def fused_unsupported(sample_weight, callbacks, distributed=None, optimizer=None,
                      resuming=False):
    """What a fit / predict call asks for that the fused step does not do
    ("" when nothing)."""
    if sample_weight is not None:
        return "the call has sample weights"
    if resuming:
        return "the fit resumes from a checkpoint (the fused epochs start at the first)"
    if distributed is not None:
        return "the fit is data-parallel over MPI ranks"
    if optimizer is not None:
        from ..runtime.fused import optimizer_unsupported
        reason = optimizer_unsupported(optimizer)
        if reason:
            return reason
    from ..callbacks import Callback, ModelCheckpoint
    for cb in callbacks or ():
        hook = getattr(type(cb), "on_batch_end", None)
        if hook is not None and hook is not Callback.on_batch_end:
            return f"callback {type(cb).__name__} has on_batch_end (the fused epoch has no host-side batches)"
        if isinstance(cb, ModelCheckpoint):
            return (f"callback {type(cb).__name__} saves the optimizer's state, which the fused "
                    "trainer keeps on its device")
    return ""


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


def progress_bar(verbose, total, desc, unit="img"):
    if verbose != 1:
        return None
    import sys
    from tqdm.auto import tqdm     # loaded only when a bar is asked for
    if not getattr(sys.stderr, "isatty", lambda: False)():
        # a file or pipe keeps every carriage return: a few updates, not thousands
        return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=True,
                    mininterval=30.0, maxinterval=60.0, ncols=80, ascii=True)
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=True,
                dynamic_ncols=True)


__all__ = ["History", "fit", "fit_fused", "fused_unsupported", "call_callbacks", "progress_bar",
           "epoch_line", "distributed_context", "check_validation", "record_epoch"]
