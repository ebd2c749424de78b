"""Saving and loading models as plain arrays + JSON (no pickle, no code)."""

import json
import os
import zipfile

import numpy as np

FORMAT = "hetnet-model/1"


def save_model(model, path):
    """Write ``model`` to ``path`` (a .npz zip: ``config.json`` text plus one
    float32 array per weight, ``w0000``, ``w0001``, ...)."""
    from . import __version__
    config = model.get_config()
    config["format"] = FORMAT
    config["hetnet_version"] = __version__
    arrays = {f"w{i:04d}": w for i, w in enumerate(model.get_weights())}
    arrays["config"] = np.array(json.dumps(config))
    path = os.fspath(path)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def open_npz(path, what="model"):
    """``np.load`` of a hetnet file with pickles refused and clear errors."""
    path = os.fspath(path)
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"no {what} file at {path!r}") from None
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path!r} is not a hetnet {what} file: {exc}") from None


def load(path, device="cpu"):
    """Read a model written by :meth:`Sequential.save` onto ``device``.

    The file is read with ``allow_pickle=False``: an object array (a pickle
    payload) is refused, never executed.
    """
    from .layers import LAYERS
    from .model import Sequential
    path = os.fspath(path)
    data = open_npz(path, "model")
    with data:
        if "config" not in data.files:
            raise ValueError(f"{path!r} is not a hetnet model file (no config)")
        try:
            config = json.loads(str(data["config"]))
        except ValueError as exc:
            raise ValueError(f"{path!r}: refusing to load: {exc}") from None
        if config.get("format") != FORMAT:
            raise ValueError(f"{path!r}: unknown format {config.get('format')!r}, expected {FORMAT}")
        layers = []
        for spec in config["layers"]:
            cls = LAYERS.get(spec.get("class"))
            if cls is None:
                raise ValueError(f"{path!r}: unknown layer class {spec.get('class')!r}")
            layers.append(cls(**spec["config"]))
        model = Sequential(layers, loss=config["loss"], device=device, seed=config.get("seed"),
                           input_shape=config["input_shape"])
        n = sum(layer.n_weights for layer in model.layers)
        try:
            weights = [data[f"w{i:04d}"] for i in range(n)]
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{path!r}: missing or unreadable weight array: {exc}") from None
    model.set_weights(weights)
    return model
