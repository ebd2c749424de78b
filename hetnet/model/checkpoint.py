"""Checkpoints: a model file that also holds where training stood.

A checkpoint is a model file (:mod:`hetnet.model.io`; :func:`hetnet.load`
reads it as the model) with, in addition, a ``checkpoint`` entry in its
JSON configuration and the optimizer's state as arrays (``opt_<i>_<k>``:
parameter ``i``'s ``k``-th state array).  The entry holds the epochs done
and planned, the step counter the schedules see, the samples and batch size
of the run, the optimizer's configuration and step count, the shuffling
generator's state, each Dropout layer's seed and pass count, and the history
so far.  ``fit(..., resume_from=path)`` puts all of it back, so that the
rest of the run is the run that was interrupted: on the CPU bit for bit.

A data-parallel fit's entry also holds ``balance``, the split over the ranks
its next epoch was to use (``shares``, ``speeds``).  A metaheuristic fit's
(``kind: "metaheuristic"``) holds ``max_evals`` and ``search``: the
optimizer's class, settings (its constructor's arguments but ``gd``), what
its ``gd`` was (``"none"``, ``"optimizer"`` or ``"callable"``) and the JSON
part of its state (:meth:`~hetnet.metaheuristics.Metaheuristic.get_state`
and the Problem's, keys ``problem.*``), the arrays of that state as
``search_<key>``; a hybrid's gradient optimizer is the checkpoint's
optimizer.  :func:`resume_search` puts that back.

Written by :class:`hetnet.callbacks.ModelCheckpoint` (atomically: a crash
while writing leaves the previous checkpoint whole).
"""

import json
import math
import os
import re

import numpy as np

from ..optim import OPTIMIZERS, Optimizer
from . import io

_STATE = re.compile(r"opt_(\d+)_(\d+)$")


def _layer_tree(layers):
    for layer in layers:
        yield layer
        yield from _layer_tree(getattr(layer, "sublayers", ()))


def save_checkpoint(model, path, progress, history):
    """Write ``model`` and ``progress`` (a dict: ``epoch`` (epochs done),
    ``epochs``, ``step``, ``total_steps``, ``n_samples``, ``batch_size``; a
    metaheuristic fit's also ``kind: "metaheuristic"``, ``max_evals`` and
    ``search``, a callable returning the search's entry, its arrays and its
    gradient optimizer (or None)) and ``history`` (dict of lists) to
    ``path``, atomically."""
    progress = dict(progress)
    opt = model.optimizer
    arrays = {}
    search = progress.pop("search", None)
    if search is not None:
        progress["search"], search_arrays, opt = search()
        arrays.update({_SEARCH_PREFIX + k: a for k, a in search_arrays.items()})
    layout = {}
    if opt is not None:
        devices = {}
        for layer in model.layers:
            for _ in layer.params:
                devices[len(devices)] = layer.device
        for i, st in opt.state.items():
            parts = st if isinstance(st, tuple) else (st,)
            dev = devices.get(i, model.out_device)
            for k, a in enumerate(parts):
                arrays[f"opt_{i}_{k}"] = np.asarray(dev.to_host(a), dtype=np.float32)
            layout[str(i)] = [len(parts), isinstance(st, tuple)]
    dropout = [[int(layer.seed), int(layer.passes)] for layer in _layer_tree(model.layers)
               if hasattr(layer, "passes")]
    entry = dict(progress, optimizer=None if opt is None else opt.get_config(),
                 optimizer_t=0 if opt is None else int(opt.t), state_layout=layout,
                 rng=_json_state(model._shuffle_rng.bit_generator.state), dropout=dropout,
                 history={k: [_json_figure(v) for v in vs] for k, vs in history.items()})
    config = dict(model.get_config(), checkpoint=entry)
    return io.write(path, config, model.get_weights(), arrays)


#: a metaheuristic's arrays in a checkpoint: ``search_<key>`` (its get_state's array entries)
_SEARCH_PREFIX = "search_"


def split_state(state):
    """A search's state (:meth:`~hetnet.metaheuristics.Metaheuristic.get_state`)
    as (JSON-able values, arrays)."""
    values, arrays = {}, {}
    for key, v in state.items():
        if isinstance(v, np.ndarray):
            arrays[key] = v
        else:
            values[key] = _json_state(v) if isinstance(v, dict) else v
    return values, arrays


def _json_figure(value):
    """A history entry for JSON: a float, or a list of them (a data-parallel
    fit's ``shares`` per epoch: the rows of each rank)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [float(v) for v in value]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)           # a metaheuristic's ``evals``
    return float(value)


def _json_state(state):
    """A bit generator's state with ints kept exact (JSON has them)."""
    return {k: (_json_state(v) if isinstance(v, dict) else v) for k, v in state.items()}


def _read(model, path):
    """The checkpoint at ``path``, checked against ``model``: ``(entry,
    weights, optimizer state arrays {i: {k: array}}, search arrays)``."""
    path = os.fspath(path)
    with io.open_npz(path, "checkpoint") as data:
        config = io.read_config(data, path)
        entry = config.get("checkpoint")
        if not isinstance(entry, dict):
            raise ValueError(f"{path!r} is a model file without training state (field "
                             "'checkpoint' missing); write checkpoints with "
                             "hetnet.callbacks.ModelCheckpoint")
        weights = io.read_weights(data, path, sum(layer.n_weights for layer in model.layers))
        state, search = {}, {}
        for name in data.files:
            m = _STATE.match(name)
            if m:
                state.setdefault(int(m.group(1)), {})[int(m.group(2))] = data[name]
            elif name.startswith(_SEARCH_PREFIX):
                search[name[len(_SEARCH_PREFIX):]] = data[name]
    mine = json.loads(json.dumps(model.get_config()))     # tuples as JSON has them
    if mine["layers"] != config["layers"] or mine["input_shape"] != config["input_shape"]:
        raise ValueError(f"{path!r} holds a different network from this model's")
    return entry, weights, state, search


def _fields(path, entry, *names):
    try:
        return [entry[name] for name in names]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path!r}: field 'checkpoint' is incomplete: {exc!r}") from None


def _check_run(path, entry, epochs, n_samples, batch_size):
    try:
        done, planned = int(entry["epoch"]), int(entry["epochs"])
        saved_n, saved_bs = int(entry["n_samples"]), int(entry["batch_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path!r}: field 'checkpoint' is incomplete: {exc!r}") from None
    if saved_n != n_samples or saved_bs != batch_size:
        raise ValueError(f"{path!r} was written by a run over {saved_n} samples in batches "
                         f"of {saved_bs}; this fit has {n_samples} and {batch_size}")
    if epochs != planned:
        raise ValueError(f"{path!r} was written by a run of epochs={planned}; pass the "
                         f"same epochs to continue it (got {epochs})")
    return done


def _restore(model, path, entry, weights, state):
    """Weights, the optimizer (of ``entry``) and its state, the shuffling
    generator and the Dropout counters into ``model``; returns the optimizer
    (or None)."""
    opt_cfg, layout, rng_state, dropout = _fields(path, entry, "optimizer", "state_layout",
                                                  "rng", "dropout")
    model.set_weights(weights)
    opt = None
    if opt_cfg is not None:
        cfg = dict(opt_cfg)
        cls = OPTIMIZERS.get(cfg.pop("name", None))
        if cls is None:
            raise ValueError(f"{path!r}: field 'checkpoint.optimizer' names no known optimizer")
        opt = cls(**cfg)
        opt.t = int(entry["optimizer_t"])
        devices = [layer.device for layer in model.layers for _ in layer.params]
        shapes = [tuple(layer.params[k].shape) for layer in model.layers for k in layer.params]
        for key, (count, is_tuple) in layout.items():
            i = int(key)
            if not 0 <= i < len(devices) or set(state.get(i, {})) != set(range(count)):
                raise ValueError(f"{path!r}: the optimizer state of parameter {i} is incomplete")
            parts = []
            for k in range(count):
                a = state[i][k]
                if a.size != int(np.prod(shapes[i])):
                    raise ValueError(f"{path!r}: field 'opt_{i}_{k}' has {a.size} values, "
                                     f"parameter {i} has shape {shapes[i]}")
                parts.append(devices[i].asarray(np.ascontiguousarray(a, np.float32).reshape(
                    shapes[i])))
            opt.state[i] = tuple(parts) if is_tuple else parts[0]
    model._shuffle_rng.bit_generator.state = rng_state
    layers = [layer for layer in _layer_tree(model.layers) if hasattr(layer, "passes")]
    if len(layers) != len(dropout):
        raise ValueError(f"{path!r}: field 'checkpoint.dropout' does not match the network")
    for layer, (seed, passes) in zip(layers, dropout):
        layer.seed, layer.passes = int(seed), int(passes)
    return opt


def resume(model, path, epochs, n_samples, batch_size):
    """Put the checkpoint at ``path`` into ``model`` (built, as fit builds
    it): weights, optimizer and its state, shuffling generator, Dropout
    counters.  Returns ``(epochs done, step, history so far, balance)``:
    ``balance`` is None, or for a checkpoint of a data-parallel fit the
    ``{"shares": ..., "speeds": ...}`` its next epoch was to use."""
    entry, weights, state, _ = _read(model, path)
    if entry.get("kind") == "metaheuristic":
        name = (entry.get("search") or {}).get("class", "a metaheuristic")
        raise ValueError(f"{os.fspath(path)!r} was written by a metaheuristic fit ({name}); "
                         f"resume it with fit(..., optimizer={name}(...), max_evals=..., "
                         "resume_from=...)")
    done = _check_run(path, entry, epochs, n_samples, batch_size)
    step, hist = _fields(path, entry, "step", "history")
    step = int(step)
    if step != done * math.ceil(n_samples / batch_size):
        raise ValueError(f"{path!r}: field 'checkpoint.step' ({step}) disagrees with "
                         f"{done} epochs done")
    opt = _restore(model, path, entry, weights, state)
    if opt is not None:
        model.optimizer = opt
    return done, step, hist, entry.get("balance")


def resume_search(model, path, optimizer, epochs, max_evals, n_samples, batch_size):
    """Put the checkpoint of a metaheuristic fit at ``path`` into ``model``
    and into ``optimizer`` (a :class:`~hetnet.metaheuristics.Metaheuristic`
    of the same class and settings as the interrupted run's; its
    :meth:`~hetnet.metaheuristics.Metaheuristic.set_state` is called).
    Returns ``(epochs done, history so far, problem state, the hybrid's
    gradient optimizer or None, balance)``."""
    entry, weights, state, arrays = _read(model, path)
    if entry.get("kind") != "metaheuristic":
        raise ValueError(f"{os.fspath(path)!r} was written by a gradient fit; resume it with "
                         "that fit's optimizer (a gradient one), not "
                         f"{type(optimizer).__name__}")
    done = _check_run(path, entry, epochs, n_samples, batch_size)
    search, hist, saved_max = _fields(path, entry, "search", "history", "max_evals")
    if int(saved_max) != max_evals:
        raise ValueError(f"{path!r} was written by a run of max_evals={saved_max}; pass the "
                         f"same max_evals to continue it (got {max_evals})")
    name, settings, values, saved_gd = _fields(path, search, "class", "settings", "state", "gd")
    if name != type(optimizer).__name__:
        raise ValueError(f"{path!r} was written by a {name} run; this fit's optimizer is a "
                         f"{type(optimizer).__name__}")
    mine = json.loads(json.dumps(optimizer.settings()))
    if mine != settings:
        diff = sorted(k for k in set(mine) | set(settings) if mine.get(k) != settings.get(k))
        raise ValueError(f"{path!r} was written by {name} with "
                         + ", ".join(f"{k}={settings.get(k)!r}" for k in diff)
                         + "; this fit's has " + ", ".join(f"{k}={mine.get(k)!r}" for k in diff))
    asked = gd_kind(optimizer.gd)
    if asked != saved_gd:
        raise ValueError(f"{path!r} was written by a run whose gd was "
                         f"{_GD_WORDS.get(saved_gd, saved_gd)}; this fit's is {_GD_WORDS[asked]}")
    if saved_gd == "callable":
        raise ValueError(f"{path!r}: the run's gd was a Python callable, whose state a "
                         "checkpoint cannot hold, so it cannot be resumed exactly; give gd a "
                         "hetnet Optimizer (hn.Adam(...)) to have resumable hybrids")
    gd_opt = _restore(model, path, entry, weights, state)
    optimizer.set_state({**values, **arrays})
    problem = {k[len("problem."):]: v for k, v in {**values, **arrays}.items()
               if k.startswith("problem.")}
    return int(done), hist, problem, gd_opt, entry.get("balance")


def gd_kind(gd):
    """What a metaheuristic's ``gd`` is, as a checkpoint records it: ``"none"``
    (no hybrid), ``"optimizer"`` (a hetnet Optimizer or its name: its state
    is saved) or ``"callable"`` (a Python function: it cannot be)."""
    if gd is None:
        return "none"
    return "optimizer" if isinstance(gd, (str, Optimizer)) else "callable"


_GD_WORDS = {"none": "none (no hybrid)", "optimizer": "a hetnet Optimizer",
             "callable": "a Python callable"}


__all__ = ["save_checkpoint", "resume", "resume_search", "split_state"]
