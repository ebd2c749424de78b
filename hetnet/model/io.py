"""The file format: models and estimators as plain arrays + JSON (no pickle, no code).

A file is a ``.npz`` zip holding ``config`` (JSON text: ``format``,
``hetnet_version``, the model's :meth:`~hetnet.Sequential.get_config`, and
for an estimator an ``estimator`` entry), one float32 array per weight
(``w0000``, ``w0001``, ... in :meth:`~hetnet.Sequential.get_weights` order)
and any named extra arrays (an estimator's ``classes``).  This module is the
one place that knows that layout; :func:`hetnet.load` and the estimators'
``save``/``load`` go through it.
"""

import json
import os
import re
import zipfile

import numpy as np

from .._version import __version__
from ..layers import LAYERS

FORMAT = "hetnet-model/1"
_WEIGHT = re.compile(r"w(\d{4})$")


def write(path, config, weights, arrays=None):
    """Write ``config`` (a JSON-able dict, given the format and version
    here), ``weights`` (numpy arrays) and named extra ``arrays`` to ``path``;
    returns the path as a string."""
    config = dict(config, format=FORMAT, hetnet_version=__version__)
    out = {f"w{i:04d}": w for i, w in enumerate(weights)}
    for name, a in (arrays or {}).items():
        if name == "config" or _WEIGHT.match(name):
            raise ValueError(f"extra array name {name!r} is taken by the format")
        out[name] = a
    out["config"] = np.array(json.dumps(config))
    path = os.fspath(path)
    with open(path, "wb") as f:
        np.savez(f, **out)
    return path


def save_model(model, path):
    """Write ``model`` (its :meth:`get_config` and :meth:`get_weights`) to ``path``."""
    return write(path, model.get_config(), model.get_weights())


def open_npz(path, what="model"):
    """``np.load`` of a hetnet file with pickles refused and clear errors."""
    path = os.fspath(path)
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"no {what} file at {path!r}") from None
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path!r} is not a hetnet {what} file: {exc}") from None


def read_config(data, path):
    """The checked JSON configuration of an open file ``data``."""
    if "config" not in data.files:
        raise ValueError(f"{path!r} is not a hetnet model file (no config)")
    try:
        config = json.loads(str(data["config"]))
    except ValueError as exc:
        raise ValueError(f"{path!r}: refusing to load: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        got = config.get("format") if isinstance(config, dict) else config
        raise ValueError(f"{path!r}: unknown format {got!r}, expected {FORMAT}")
    return config


def read_weights(data, path, count):
    """The ``count`` weight arrays of an open file ``data``, in order."""
    try:
        return [data[f"w{i:04d}"] for i in range(count)]
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path!r}: missing or unreadable weight array: {exc}") from None


def layers_from_config(config, path):
    """Fresh, unbuilt layers from a configuration's ``layers`` entries."""
    layers = []
    for spec in config["layers"]:
        cls = LAYERS.get(spec.get("class"))
        if cls is None:
            raise ValueError(f"{path!r}: unknown layer class {spec.get('class')!r}")
        layers.append(cls(**spec["config"]))
    return layers


__all__ = ["FORMAT", "write", "save_model", "open_npz", "read_config", "read_weights",
           "layers_from_config"]
