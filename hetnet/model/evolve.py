"""Training by a metaheuristic: ``model.fit(X, y, optimizer=hn.SHADEILS(...), max_evals=...)``.

The network is a vectorised objective over flat weight vectors
(:meth:`hetnet.Sequential.flat_weights` order):

* **an evaluation** is the loss of one weight vector over the whole
  training set (the thesis's protocol, section 6.5: the error over the
  training set), the layers in training mode as in a gradient step; a
  population of P is P evaluations in one batched device pass
  (:meth:`hetnet.runtime.Runtime.population_loss`); an L-BFGS loss and
  gradient (SHADE-ILS's local search, over the whole training set) is one
  evaluation, and so is the point a hybrid's gradient epoch returns.  The
  gradient epoch itself (its mini-batch steps) is not counted: it is no
  loss the search reads.  ``max_evals`` is never exceeded.
* **an epoch** (what History, callbacks, early stopping and the progress
  bar see) is ``ceil(max_evals / epochs)`` evaluations, ``epochs``
  defaulting to 20 (the thesis: 4,200 evaluations in 20 epochs of 210); it
  ends at the first generation (or local search) boundary past that count.
  At each epoch end the model holds the best weight vector evaluated so
  far, and that is what the epoch's logs, validation and callbacks see.
* **the initial population** is drawn by the layers' own initialisers
  (``init=`` of Dense and Conv2D; the thesis uses Glorot), each individual
  a fresh initialisation from the population's random stream, which
  depends only on the model's ``seed``: the same seed gives every strategy
  the same population, and its first individual is the weights the model
  was built with (what a gradient run from the same seed starts from).
  ``seed=None``: a fresh population every call.
* **the hybrids** (``gd=hn.Adam(...)``): every ``gd_every`` evaluations,
  one mini-batch epoch of that gradient optimizer (the ordinary fit step,
  ``batch_size``, shuffled) starts from the best individual; the result
  replaces it when its loss is not higher.  The optimizer's state (Adam's
  moments) carries from one gradient epoch to the next, and so, in a
  distributed fit, does the split of the mini-batches over the ranks: with
  ``balance="speed"`` each gradient epoch splits by the speeds the previous
  one measured (the first by the population's evaluation speeds), as the
  epochs of a gradient fit do.
* **BatchNorm**: the evaluations normalise with each candidate's own batch
  statistics (training mode) and never touch the running statistics; at
  each epoch end the running statistics are recomputed for the best
  individual from one training-mode pass over the whole training set
  (momentum 1 for that pass), so validation and prediction use the
  statistics of the weights they run with.
"""

import copy
import math
import time

import numpy as np

from .._validation import check_positive_int
from ..layers import BatchNorm1D, BatchNorm2D
from ..metaheuristics import Metaheuristic, Problem
from ..optim import SGD, Optimizer, get_optimizer
from ..runtime.fused import FusedTrainer, FusionUnsupported
from ..runtime.fused_cpu import CPU_DECISIONS, CPUFusedTrainer, chain_signature, is_cpu_device
from . import fit as _fit

#: epochs a metaheuristic's budget is split into when ``epochs`` is not given (the thesis's 20)
DEFAULT_EPOCHS = 20


def _init_host(layer, rng):
    """A fresh initialisation of ``layer``'s parameters, host arrays in ``layer.params`` order."""
    subs = getattr(layer, "sublayers", None)
    if subs:
        return [a for sub in subs for a in _init_host(sub, rng)]
    host = layer.init_params(rng)
    return [np.asarray(host[k], dtype=np.float64).reshape(-1) for k in layer.params]


def layer_sampler(model):
    """``sampler(rng, n) -> (n, n_params)``: ``n`` individuals, each the
    model's layers initialised afresh from ``rng`` (their own initialisers)."""
    dim = model.count_params()

    def sampler(rng, n):
        pop = np.empty((n, dim))
        for i in range(n):
            parts = [a for layer in model.layers for a in _init_host(layer, rng)]
            pop[i] = np.concatenate(parts) if parts else np.zeros(0)
        return pop
    return sampler


def _batchnorms(layers):
    for layer in layers:
        if isinstance(layer, (BatchNorm1D, BatchNorm2D)):
            yield layer
        yield from _batchnorms(getattr(layer, "sublayers", ()) or ())


def recompute_batchnorm_stats(model, X):
    """Set every BatchNorm's running statistics to those of one
    training-mode pass over all of host ``X`` with the current weights."""
    bns = list(_batchnorms(model.layers))
    if not bns:
        return
    rt = model.runtime
    saved = [bn.momentum for bn in bns]
    try:
        for bn in bns:
            bn.momentum = 1.0
        with rt.session():
            rt.forward(rt.gather_inputs(X, slice(None)), True)
    finally:
        for bn, m in zip(bns, saved):
            bn.momentum = m


def _gradient_epoch(model, X, yt, sw, gd_opt, batch_size, shuffle, ctx=None, planned=None,
                    shards=None):
    """The hybrid's step: one mini-batch epoch of ``gd_opt`` from flat weights ``x``
    (data-parallel over ``ctx``'s ranks when given: every rank passes the
    whole set, each takes its rows of every mini-batch).  ``planned()``: the
    rows the whole-set evaluations are planned for (default all of ``X``).

    Data-parallel, the gradient epochs share one
    :class:`~hetnet.distributed.DataParallel`, so with ``balance="speed"``
    each splits its mini-batches by the speeds the previous one measured
    (the first by the speeds ``shards``, the population's, measured so
    far), as the epochs of a gradient fit do."""
    from ..distributed.shares import split_batch
    kept = []

    def data_parallel():
        if ctx is None:
            return None
        if not kept:
            from ..distributed.data_parallel import DataParallel
            dp = DataParallel(ctx, model, batch_size)
            if (shards is not None and isinstance(dp.balance, str) and dp.balance == "speed"):
                dp.speeds = np.array(shards.speeds, dtype=np.float64)
                dp.shares = split_batch(dp.batch_size, dp.speeds, dp.minimum)
            kept.append(dp)
        return kept[0]

    def gd(x):
        model.runtime.set_flat_weights(x)
        history = model.history
        try:
            _fit.fit(model, X, yt, epochs=1, batch_size=batch_size, optimizer=gd_opt,
                     shuffle=shuffle, sample_weight=sw, check_input=False,
                     distributed=False if ctx is None else ctx,
                     data_parallel=data_parallel())
        finally:
            model.history = history
            # back to the placement of the whole-set evaluations
            model._use_plan(X.shape[0] if planned is None else planned(), training=True)
        return model.runtime.flat_weights().astype(np.float64)
    # the shared DataParallel's averager holds a shared-memory window: freed
    # by the search at its end (a collective, every rank there)
    gd.close = lambda: kept[0].close() if kept else None
    return gd


class _Shard:
    """The rows of the training set this process evaluates on: all of them,
    or its rank's shard (``shards``, a PopulationShards)."""

    def __init__(self, X, y, w, shards=None):
        rows = slice(None) if shards is None else shards.rows
        self.X, self.y = X[rows], y[rows]
        self.w = None if w is None else w[rows]
        self.n = self.X.shape[0]
        self.computing = (lambda: None) if shards is None else shards.computing


def _fused_value_and_grad(model, X, yt, sw, layered=None, keep=None):
    """The whole-set loss and gradient (the L-BFGS evaluations) through the
    fused kernels of :class:`hetnet.runtime.fused.FusedTrainer`, the training
    set resident on the device: one forward + backward launch pair instead
    of a layer-by-layer pass with the set uploaded again each time.

    Used when the model's fusion policy allows it (``fuse='auto'`` on an
    OpenCL GPU, or ``fuse='always'``) and the chain, the loss and the call
    have a fused form (no sample weights).  Returns ``(value_and_grad,
    path)``: ``value_and_grad`` None and ``path`` the reason when the layer
    path is kept, else ``path`` ``"fused on <device>"``.

    A model on the CPU device evaluates through
    :class:`hetnet.runtime.fused_cpu.CPUFusedTrainer`'s per-tile kernel;
    under ``fuse='auto'`` one evaluation each way (``layered``, the layer
    path's ``value_and_grad``) is timed at the model's weights and the
    faster kept.  The trainer made, with the set resident, is put in
    ``keep`` (a dict, under ``"trainer"``): :func:`_fused_population` takes
    a CPU one, and a data-parallel search makes both again when the shares
    are re-balanced (the rank's rows change).
    """
    policy = model.fusion
    try:
        if policy.mode == "never":
            raise FusionUnsupported("fuse='never'")
        dev = policy.usable_device(
            model, "the fused loss has no sample weights" if sw is not None else "", X.nbytes)
        # the optimizer is never run: the trainer only computes the gradient
        if is_cpu_device(dev):
            trainer = CPUFusedTrainer(model, device=dev, batch_size=X.shape[0],
                                      optimizer=SGD(lr=0.01))
            trainer.set_data(X, yt)
            if keep is not None:
                keep["trainer"] = trainer
            if policy.mode == "auto" and layered is not None:
                key = ("whole-set", chain_signature(model), X.shape[0], dev.num_threads)
                use, why = _faster(key, trainer.flat_loss_and_gradient, layered,
                                   model.flat_weights, "evaluation", dev.name, "layer by layer")
                return (trainer.flat_loss_and_gradient if use else None), why
            return trainer.flat_loss_and_gradient, f"fused on {dev.name}"
        trainer = FusedTrainer(model, device=dev, batch_size=X.shape[0],
                               optimizer=SGD(lr=0.01))
        trainer.set_data(X, yt)
        if keep is not None:
            keep["trainer"] = trainer
    except FusionUnsupported as exc:
        if policy.mode == "always":
            raise FusionUnsupported(f"fuse='always', but the fused gradient cannot run: "
                                    f"{exc}") from None
        return None, f"layer by layer: {exc}"

    def value_and_grad(x):
        trainer.set_flat_weights(x)
        loss, grads = trainer.loss_and_gradients(None, None)
        return loss, np.concatenate([g.reshape(-1) for g in grads]).astype(np.float64)
    return value_and_grad, f"fused on {dev.name}"


def _fused_population(model, trainer, layered, pop_size):
    """The population pass (every candidate's loss over the whole set)
    through the fused CPU kernel (:meth:`CPUFusedTrainer.population_loss
    <hetnet.runtime.fused_cpu.CPUFusedTrainer.population_loss>`), or None.

    ``trainer``: the one :func:`_fused_value_and_grad` made, None where it
    made none or made one for an OpenCL device (no fused form, sample
    weights: the reason is in the gradient path; the fused GPU trainer has
    no population pass).  Under ``fuse='auto'`` one pass each way of
    ``pop_size`` candidates at the model's weights is timed (``layered``,
    the runtime's batched pass) and the faster kept, once per chain, set
    size, thread count and population size in a process.  Returns
    ``(population_loss or None, path)``.
    """
    if not isinstance(trainer, CPUFusedTrainer):
        return None, "batched, layer by layer"
    if model.fusion.mode != "auto":
        return trainer.population_loss, f"fused on {trainer.device.name}"
    key = ("population", chain_signature(model), trainer._data[2], trainer.threads, pop_size)
    use, why = _faster(
        key, trainer.population_loss, layered,
        lambda: np.repeat(model.flat_weights()[None, :], pop_size, axis=0).astype(np.float32),
        f"pass of {pop_size}", trainer.device.name, "batched, layer by layer")
    return (trainer.population_loss if use else None), why


def _faster(key, fused, layered, argument, per, device, layered_name):
    """``(use fused, reason)``: one call each of ``fused(argument())`` and
    ``layered(argument())`` timed, the faster kept, once per ``key`` in a
    process (:data:`CPU_DECISIONS`, as the CPU choices of
    :class:`~hetnet.sched.fusion.FusionPolicy`: the same seed, the same
    search)."""
    chosen = CPU_DECISIONS.get(key)
    if chosen is None:
        x = argument()
        times = []
        for run in (fused, layered):
            t0 = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - t0)
        measured = (f"measured per {per}: fused on {device} {times[0] * 1e3:.1f} ms, "
                    f"{layered_name} {times[1] * 1e3:.1f} ms")
        chosen = CPU_DECISIONS[key] = (
            (True, f"fused on {device} ({measured})") if times[0] < times[1]
            else (False, f"{layered_name}: {measured}"))
    return chosen


def evolve(model, X, y, optimizer, max_evals, epochs=None, batch_size=32,
           validation_data=None, verbose=0, shuffle=True, sample_weight=None,
           callbacks=None, check_input=True, distributed=False, resume_from=None):
    """Train ``model`` with a :class:`~hetnet.metaheuristics.Metaheuristic`.

    Parameters
    ----------
    X, y, sample_weight, validation_data, callbacks, check_input :
        As :func:`hetnet.model.fit.fit`.
    optimizer : SHADE or SHADEILS
        Its ``gd`` may be a hetnet Optimizer (or its name): the hybrid.
    max_evals : int >= 1
        Loss evaluations allowed (see the module's notes); never exceeded.
    epochs : int or None
        Records the budget is split into (default 20).
    batch_size : int
        Of the hybrid's gradient epochs (the evaluations use the whole set).
    verbose : int
        1: a progress bar per epoch, counting evaluations.
    distributed : bool or hetnet.distributed.Context
        Data-parallel over the ranks of an MPI job (every rank calls ``fit``
        with the same data and arguments): each rank evaluates every
        candidate on its shard of the training set and the losses (and
        L-BFGS gradients) are summed over the ranks, one ``Allreduce`` per
        population; the search, seeded by rank 0's seed, is the same on
        every rank (:mod:`hetnet.distributed.population`).  A hybrid's
        gradient epoch is a data-parallel fit.  Evaluations are counted as
        in one process.  History gains ``shares`` (rows per rank) and
        ``allreduce_s`` per epoch.
    resume_from : str or path-like, optional
        A checkpoint that :class:`hetnet.callbacks.ModelCheckpoint` wrote
        in a metaheuristic fit with the same ``optimizer`` class and
        settings, ``max_evals``, ``epochs``, samples and ``batch_size``: the
        search continues after the checkpoint's epoch from everything it
        holds (the population and its losses, SHADE's memories and archive,
        SHADE-ILS's phase, current best and restart counters, the random
        generator, the evaluations used, the best point, a hybrid's
        gradient optimizer and its state, the shuffling and Dropout state,
        the history), as the interrupted run would have: on the CPU bit for
        bit.  A hybrid whose ``gd`` is a Python callable cannot be resumed
        (its state is not the checkpoint's to hold).  In a distributed fit
        every rank reads the same file and the ranks' shards are the
        checkpoint's.

    Returns
    -------
    History
        Per epoch: ``loss`` (the best training loss so far), ``evals``
        (evaluations used so far), ``val_loss`` / ``val_accuracy`` (with
        ``validation_data``), ``images_per_s`` (candidate images evaluated
        per second), ``time_s``.  ``history.n_evals`` is the total and
        ``history.result`` the optimizer's
        :class:`~hetnet.metaheuristics.OptimizeResult`;
        ``history.gradient_path`` how the whole-set gradients (L-BFGS) ran:
        ``"fused on <device>"`` or ``"layer by layer: <reason>"``;
        ``history.population_path`` how the population passes ran:
        ``"fused on <device>"`` (the CPU's per-tile kernel, every candidate
        on a tile while it is in cache) or ``"batched, layer by layer"``
        (:meth:`hetnet.runtime.Runtime.population_loss`), with what was
        measured where ``fuse='auto'`` chose.
    """
    if not isinstance(optimizer, Metaheuristic):
        raise TypeError(f"optimizer must be a hetnet Metaheuristic, got {optimizer!r}")
    if max_evals is None:
        raise ValueError(f"{type(optimizer).__name__} needs max_evals= (loss evaluations "
                         "allowed), e.g. fit(X, y, optimizer=..., max_evals=4200)")
    max_evals = check_positive_int("max_evals", max_evals)
    epochs = DEFAULT_EPOCHS if epochs is None else check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    settings = copy.copy(optimizer)   # its settings checked before any work (gd below)
    settings.gd = None
    settings._validate()
    gd = optimizer.gd
    if isinstance(gd, (str, Optimizer)):
        gd = get_optimizer(gd)
    elif gd is not None and not callable(gd):
        raise TypeError(f"gd must be a hetnet Optimizer, its name, or a callable gd(x) -> x, "
                        f"got {gd!r}")
    X, yt, sw = model._prepare(X, y, sample_weight, check_input)
    Xv, yv = _fit.check_validation(model, validation_data)
    callbacks = list(callbacks or [])
    n = X.shape[0]
    rt = model.runtime
    ctx = _fit.distributed_context(distributed, model.placement.primary)
    shards = None
    seed = model.seed
    if ctx is not None:
        from ..distributed.population import PopulationShards
        shards = PopulationShards(ctx, model, n)
        shards.begin()
        seed = shards.seed(seed)
        if not ctx.is_root:
            verbose = 0
    per_epoch = math.ceil(max_evals / epochs)
    history = _fit.History(loss=[], evals=[], val_loss=[], val_accuracy=[], images_per_s=[],
                           time_s=[])
    first, resumed = 0, None
    if resume_from is not None:
        from .checkpoint import resume_search
        first, done, resumed, gd_opt, balance = resume_search(
            model, resume_from, optimizer, epochs, max_evals, n, batch_size)
        history.update({k: list(v) for k, v in done.items()})
        if gd_opt is not None:
            gd = gd_opt
        if shards is not None and balance is not None:
            shards.restore_balance(balance)
    local = _Shard(X, yt, sw, shards)
    model._use_plan(local.n, training=True)

    def layered_pop(pop):
        with rt.session():
            return rt.population_loss(pop.astype(np.float32), local.X, local.y, local.w)

    def layered_vg(x):
        rt.set_flat_weights(x)
        with rt.session():
            loss, _ = rt.loss_and_gradients(local.X, local.y, local.w, read_gradients=False)
            return loss, rt.flat_gradient().astype(np.float64)

    kept = {}
    fused_vg, gradient_path = _fused_value_and_grad(model, local.X, local.y, local.w,
                                                    layered_vg, keep=kept)
    fused_pop, population_path = _fused_population(model, kept.get("trainer"),
                                                   layered_pop, optimizer.pop_size)

    def fun(pop):
        local.computing()
        losses = (fused_pop or layered_pop)(pop)
        return losses if shards is None else shards.population_loss(losses)

    def value_and_grad(x):
        local.computing()
        loss, grad = (fused_vg or layered_vg)(x)
        return (loss, grad) if shards is None else shards.loss_and_gradient(loss, grad)

    problem = Problem(fun, model.count_params(), max_evals, value_and_grad=value_and_grad,
                      sampler=layer_sampler(model))
    if resumed is not None:
        problem.set_state(resumed)
    user_gd = optimizer.gd
    gd_opt = gd if isinstance(gd, Optimizer) else None
    if gd_opt is not None:
        optimizer.gd = _gradient_epoch(model, X, yt, sw, gd_opt, batch_size, shuffle, ctx,
                                       lambda: local.n, shards)
        model.optimizer = gd_opt     # what ReduceLROnPlateau adjusts; the gradient epochs run it
    model.history = history
    model._fit_progress = None
    previous = model.__dict__.get("_distributed"), model.__dict__.get("_metaheuristic")
    model._distributed = ctx       # what callbacks that write files consult
    model._metaheuristic = (optimizer, gd_opt)    # what callbacks that need to know consult
    from .checkpoint import gd_kind
    search_kind = gd_kind(user_gd)

    def search_entry():
        # the search's state at an epoch's end, for a checkpoint (read only when one is written)
        from .checkpoint import split_state
        state = optimizer.get_state()
        state.update({"problem." + k: v for k, v in problem.get_state().items()})
        values, arrays = split_state(state)
        entry = {"class": type(optimizer).__name__, "settings": optimizer.settings(),
                 "state": values, "gd": search_kind}
        return entry, arrays, gd_opt

    try:
        _fit.call_callbacks(callbacks, "on_fit_begin", model)
        for epoch in range(first, epochs):
            if epoch and problem.remaining <= 0:
                break
            _fit.call_callbacks(callbacks, "on_epoch_begin", model, epoch)
            target = min(max_evals, (epoch + 1) * per_epoch)
            bar = _fit.progress_bar(verbose, target - problem.nfev, f"epoch {epoch + 1}/{epochs}",
                                    unit="eval")
            t0, before = time.perf_counter(), problem.nfev
            if epoch == 0:
                optimizer.start(problem, seed=seed)
                if bar is not None:
                    bar.update(problem.nfev - before)
            k = 0
            while problem.nfev < target:
                done = problem.nfev
                if not optimizer.step(problem):
                    break
                if bar is not None:
                    bar.update(problem.nfev - done)
                    bar.set_postfix(loss=f"{problem.best_f:.4f}", refresh=False)
                _fit.call_callbacks(callbacks, "on_batch_end", model, k)
                k += 1
            dt = time.perf_counter() - t0
            if problem.best_x is not None:
                rt.set_flat_weights(problem.best_x)
                recompute_batchnorm_stats(model, local.X)
                if shards is not None:
                    shards.average_batch_statistics()
            logs = {"loss": float(problem.best_f), "evals": problem.nfev,
                    "images_per_s": (problem.nfev - before) * n / dt, "time_s": dt}
            if shards is not None:
                logs["allreduce_s"] = shards.reduce_s
                logs["shares"] = shards.shares.tolist()
                if shards.end_epoch():      # re-balanced: this rank's rows changed
                    local = _Shard(X, yt, sw, shards)
                    model._use_plan(local.n, training=True)
                    if kept:    # the fused paths hold the old rows: made again
                        kept.clear()
                        fused_vg, gradient_path = _fused_value_and_grad(
                            model, local.X, local.y, local.w, layered_vg, keep=kept)
                        fused_pop, population_path = _fused_population(
                            model, kept.get("trainer"), layered_pop, optimizer.pop_size)
            logs = _fit.record_epoch(model, history, logs, Xv, yv, bar, distributed=ctx)
            model._fit_progress = {"kind": "metaheuristic", "epoch": epoch + 1,
                                   "epochs": epochs, "max_evals": max_evals, "step": 0,
                                   "total_steps": 0, "n_samples": n, "batch_size": batch_size,
                                   "search": search_entry}
            if shards is not None:
                model._fit_progress["balance"] = shards.balance_state()
            stop = any(_fit.call_callbacks(callbacks, "on_epoch_end", model, epoch, logs))
            if shards is not None:
                stop = shards.stop(stop)    # rank 0's callbacks decide for every rank
            if stop:
                break
        if shards is not None:
            shards.verify(problem.best_x)
        history.n_evals = problem.nfev
        history.gradient_path = gradient_path
        history.population_path = population_path
        history.result = optimizer.result(problem, "max_evals reached" if problem.remaining <= 0
                                          else "stopped")
        _fit.call_callbacks(callbacks, "on_fit_end", model, history)
        if gd_opt is not None:
            optimizer.gd.close()
    finally:
        optimizer.gd = user_gd
        model._distributed, model._metaheuristic = previous
        model._fit_progress = None      # a checkpoint needs a fit in progress
    return history


__all__ = ["evolve", "layer_sampler", "recompute_batchnorm_stats", "DEFAULT_EPOCHS"]
