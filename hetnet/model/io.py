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
    atomic_write(path, lambda f: np.savez(f, **out))
    return path


def check_writable(path, what="model file"):
    """Raise a ValueError naming ``path`` unless a file can be written
    there: its folder exists and is writable and it is not a folder (the
    command line checks ``--out`` before training, not after)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a directory; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{what} {path!r}: the folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"{what} {path!r} is not writable")
    return path


def atomic_write(path, write_fn):
    """Call ``write_fn(f)`` on a temporary file in ``path``'s folder, flush
    and fsync it, then ``os.replace`` it onto ``path``: a failure part-way
    (a full disk, an interrupt) leaves any old file at ``path`` whole."""
    import tempfile
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a directory; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".hetnet-", suffix=".tmp", dir=folder)
    try:
        umask = os.umask(0)        # mkstemp makes 0600; the file gets what open() would give
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:   # the rename itself survives a crash once the folder is synced
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


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
