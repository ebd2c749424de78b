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
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        text = str(exc) or type(exc).__name__
        if "pickle" in text or "Object arrays" in text:
            # numpy's text suggests allow_pickle=True: loading it would run the file's code
            text = "it holds pickled Python objects, which hetnet never writes and never loads"
        raise ValueError(f"{path!r} is not a hetnet {what} file: {text}") from None


def read_config(data, path):
    """The JSON configuration of an open file ``data``, checked against the
    schema (:func:`check_config`): every error names the file and the field."""
    if "config" not in data.files:
        raise ValueError(f"{path!r} is not a hetnet model file (no config)")
    try:
        raw = data["config"]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path!r}: the config entry is unreadable: {exc}") from None
    if raw.dtype.kind != "U" or raw.ndim != 0:
        raise ValueError(f"{path!r}: field 'config' must be JSON text, got a {raw.dtype} array "
                         f"of shape {raw.shape}")
    try:
        config = json.loads(str(raw))
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{path!r}: field 'config' is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        got = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{path!r}: unknown format {got!r}, expected {FORMAT}")
    check_config(config, path)
    return config


def _field_error(path, field, expected, got):
    return ValueError(f"{path!r}: field {field!r} must be {expected}, got {got!r}")


def _check_layer_specs(specs, path, field, depth=0):
    if depth > 16:
        raise ValueError(f"{path!r}: field {field!r} nests blocks more than 16 deep")
    if not isinstance(specs, list) or not specs:
        raise _field_error(path, field, "a non-empty list of layers", specs)
    for i, spec in enumerate(specs):
        where = f"{field}[{i}]"
        if not isinstance(spec, dict) or set(spec) != {"class", "config"}:
            raise _field_error(path, where, "{'class': name, 'config': {...}}", spec)
        if spec["class"] not in LAYERS:
            raise ValueError(f"{path!r}: field '{where}.class': unknown layer class "
                             f"{spec['class']!r}; known: {sorted(LAYERS)}")
        if not isinstance(spec["config"], dict):
            raise _field_error(path, where + ".config", "a dict", spec["config"])
        for key in ("branch", "shortcut"):      # a block's sub-layers (Residual)
            sub = spec["config"].get(key)
            if isinstance(sub, list):
                _check_layer_specs(sub, path, f"{where}.config.{key}", depth + 1)


def check_config(config, path):
    """The model part of a file's configuration against the schema:
    ``loss`` a known name, ``seed`` None or an int >= 0, ``input_shape`` a
    list of positive ints, ``layers`` a list of ``{"class", "config"}``
    with known classes."""
    from ..losses import LOSSES
    for key in ("loss", "layers", "input_shape"):
        if key not in config:
            raise ValueError(f"{path!r}: field {key!r} is missing")
    if not isinstance(config["loss"], str) or config["loss"] not in LOSSES:
        raise _field_error(path, "loss", f"one of {sorted(LOSSES)}", config["loss"])
    seed = config.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise _field_error(path, "seed", "null or an int >= 0", seed)
    shape = config["input_shape"]
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        raise _field_error(path, "input_shape", "a list of positive ints", shape)
    _check_layer_specs(config["layers"], path, "layers")


def holds_estimator(path):
    """Whether ``path`` is a hetnet file holding an estimator (False for a
    model file; a file that is neither raises as :func:`open_npz` and
    :func:`read_config` do)."""
    path = os.fspath(path)
    with open_npz(path) as data:
        return "estimator" in read_config(data, path)


def stored_weight_shapes(data, path):
    """``name -> shape`` of the weight arrays, read from their headers only
    (nothing is inflated or allocated)."""
    shapes = {}
    zf = getattr(data, "zip", None)
    for name in data.files:
        if not _WEIGHT.match(name):
            continue
        if zf is None:
            shapes[name] = tuple(data[name].shape)
            continue
        try:
            with zf.open(name + ".npy") as f:
                fmt = np.lib.format
                version = fmt.read_magic(f)
                read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, _, dtype = read(f)
        except Exception as exc:     # any malformed header
            raise ValueError(f"{path!r}: field {name!r} is not a readable array ({exc})") from None
        if dtype != np.float32:
            raise _field_error(path, name, "a float32 array", f"dtype {dtype}")
        shapes[name] = tuple(shape)
    return shapes


def declared_size(layers):
    """Elements of the parameters of the Dense and Conv2D layers among
    ``layers`` (unbuilt), from their configuration: what building them
    would allocate (the layers whose size a configuration can blow up)."""
    total = 0
    for layer in layers:
        name = type(layer).__name__
        if name == "Dense":
            total += layer.in_features * layer.out_features + layer.out_features * bool(layer.bias)
        elif name == "Conv2D":
            kh, kw = layer.kernel_size
            total += (layer.out_channels * layer.in_channels * kh * kw
                      + layer.out_channels * bool(layer.bias))
        total += declared_size(getattr(layer, "branch", None) or [])
        total += declared_size(getattr(layer, "shortcut", None) or [])
    return total


def read_weights(data, path, count):
    """The ``count`` weight arrays of an open file ``data``, in order."""
    names = sorted(n for n in data.files if _WEIGHT.match(n))
    if len(names) != count:
        raise ValueError(f"{path!r}: the layers take {count} weight arrays, the file holds "
                         f"{len(names)}")
    out = []
    for i in range(count):
        name = f"w{i:04d}"
        try:
            out.append(data[name])
        except KeyError:
            raise ValueError(f"{path!r}: field {name!r} is missing") from None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path!r}: field {name!r} is unreadable: {exc}") from None
    return out


def layers_from_config(config, path):
    """Fresh, unbuilt layers from a configuration's ``layers`` entries."""
    layers = []
    for i, spec in enumerate(config["layers"]):
        cls = LAYERS.get(spec.get("class"))
        if cls is None:
            raise ValueError(f"{path!r}: unknown layer class {spec.get('class')!r}")
        try:
            layers.append(cls(**spec["config"]))
        except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
            raise ValueError(f"{path!r}: field 'layers[{i}]' ({spec['class']}): {exc}") from None
    return layers


__all__ = ["FORMAT", "write", "save_model", "open_npz", "read_config", "read_weights",
           "layers_from_config", "check_config", "stored_weight_shapes", "declared_size",
           "check_writable", "atomic_write"]
