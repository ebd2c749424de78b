"""The training-techniques thesis's grid (its table 1 and chapter 6).

``python -m hetnet experiment thesis-b --part gradient`` runs data sets x
models x strategies and writes ``<part>.json`` and ``<part>.md`` under
``--out``.  The grid:

* data sets: the tabular sets (:data:`hetnet.datasets.THESIS_TABULAR_SETS`:
  Breast Cancer Wisconsin, Wine Quality as classification and as
  regression, Boston Housing) with the MLPs of 1, 2, 5 and 11 hidden layers
  (:func:`hetnet.models.thesis_mlp`); the image sets
  (:data:`hetnet.datasets.THESIS_IMAGE_SETS`: MNIST, Fashion-MNIST, CIFAR-10
  in grey, all 32x32, one channel) with LeNet-5 with BatchNorm, ResNet-15
  and ResNet-57 (:mod:`hetnet.models`).  A set that is not on this machine
  gives cells marked "not run: data absent" with the loader's reason.
* strategies (:data:`STRATEGIES`), by part (:data:`PARTS`): ``gradient``
  runs NAG (``SGD(momentum=0.9, nesterov=True)``), RMSProp and Adam, each
  with PyTorch's default hyper-parameters, as the thesis does (section
  6.4); ``metaheuristic`` runs SHADE, SHADE-ILS and their hybrids with
  gradient descent (section 6.5; :func:`_metaheuristic_strategy`).

The gradient protocol (sections 6.2-6.4), per cell:

1. the data: tabular sets split 70/10/20 with seed 42 and preprocessed as
   the thesis does (:func:`hetnet.datasets.thesis_tabular_split`); image
   sets as 10,000 training images and 5,000 test images halved into
   validation and test, class-balanced (:func:`hetnet.datasets.thesis_image_split`);
2. the model with Glorot initialisation from seed 42, so every strategy and
   batch size starts from the same weights (section 6.3);
3. for each batch size of {32, 64, 128}: the learning-rate finder
   (:meth:`hetnet.Sequential.lr_find`, fastai's "valley" suggestion) with
   the strategy's optimiser at that batch size, then 20 epochs of fastai's
   one-cycle policy (:class:`hetnet.schedules.OneCycle` with its defaults:
   momentum, or Adam's beta1, cycled 0.95-0.85-0.95) peaking at the
   suggestion, the validation loss measured after every epoch and the
   weights of the best epoch restored at the end;
4. the batch size with the lowest best validation loss is the cell's; its
   model's loss on the training and the test set (inference mode) and its
   test metric are reported: balanced accuracy for the tabular
   classification sets (their classes are unbalanced), accuracy for the
   images, R² for regression (section 6.3), with the seconds of that batch
   size's run (finder and training).

Losses are cross-entropy for classification and the mean squared error for
regression.

A long grid survives interruption.  With ``out`` given, ``<part>.json`` and
``<part>.md`` are rewritten after every cell (``pending`` lists the cells
not run yet), and each metaheuristic cell writes a checkpoint of its search
every epoch under ``<out>/checkpoints/`` (removed once the cell is done).
``resume=True`` (``--resume``) keeps the finished cells of ``<part>.json``
that the grid asks for, and continues an interrupted metaheuristic
cell from its checkpoint exactly (:class:`hetnet.callbacks.ModelCheckpoint`);
an interrupted gradient cell starts again (it is minutes at most).  Each
cell records the device it ran on; ``seconds`` in a cell is the sum over the
runs that made it.  ``quick=True`` (``--quick``) runs the same code on a
seconds-long subset (:data:`QUICK`: 2 epochs, batch sizes 32 and 64, 100
training images, MLP-1 and LeNet-5 unless models are named).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..callbacks import Callback

__all__ = ["ExperimentError", "PartNotAvailableError", "PARTS", "Protocol", "QUICK",
           "STRATEGIES", "MODELS", "DATASETS", "run_thesis_b", "write_results",
           "markdown_table"]


class ExperimentError(ValueError):
    """An experiment asked for something the grid does not hold."""


class PartNotAvailableError(RuntimeError):
    """The part of the grid asked for needs strategies hetnet does not have yet."""


# ------------------------------------------------------------------ protocol
@dataclass(frozen=True)
class Protocol:
    """The settings of a run of the grid (the thesis's by default)."""
    epochs: int = 20
    batch_sizes: tuple = (32, 64, 128)
    seed: int = 42
    lr_find_steps: int = 100
    lr_find_range: tuple = (1e-7, 10.0)
    n_train: int = 10000          # image sets: training images
    n_test: int = 5000            # image sets: validation + test images
    image_source: str = "auto"    # MNIST / Fashion-MNIST: full set if found, else the sample
    max_evals: int = 4200         # metaheuristics: loss evaluations over the training set
    pop_size: int = 10            # metaheuristics: population
    gd_batch_size: int = 64       # the hybrids' gradient epochs: batch size (Adam, lr 1e-3)


#: The thesis's protocol.
THESIS = Protocol()
#: A seconds-long subset for tests and CI: same code, tiny sizes.
QUICK = Protocol(epochs=2, batch_sizes=(32, 64), lr_find_steps=8, n_train=100, n_test=40,
                 max_evals=60)
#: Models run by ``quick=True`` unless models are named.
QUICK_MODELS = ("mlp-1", "lenet5")


# -------------------------------------------------------------------- data
@dataclass
class Data:
    """One data set of the grid, split and ready."""
    name: str
    family: str                  # "tabular" or "image"
    task: str                    # "classification" or "regression"
    train: tuple
    val: tuple
    test: tuple
    n_outputs: int

    @property
    def sample_shape(self):
        return tuple(self.train[0].shape[1:])

    @property
    def metric(self):
        if self.task == "regression":
            return "r2"
        return "balanced_accuracy" if self.family == "tabular" else "accuracy"

    @property
    def loss(self):
        return "mse" if self.task == "regression" else "cross_entropy"


def _datasets():
    from ..datasets import THESIS_IMAGE_SETS, THESIS_TABULAR_SETS
    table = {name: ("tabular", task) for name, task in THESIS_TABULAR_SETS.items()}
    table.update({name: ("image", "classification") for name in THESIS_IMAGE_SETS})
    return table


#: name -> (family, task) of every data set of the grid
DATASETS = _datasets()


def load_data(name, protocol):
    """The splits of data set ``name`` under ``protocol``.

    Raises
    ------
    hetnet.datasets.DatasetNotFoundError
        The data is not on this machine.
    """
    from ..datasets import thesis_image_split, thesis_tabular_split
    family, task = DATASETS[name]
    if family == "tabular":
        split = thesis_tabular_split(name, seed=protocol.seed)
        train, val, test = split.train, split.val, split.test
    else:
        train, val, test = thesis_image_split(name, seed=protocol.seed, n_train=protocol.n_train,
                                              n_test=protocol.n_test,
                                              source=protocol.image_source)
    if task == "regression":
        n_outputs = 1
        train, val, test = [(np.ascontiguousarray(X, np.float32),
                             np.asarray(y, np.float32).reshape(-1)) for X, y in (train, val, test)]
    else:
        n_outputs = int(max(int(np.max(y)) for _, y in (train, val, test))) + 1
        train, val, test = [(np.ascontiguousarray(X, np.float32), np.asarray(y, np.int64))
                            for X, y in (train, val, test)]
    return Data(name, family, task, train, val, test, n_outputs)


# ------------------------------------------------------------------ models
@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str                  # the data family it runs on
    build: Callable              # build(data, **sequential_kwargs) -> Sequential


def _mlp(hidden):
    def build(data, **kwargs):
        from ..model.zoo import thesis_mlp
        return thesis_mlp(hidden, data.sample_shape[0], data.n_outputs, init="glorot", **kwargs)
    return build


def _image_model(which):
    def build(data, **kwargs):
        from ..model import zoo as models
        c, h, _ = data.sample_shape
        if which == "lenet5":
            return models.lenet5(c, data.n_outputs, batch_norm=True, input_size=h,
                                 init="glorot", **kwargs)
        return getattr(models, which)(c, data.n_outputs, h, init="glorot", **kwargs)
    return build


#: name -> ModelSpec, in the thesis's order
MODELS = {
    "mlp-1": ModelSpec("mlp-1", "tabular", _mlp(1)),
    "mlp-2": ModelSpec("mlp-2", "tabular", _mlp(2)),
    "mlp-5": ModelSpec("mlp-5", "tabular", _mlp(5)),
    "mlp-11": ModelSpec("mlp-11", "tabular", _mlp(11)),
    "lenet5": ModelSpec("lenet5", "image", _image_model("lenet5")),
    "resnet15": ModelSpec("resnet15", "image", _image_model("resnet15")),
    "resnet57": ModelSpec("resnet57", "image", _image_model("resnet57")),
}


# -------------------------------------------------------------- strategies
@dataclass(frozen=True)
class Strategy:
    """One way of training, a row of the grid.

    ``train(make_model, data, protocol, tick, checkpoint=None, resume=False)``
    trains and returns ``(model, info)``: the model holding the weights to
    report (the best on validation), and a dict of what to record beside the
    losses (it must hold ``"seconds"``); it raises :class:`RunFailed` when no
    run of it could finish.  ``make_model()`` gives a fresh model with the
    grid's initial weights; ``tick(text)`` advances the progress bar by one of
    ``runs(protocol)`` runs; ``checkpoint`` is a path stem the strategy may
    write its files under (``<stem>.npz`` ...), ``resume`` whether to go on
    from them.  ``train`` is None while hetnet lacks the strategy.
    """
    name: str
    part: str
    description: str
    train: Callable | None
    runs: Callable = lambda protocol: 1


class RunFailed(RuntimeError):
    """Every run of a cell diverged or found no learning rate."""


def _optimizer(name):
    from ..optim import Adam, RMSProp, SGD
    # PyTorch's defaults (the thesis's); the learning rate is the finder's
    return {"nag": lambda: SGD(lr=0.01, momentum=0.9, nesterov=True),
            "rmsprop": lambda: RMSProp(),
            "adam": lambda: Adam()}[name]()


def _gradient_strategy(name):
    def train(make_model, data, protocol, tick, checkpoint=None, resume=False):
        # a gradient cell is minutes at most: an interrupted one starts again
        from ..callbacks import EarlyStopping
        from ..schedules import OneCycle
        (Xtr, ytr), val = data.train, data.val
        best, tried = None, []
        for batch in protocol.batch_sizes:
            model, optimizer = make_model(), _optimizer(name)
            t0 = time.perf_counter()
            run = {"batch_size": batch}
            try:
                found = model.lr_find(Xtr, ytr, start_lr=protocol.lr_find_range[0],
                                      end_lr=protocol.lr_find_range[1],
                                      num_steps=protocol.lr_find_steps, batch_size=batch,
                                      optimizer=optimizer, seed=protocol.seed)
                lr = float(found.suggestion)
                run["lr"] = lr
                if not (math.isfinite(lr) and lr > 0):
                    raise FloatingPointError("the learning-rate finder found no descent")
                keep = EarlyStopping(monitor="val_loss", patience=protocol.epochs,
                                     restore_best_weights=True)
                history = model.fit(Xtr, ytr, epochs=protocol.epochs, batch_size=batch,
                                    optimizer=optimizer, validation_data=val,
                                    lr_schedule=OneCycle(lr), callbacks=[keep])
                run.update(val_loss=float(keep.best), best_epoch=int(keep.best_epoch) + 1,
                           fit_train_loss=float(history["loss"][keep.best_epoch]))
            except FloatingPointError as exc:
                run["failed"] = str(exc)
            run["seconds"] = time.perf_counter() - t0
            tried.append(run)
            tick(f"b{batch}")
            if "failed" not in run and (best is None or run["val_loss"] < best[1]["val_loss"]):
                best = (model, run)
        if best is None:
            raise RunFailed("; ".join(f"batch {r['batch_size']}: {r['failed']}" for r in tried))
        model, run = best
        info = {k: run[k] for k in ("batch_size", "lr", "best_epoch", "fit_train_loss",
                                    "seconds")}
        info["per_batch_size"] = tried
        return model, info
    return train


#: the hybrids' gradient descent: Adam at lr 1e-3 (PyTorch's default), one
#: mini-batch epoch on the best individual every ``gd_every`` evaluations
GD_LR = 1e-3


class _BestOnValidation(Callback):
    """The best-validation epoch of a search that may be resumed: its weights
    in ``<stem>-best.npz`` and ``{best_epoch, best, seconds}`` in
    ``<stem>-best.json``, rewritten whenever an epoch beats the best so far
    (the seconds every epoch), so that a resumed fit knows the epochs before
    it.  Without ``stem`` it keeps the weights in memory."""

    def __init__(self, stem=None, resumed=False):
        self.stem = stem
        self.best = self.best_epoch = self.last_epoch = None
        self.seconds_before = 0.0
        self._weights = None
        self._t0 = None
        if resumed:
            with open(stem + "-best.json", encoding="utf-8") as f:
                state = json.load(f)
            self.best, self.best_epoch = state["best"], state["best_epoch"]
            self.seconds_before = float(state["seconds"])

    @property
    def seconds(self):
        return self.seconds_before + (time.perf_counter() - self._t0)

    def on_fit_begin(self, model):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, model, epoch, logs):
        value = float(logs["val_loss"])
        self.last_epoch = epoch
        if math.isfinite(value) and (self.best is None or value < self.best):
            self.best, self.best_epoch = value, epoch
            if self.stem is None:
                self._weights = model.get_weights()
            else:
                model.save(self.stem + "-best.npz")
        if self.stem is not None:
            from ..model.io import atomic_write
            state = json.dumps({"best": self.best, "best_epoch": self.best_epoch,
                                "seconds": self.seconds})
            atomic_write(self.stem + "-best.json", lambda f: f.write(state.encode()))
        return False

    def restore(self, model):
        """Put the best epoch's weights into ``model`` (a no-op when it was the last)."""
        if self.best_epoch is None or self.best_epoch == self.last_epoch:
            return
        if self.stem is None:
            model.set_weights(self._weights)
        else:
            from ..model.sequential import load
            model.set_weights(load(self.stem + "-best.npz").get_weights())


def _checkpoint_files(stem):
    return [stem + suffix for suffix in (".npz", "-best.npz", "-best.json")]


def _metaheuristic_strategy(name):
    """SHADE or SHADE-ILS (``-gd``: hybridised with Adam) from the layers' Glorot
    population: ``protocol.max_evals`` evaluations of the training loss in
    ``protocol.epochs`` epochs, the best individual of each epoch validated
    and the best-validation one reported (the thesis's section 6.5).  With
    ``checkpoint`` (a path stem) the search is checkpointed every epoch and,
    with ``resume`` and a checkpoint there, continued from it."""
    def train(make_model, data, protocol, tick, checkpoint=None, resume=False):
        from ..callbacks import ModelCheckpoint
        from ..metaheuristics import SHADE, SHADEILS
        from ..optim import Adam
        (Xtr, ytr), val = data.train, data.val
        model = make_model()
        hybrid = name.endswith("-gd")
        cls = SHADEILS if name.startswith("shade-ils") else SHADE
        optimizer = cls(pop_size=protocol.pop_size, gd=Adam(lr=GD_LR) if hybrid else None)
        resumed = (checkpoint is not None and resume
                   and all(os.path.exists(f) for f in _checkpoint_files(checkpoint)))
        keep = _BestOnValidation(checkpoint, resumed)
        callbacks = [keep]
        if checkpoint is not None:
            os.makedirs(os.path.dirname(checkpoint) or ".", exist_ok=True)
            callbacks.append(ModelCheckpoint(checkpoint + ".npz"))
        try:
            history = model.fit(Xtr, ytr, optimizer=optimizer, max_evals=protocol.max_evals,
                                epochs=protocol.epochs, batch_size=protocol.gd_batch_size,
                                validation_data=val, callbacks=callbacks,
                                resume_from=checkpoint + ".npz" if resumed else None)
        except FloatingPointError as exc:
            raise RunFailed(str(exc)) from None
        seconds = keep.seconds
        tick(name)
        if keep.best_epoch is None:
            raise RunFailed("no epoch had a finite validation loss")
        keep.restore(model)
        info = {"batch_size": protocol.gd_batch_size if hybrid else None,
                "lr": GD_LR if hybrid else None,
                "best_epoch": int(keep.best_epoch) + 1,
                "fit_train_loss": float(history["loss"][keep.best_epoch]),
                "evals": int(history.n_evals), "pop_size": protocol.pop_size,
                "gradient_path": history.gradient_path,
                "population_path": history.population_path,
                "curve": {"evals": [int(e) for e in history["evals"]],
                          "loss": [float(v) for v in history["loss"]],
                          "val_loss": [float(v) for v in history["val_loss"]]},
                "seconds": seconds}
        if resumed:
            info["resumed"] = True
        return model, info
    return train


def _metaheuristic(name, description):
    return Strategy(name, "metaheuristic", description, _metaheuristic_strategy(name))


#: name -> Strategy, in the thesis's order
STRATEGIES = {
    "nag": Strategy("nag", "gradient", "NAG: SGD(momentum=0.9, nesterov=True)",
                    _gradient_strategy("nag"), lambda p: len(p.batch_sizes)),
    "rmsprop": Strategy("rmsprop", "gradient", "RMSProp (PyTorch's defaults)",
                        _gradient_strategy("rmsprop"), lambda p: len(p.batch_sizes)),
    "adam": Strategy("adam", "gradient", "Adam (PyTorch's defaults)",
                     _gradient_strategy("adam"), lambda p: len(p.batch_sizes)),
    "shade": _metaheuristic("shade", "SHADE (Tanabe and Fukunaga 2013)"),
    "shade-ils": _metaheuristic("shade-ils", "SHADE-ILS with its L-BFGS local search only"),
    "shade-gd": _metaheuristic("shade-gd", "SHADE hybridised with gradient descent (Adam)"),
    "shade-ils-gd": _metaheuristic("shade-ils-gd",
                                   "SHADE-ILS hybridised with gradient descent (Adam)"),
}

#: part -> its strategies
PARTS = {
    "gradient": tuple(n for n, s in STRATEGIES.items() if s.part == "gradient"),
    "metaheuristic": tuple(n for n, s in STRATEGIES.items() if s.part == "metaheuristic"),
}
PARTS["all"] = PARTS["gradient"] + PARTS["metaheuristic"]


# ------------------------------------------------------------------- grid
def _select(kind, given, known):
    if given is None:
        return list(known)
    given = [given] if isinstance(given, str) else list(given)
    if not given:
        raise ExperimentError(f"no {kind} given; known: {', '.join(known)}")
    unknown = [g for g in given if g not in known]
    if unknown:
        raise ExperimentError(f"unknown {kind} {', '.join(map(repr, unknown))}; known: "
                              f"{', '.join(known)}")
    return list(dict.fromkeys(given))


def plan_grid(part="gradient", datasets=None, models=None, strategies=None, quick=False):
    """The cells ``(dataset, model, strategy)`` a run would hold, checked.

    Raises
    ------
    ExperimentError
        An unknown part, data set, model or strategy, a strategy outside the
        part, or a choice of data sets and models with no cell in common.
    PartNotAvailableError
        A strategy of the choice is not in hetnet yet.
    """
    if part not in PARTS:
        raise ExperimentError(f"unknown part {part!r}; known: {', '.join(PARTS)}")
    strategies = _select("strategies", strategies if strategies is not None else PARTS[part],
                         PARTS[part])
    missing = [s for s in strategies if STRATEGIES[s].train is None]
    if missing:
        raise PartNotAvailableError(
            f"the {part} part is not available yet: hetnet cannot train a model by "
            f"{', '.join(STRATEGIES[s].description for s in missing)}; run the part's other "
            "strategies (--strategies)")
    datasets = _select("data sets", datasets, DATASETS)
    if models is None and quick:
        models = QUICK_MODELS
    models = _select("models", models, MODELS)
    cells = [(d, m, s) for d in datasets for m in models for s in strategies
             if MODELS[m].family == DATASETS[d][0]]
    if not cells:
        raise ExperimentError(
            f"no cell: models {', '.join(models)} run on "
            f"{' and '.join(sorted({MODELS[m].family for m in models}))} sets, data sets "
            f"{', '.join(datasets)} are {' and '.join(sorted({DATASETS[d][0] for d in datasets}))}")
    return cells


def _progress(total, enabled):
    from tqdm.auto import tqdm
    # disable=None: tqdm stays quiet when stderr is not a terminal
    return tqdm(total=total, desc="thesis-b", unit="run", file=sys.stderr, dynamic_ncols=True,
                disable=None if enabled is None else not enabled)


def _resolve_device(device, threads=None):
    from ..devices import resolve
    # 'auto' stays a placement policy: each model places its layers
    return resolve("auto" if device is None else device, threads, allow_auto=True,
                   threads_param="--threads")


def _host():
    import numpy
    from .._version import __version__
    return {"hetnet": __version__, "python": platform.python_version(),
            "numpy": numpy.__version__, "machine": platform.machine(),
            "processor": platform.processor(), "cpus": os.cpu_count()}


def _previous_cells(out, part, results):
    """The finished cells of ``<out>/<part>.json``, by ``(dataset, model,
    strategy)``, and that file's seconds; refuses a file of another
    protocol (its cells are not this run's)."""
    path = os.path.join(out, part + ".json")
    if not os.path.exists(path):
        return {}, 0.0
    try:
        with open(path, encoding="utf-8") as f:
            before = json.load(f)
        protocol, quick, cells = before["protocol"], before["quick"], before["cells"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExperimentError(f"--resume: {path} is not a thesis-b results file ({exc})") from None
    if protocol != results["protocol"] or bool(quick) != results["quick"]:
        raise ExperimentError(
            f"--resume: {path} was run with another protocol ({protocol}, quick={quick}); "
            f"this run's is {results['protocol']}, quick={results['quick']}: give the same "
            "settings, or another --out")
    device = before.get("device")
    done = {}
    for c in cells:
        if c.get("status") == "ok":
            c.setdefault("device", device)     # files written before cells named theirs
            done[(c["dataset"], c["model"], c["strategy"])] = c
    return done, float(before.get("seconds") or 0.0)


def _grid_order(cell):
    """A cell's place in the grid: data sets, models, strategies in their tables' order."""
    return tuple(list(table).index(cell[key]) if cell[key] in table else len(table)
                 for table, key in ((DATASETS, "dataset"), (MODELS, "model"),
                                    (STRATEGIES, "strategy")))


def _devices(cells, fallback):
    return list(dict.fromkeys(c.get("device", fallback) for c in cells)) or [fallback]


def run_thesis_b(part="gradient", datasets=None, models=None, strategies=None, device="cpu",
                 quick=False, protocol=None, progress=None, out=None, threads=None,
                 resume=False):
    """Run the thesis's grid and return its results (and write them to ``out``).

    Parameters
    ----------
    part : {"gradient", "metaheuristic", "all"}
    datasets, models, strategies : list of str, optional
        Subsets of :data:`DATASETS`, :data:`MODELS` and the part's
        :data:`STRATEGIES` (default: all; with ``quick``, models
        :data:`QUICK_MODELS`).
    device : str or Device
        Where the models run (``"cpu"``, ``"gpu"``, ``"opencl:P:D"``,
        ``"auto"``, ...).
    quick : bool
        Use :data:`QUICK` instead of the thesis's protocol.
    protocol : Protocol, optional
        Overrides ``quick``'s choice.
    progress : bool or None
        A progress bar on stderr; None: only when stderr is a terminal.
    out : path, optional
        Folder to write ``<part>.json`` and ``<part>.md`` into (after every
        cell), and the metaheuristic cells' checkpoints (``checkpoints/``).
    threads : int, optional
        CPU threads (``device="cpu"`` only; default: the CPU device's own).
    resume : bool
        Go on from what an earlier run with the same protocol left in
        ``out``: its finished cells are kept (those outside this run's grid
        too, so that a grid can be filled in by several narrower runs), an
        interrupted metaheuristic cell continues from its checkpoint; the
        other cells run.

    Returns
    -------
    dict
        ``{"experiment", "part", "quick", "protocol", "host", "device",
        "seconds", "cells": [...]}`` (``device``: the devices of the cells,
        joined by ", "; ``seconds``: of all the runs that made the file);
        each cell has ``dataset``, ``model``, ``strategy``, ``task``,
        ``device``, ``metric`` (its name), ``status`` (``"ok"``,
        ``"not run: data absent"`` or ``"failed"``) and, when ``"ok"``,
        ``train_loss``, ``val_loss``, ``test_loss``, ``score`` (the metric's
        value), ``seconds`` and what the strategy records; otherwise ``reason``.
    """
    from ..datasets import DatasetNotFoundError
    cells = plan_grid(part, datasets, models, strategies, quick)
    if resume and out is None:
        raise ExperimentError("resume needs out: the folder of the run to go on from")
    protocol = protocol or (QUICK if quick else THESIS)
    dev = _resolve_device(device, threads)
    dev_name = dev if isinstance(dev, str) else dev.name
    results = {"experiment": "thesis-b", "part": part, "quick": bool(quick),
               "protocol": _jsonable(dataclasses.asdict(protocol)), "host": _host(),
               "device": dev_name, "cells": []}
    done, seconds_before = _previous_cells(out, part, results) if resume else ({}, 0.0)
    t_all = time.perf_counter()
    loaded = {}
    bar = _progress(sum(STRATEGIES[s].runs(protocol) for _, _, s in cells), progress)

    # a narrower resumed run keeps the file's other finished cells
    results["cells"] = [c for key, c in done.items() if key not in set(cells)]

    def save(pending):
        results["cells"].sort(key=_grid_order)
        results["device"] = ", ".join(_devices(results["cells"], dev_name))
        results["seconds"] = seconds_before + time.perf_counter() - t_all
        results["pending"] = [" ".join(c) for c in pending]
        if not pending:
            del results["pending"]
        if out is not None:
            written = _jsonable(results)
            write_results(written, out)
            results["plots"] = written["plots"]

    try:
        for i, (name, model_name, strategy_name) in enumerate(cells):
            family, task = DATASETS[name]
            strategy = STRATEGIES[strategy_name]
            if (name, model_name, strategy_name) in done:
                results["cells"].append(done[(name, model_name, strategy_name)])
                bar.update(strategy.runs(protocol))
                continue
            if i and out is not None:
                save(cells[i:])
            cell = {"dataset": name, "model": model_name, "strategy": strategy_name,
                    "task": task, "device": dev_name}
            results["cells"].append(cell)
            if name not in loaded:
                try:
                    loaded[name] = load_data(name, protocol)
                except DatasetNotFoundError as exc:
                    loaded[name] = exc
            data = loaded[name]
            if isinstance(data, Exception):
                cell.update(status="not run: data absent", reason=str(data))
                bar.update(strategy.runs(protocol))
                continue
            cell["metric"] = data.metric

            def make_model(spec=MODELS[model_name], data=data):
                return spec.build(data, loss=data.loss, device=dev, seed=protocol.seed)

            def tick(text, where=f"{name} {model_name} {strategy_name}"):
                bar.set_description(f"{where} {text}", refresh=False)
                bar.update(1)

            stem = (None if out is None else
                    os.path.join(out, "checkpoints", f"{name}_{model_name}_{strategy_name}"))
            t0 = time.perf_counter()
            try:
                model, info = strategy.train(make_model, data, protocol, tick,
                                             checkpoint=stem, resume=resume)
            except RunFailed as exc:
                cell.update(status="failed", reason=str(exc),
                            cell_seconds=time.perf_counter() - t0)
                continue
            ev = {split: model.evaluate(*getattr(data, split), metrics=(data.metric,))
                  for split in ("train", "val", "test")}
            cell.update(status="ok", n_params=model.count_params(),
                        train_loss=ev["train"]["loss"], val_loss=ev["val"]["loss"],
                        test_loss=ev["test"]["loss"], score=ev["test"][data.metric],
                        val_score=ev["val"][data.metric], **info,
                        cell_seconds=time.perf_counter() - t0)
            if stem is not None:
                for f in _checkpoint_files(stem):
                    if os.path.exists(f):
                        os.remove(f)
    finally:
        bar.close()
    save([])
    if out is not None and os.path.isdir(os.path.join(out, "checkpoints")):
        try:
            os.rmdir(os.path.join(out, "checkpoints"))     # only when every cell finished
        except OSError:
            pass
    return _jsonable(results)


def _jsonable(obj):
    """Plain Python numbers (non-finite ones as None) for ``json``."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


# ---------------------------------------------------------------- output
METRIC_NAMES = {"balanced_accuracy": "balanced accuracy", "accuracy": "accuracy", "r2": "R²"}


def _num(v, digits=4):
    return "—" if v is None else f"{v:.{digits}g}"


def _device_line(results):
    devices = _devices(results["cells"], results["device"])
    if len(devices) == 1:
        return f"Device {devices[0]}"
    where = {d: [] for d in devices}
    several = len({c["dataset"] for c in results["cells"]}) > 1
    for c in results["cells"]:
        name = f"{c['dataset'] + ' ' if several else ''}{c['model']} {c['strategy']}"
        where[c.get("device", results["device"])].append(name)
    return "Devices: " + "; ".join(f"{d} ({', '.join(cells)})" for d, cells in where.items())


def markdown_table(results):
    """The results as markdown: one table a data set, a row a model and
    strategy (training loss, test loss, the metric on test, seconds)."""
    p = results["protocol"]
    parts = {STRATEGIES[c["strategy"]].part for c in results["cells"]}
    about = []
    if "gradient" in parts:
        about.append(
            f"Gradient descent: {p['epochs']} epochs of one-cycle at the LR finder's "
            f"suggestion, batch size from {', '.join(map(str, p['batch_sizes']))} chosen on "
            "validation loss; s: seconds of the chosen batch size's LR finder and training.")
    if "metaheuristic" in parts:
        about.append(
            f"Metaheuristics: population {p['pop_size']}, {p['max_evals']:,} evaluations of the "
            f"loss over the training set in {p['epochs']} epochs, the best individual of each "
            f"epoch validated; the hybrids (-gd) run one epoch of Adam (lr {GD_LR:g}, batch "
            f"{p['gd_batch_size']}) on the best individual every 20 x population evaluations "
            "(batch and peak lr are the hybrids'); s: seconds of the search.")
    lines = [f"# thesis-b, part {results['part']}" + (" (quick)" if results["quick"] else ""),
             "",
             " ".join(about) + f" Glorot init, seed {p['seed']}, the best-validation epoch's "
             "weights reported; losses and the metric of those weights in inference mode, the "
             f"metric on the test set. {_device_line(results)}; {results['seconds']:.0f} s "
             "in all.",
             ""]
    if results.get("pending"):
        lines += [f"Not finished: {len(results['pending'])} cells pending ("
                  f"{', '.join(results['pending'])}); `--resume` goes on.", ""]
    by_set = {}
    for c in results["cells"]:
        by_set.setdefault(c["dataset"], []).append(c)
    for name, cells in by_set.items():
        metric = next((c["metric"] for c in cells if "metric" in c), None)
        label = METRIC_NAMES.get(metric, "metric")
        lines += [f"## {name} ({cells[0]['task']})", "",
                  f"| model | strategy | batch | peak lr | best epoch | train loss | test loss "
                  f"| {label} | s |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        reasons = []
        for c in cells:
            if c["status"] == "ok":
                lines.append(
                    f"| {c['model']} | {c['strategy']} | {c['batch_size'] or '—'} "
                    f"| {_num(c['lr'], 3)} "
                    f"| {c['best_epoch']} | {_num(c['train_loss'])} | {_num(c['test_loss'])} "
                    f"| {_num(c['score'])} | {c['seconds']:.1f} |")
            else:
                lines.append(f"| {c['model']} | {c['strategy']} | {c['status']} |||||||")
                if c["reason"] not in reasons:
                    reasons.append(c["reason"])
        lines.append("")
        lines += [f"{'Not run' if 'absent' in cells[0].get('status', '') else 'Failed'}: {r}"
                  for r in reasons]
        if reasons:
            lines.append("")
    return "\n".join(lines)


def plot_curves(results, out):
    """One figure a data set and model with metaheuristic cells: the best
    training loss against evaluations, a line a strategy, written as
    ``<part>_<dataset>_<model>.png`` into ``out``; returns the file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = {}
    for c in results["cells"]:
        if c.get("status") == "ok" and "curve" in c:
            groups.setdefault((c["dataset"], c["model"]), []).append(c)
    names = []
    for (dataset, model), cells in groups.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for c in cells:
            ax.plot(c["curve"]["evals"], c["curve"]["loss"], marker=".", label=c["strategy"])
        ax.set_xlabel("evaluations of the training loss")
        ax.set_ylabel("best training loss")
        ax.set_yscale("log")
        ax.set_title(f"{dataset}, {model}")
        ax.legend()
        name = f"{results['part']}_{dataset}_{model}.png"
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=100)
        plt.close(fig)
        names.append(name)
    return names


def write_results(results, out):
    """Write ``<part>.json`` and ``<part>.md`` into folder ``out``, and the
    metaheuristics' loss curves (:func:`plot_curves`); returns the paths of
    the two files."""
    os.makedirs(out, exist_ok=True)
    results["plots"] = plot_curves(results, out)
    stem = os.path.join(out, results["part"])
    with open(stem + ".json", "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, allow_nan=False)
        f.write("\n")
    with open(stem + ".md", "w", encoding="utf-8") as f:
        f.write(markdown_table(results) + "\n")
    return stem + ".json", stem + ".md"


# ------------------------------------------------------------------- CLI
def add_parser(sub):
    """The ``experiment`` subcommand of ``python -m hetnet``."""
    p = sub.add_parser(
        "experiment", help="run a grid of experiments from the source material",
        description="Run the training-techniques thesis's grid (thesis-b, its table 1): "
        "NAG, RMSProp and Adam (--part gradient) x the MLPs of 1, 2, 5 and 11 hidden layers "
        "on the tabular sets and LeNet-5, ResNet-15 and ResNet-57 on the 32x32 image sets; "
        "20 epochs of one-cycle at the LR finder's suggestion, batch size chosen on "
        "validation, the best-validation model reported. Writes <part>.json and <part>.md "
        "into --out, after every cell; --resume goes on from an interrupted run. Sets not on "
        "this machine are reported as not run.")
    p.add_argument("name", choices=("thesis-b",), help="the experiment")
    p.add_argument("--part", choices=tuple(PARTS), default="gradient",
                   help="gradient (NAG, RMSProp, Adam), metaheuristic (SHADE, SHADE-ILS and "
                        "their hybrids) or all (default gradient)")
    p.add_argument("--datasets", nargs="+", choices=tuple(DATASETS), default=None,
                   metavar="SET", help=f"data sets (default all): {', '.join(DATASETS)}")
    p.add_argument("--models", nargs="+", choices=tuple(MODELS), default=None, metavar="MODEL",
                   help=f"models (default all; {', '.join(QUICK_MODELS)} with --quick): "
                        f"{', '.join(MODELS)}")
    p.add_argument("--strategies", nargs="+", choices=tuple(STRATEGIES), default=None,
                   metavar="NAME", help="strategies of the part (default all of it): "
                                        f"{', '.join(STRATEGIES)}")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per run (default 20, or 2 with --quick)")
    p.add_argument("--device", default="cpu",
                   help="where to run: cpu, gpu, opencl:P:D or auto (default cpu)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads, --device cpu only (default: HETNET_NUM_THREADS, "
                        "OMP_NUM_THREADS or every CPU available)")
    p.add_argument("--quick", action="store_true",
                   help="a seconds-long subset (2 epochs, batch sizes 32 and 64, 100 training "
                        "images), for tests")
    p.add_argument("--out", default="thesis-b", metavar="DIR",
                   help="folder for <part>.json and <part>.md (default ./thesis-b)")
    p.add_argument("--resume", action="store_true",
                   help="go on from what an interrupted run with the same settings left in "
                        "--out: keep its finished cells, continue a metaheuristic cell from its "
                        "checkpoint (written every epoch under --out/checkpoints)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(args):
    """Run ``hetnet experiment`` from parsed arguments; returns the exit status."""
    protocol = QUICK if args.quick else THESIS
    if args.epochs is not None:
        if args.epochs < 1:
            raise ExperimentError(f"--epochs must be at least 1, got {args.epochs}")
        protocol = dataclasses.replace(protocol, epochs=args.epochs)
    results = run_thesis_b(args.part, args.datasets, args.models, args.strategies,
                           args.device, args.quick, protocol,
                           progress=False if args.quiet else None, out=args.out,
                           threads=args.threads, resume=args.resume)
    ok = sum(c["status"] == "ok" for c in results["cells"])
    print(f"thesis-b {args.part}: {ok} of {len(results['cells'])} cells run in "
          f"{results['seconds']:.1f} s; wrote {os.path.join(args.out, args.part)}.json and .md")
    return 0
