"""The model: :class:`Sequential` (container, build, weights, placement,
inference), its fit loop (:mod:`.fit`), the file format (:mod:`.io`) and
the model zoo (:mod:`.zoo`, also ``hetnet.models``)."""

from . import io, zoo
from .fit import History
from .sequential import Sequential, load


__all__ = ["Sequential", "History", "load", "io", "zoo"]
