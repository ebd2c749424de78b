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

Written by :class:`hetnet.callbacks.ModelCheckpoint` (atomically: a crash
while writing leaves the previous checkpoint whole).
"""

import json
import math
import os
import re

import numpy as np

from ..optim import OPTIMIZERS
from . import io

_STATE = re.compile(r"opt_(\d+)_(\d+)$")


def _layer_tree(layers):
    for layer in layers:
        yield layer
        yield from _layer_tree(getattr(layer, "sublayers", ()))


def save_checkpoint(model, path, progress, history):
    """Write ``model`` and ``progress`` (a dict: ``epoch`` (epochs done),
    ``epochs``, ``step``, ``total_steps``, ``n_samples``, ``batch_size``) and
    ``history`` (dict of lists) to ``path``, atomically."""
    opt = model.optimizer
    arrays = {}
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


def _json_figure(value):
    """A history entry for JSON: a float, or a list of them (a data-parallel
    fit's ``shares`` per epoch: the rows of each rank)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [float(v) for v in value]
    return float(value)


def _json_state(state):
    """A bit generator's state with ints kept exact (JSON has them)."""
    return {k: (_json_state(v) if isinstance(v, dict) else v) for k, v in state.items()}


def resume(model, path, epochs, n_samples, batch_size):
    """Put the checkpoint at ``path`` into ``model`` (built, as fit builds
    it): weights, optimizer and its state, shuffling generator, Dropout
    counters.  Returns ``(epochs done, step, history so far)``."""
    path = os.fspath(path)
    with io.open_npz(path, "checkpoint") as data:
        config = io.read_config(data, path)
        entry = config.get("checkpoint")
        if not isinstance(entry, dict):
            raise ValueError(f"{path!r} is a model file without training state (field "
                             "'checkpoint' missing); write checkpoints with "
                             "hetnet.callbacks.ModelCheckpoint")
        try:
            done, planned = int(entry["epoch"]), int(entry["epochs"])
            step = int(entry["step"])
            saved_n, saved_bs = int(entry["n_samples"]), int(entry["batch_size"])
            opt_cfg, layout = entry["optimizer"], entry["state_layout"]
            rng_state, dropout, hist = entry["rng"], entry["dropout"], entry["history"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path!r}: field 'checkpoint' is incomplete: {exc!r}") from None
        if saved_n != n_samples or saved_bs != batch_size:
            raise ValueError(f"{path!r} was written by a run over {saved_n} samples in batches "
                             f"of {saved_bs}; this fit has {n_samples} and {batch_size}")
        if epochs != planned:
            raise ValueError(f"{path!r} was written by a run of epochs={planned}; pass the "
                             f"same epochs to continue it (got {epochs})")
        if step != done * math.ceil(n_samples / batch_size):
            raise ValueError(f"{path!r}: field 'checkpoint.step' ({step}) disagrees with "
                             f"{done} epochs done")
        weights = io.read_weights(data, path, sum(layer.n_weights for layer in model.layers))
        state = {}
        for name in data.files:
            m = _STATE.match(name)
            if m:
                state.setdefault(int(m.group(1)), {})[int(m.group(2))] = data[name]
    mine = json.loads(json.dumps(model.get_config()))     # tuples as JSON has them
    if mine["layers"] != config["layers"] or mine["input_shape"] != config["input_shape"]:
        raise ValueError(f"{path!r} holds a different network from this model's")
    model.set_weights(weights)
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
        model.optimizer = opt
    model._shuffle_rng.bit_generator.state = rng_state
    layers = [layer for layer in _layer_tree(model.layers) if hasattr(layer, "passes")]
    if len(layers) != len(dropout):
        raise ValueError(f"{path!r}: field 'checkpoint.dropout' does not match the network")
    for layer, (seed, passes) in zip(layers, dropout):
        layer.seed, layer.passes = int(seed), int(passes)
    return done, step, hist


__all__ = ["save_checkpoint", "resume"]
