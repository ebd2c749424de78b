"""Cost geometries: what the cost model needs to know of a layer's shape.

GEMM, convolution and pooling run at speeds that depend on their shapes,
so the cost model measures each one per geometry (:mod:`hetnet.sched.costmodel`).
A layer names its geometry with one of these records; the cost model looks
up how to measure it by its ``kind`` (``GEOMETRIES``).  The records are
tuples, so they serialise to the same JSON keys the cost tables' disk cache
holds.  A new layer family adds a record here and its measurement to the
cost model's table.
"""

from typing import NamedTuple


class DenseGeometry(NamedTuple):
    """A dense layer's GEMMs: ``(N, in_features) @ (in_features, out_features)``."""
    kind: str
    in_features: int
    out_features: int


class Conv2DGeometry(NamedTuple):
    """A convolution: per-sample ``in_shape`` (C, H, W), ``filters`` output
    channels, ``kernel`` (kh, kw), ``stride`` and ``pad`` (pairs), and the
    activation fused into it."""
    kind: str
    in_shape: tuple
    filters: int
    kernel: tuple
    stride: tuple
    pad: tuple
    activation: str


class MaxPool2DGeometry(NamedTuple):
    """Max pooling over per-sample ``in_shape`` (C, H, W) with ``window`` and ``stride`` (pairs)."""
    kind: str
    in_shape: tuple
    window: tuple
    stride: tuple


class PaddedMaxPool2DGeometry(NamedTuple):
    """Max pooling as :class:`MaxPool2DGeometry`, with ``padding`` (a pair) of -inf;
    its own kind, so an unpadded pool's key stays what it was."""
    kind: str
    in_shape: tuple
    window: tuple
    stride: tuple
    padding: tuple


#: kind -> its record
GEOMETRIES = {"dense": DenseGeometry, "conv2d": Conv2DGeometry, "maxpool2d": MaxPool2DGeometry,
              "maxpool2d_padded": PaddedMaxPool2DGeometry}


def as_geometry(value):
    """The record of a geometry given as a record or as a plain tuple
    starting with its kind."""
    record = GEOMETRIES.get(value[0]) if len(value) else None
    if record is None:
        raise ValueError(f"unknown geometry {value!r}; kinds: {sorted(GEOMETRIES)}")
    return record._make(value)


__all__ = ["DenseGeometry", "Conv2DGeometry", "MaxPool2DGeometry", "PaddedMaxPool2DGeometry",
           "GEOMETRIES", "as_geometry"]
