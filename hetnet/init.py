"""Weight initialisation by activation: He (ReLU), Glorot (tanh/sigmoid), LeCun."""

import numpy as np


def _he(rng, shape, fan_in, fan_out):
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)


def _glorot(rng, shape, fan_in, fan_out):
    return rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), size=shape)


def _lecun(rng, shape, fan_in, fan_out):
    return rng.normal(0.0, np.sqrt(1.0 / fan_in), size=shape)


INITIALIZERS = {"he": _he, "glorot": _glorot, "lecun": _lecun}


def initialize(name, rng, shape, fan_in, fan_out):
    """Draw a float32 weight array of ``shape`` from the named scheme.

    ``he``: N(0, sqrt(2/fan_in)); ``glorot``: N(0, sqrt(2/(fan_in+fan_out)));
    ``lecun``: N(0, sqrt(1/fan_in)).
    """
    try:
        fn = INITIALIZERS[name]
    except KeyError:
        raise ValueError(f"unknown init {name!r}; expected one of {sorted(INITIALIZERS)}") from None
    return fn(rng, shape, fan_in, fan_out).astype(np.float32)
