"""One buffer for the parameters on a device, so that one launch updates them all.

On a GPU every kernel launch costs the host about 10 µs (DESIGN.md's GPU
notes); an optimizer that updates LeNet-5's ten parameter arrays one by one
spends ten launches a step on what one launch over a flat buffer does.  A
:class:`FlatGroup` lays out some parameter arrays (of one device) in one
flat array, each at an offset aligned to :data:`ALIGN` floats (the GEMM
kernels' vector loads need aligned offsets; the gaps hold zeros, which every
update leaves at zero), and gives each array back as a view into it.  The
model keeps its parameters and gradients as such views on devices with
``flat_update`` (:meth:`Sequential._flat_group`), and the optimizer keeps its
state the same way (:meth:`Optimizer.update_group`).
"""

import math

import numpy as np

#: offsets into a flat buffer are multiples of this many floats (256 bytes)
ALIGN = 64


class FlatGroup:
    """The layout of ``shapes`` in one flat float32 array on ``device``.

    Attributes
    ----------
    offsets : list of int
        Where each array starts, in elements.
    size : int
        Elements of the flat array, gaps included.
    """

    def __init__(self, device, shapes):
        self.device = device
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        self.offsets, end = [], 0
        for shape in self.shapes:
            self.offsets.append(end)
            end += -(-math.prod(shape) // ALIGN) * ALIGN
        self.size = max(end, 1)

    def views(self, flat):
        """Each array of the layout as a view into the device array ``flat``."""
        dev = self.device
        return [dev.reshape(dev.batch_slice(flat, off, off + math.prod(shape)), shape)
                for off, shape in zip(self.offsets, self.shapes)]

    def from_raveled(self, v):
        """Host rows ``v (..., total)`` holding the layout's arrays raveled one
        after another (a model's flat weight vectors) laid out as the flat
        array: ``(..., size)`` float32, zeros in the gaps."""
        v = np.asarray(v, dtype=np.float32)
        out = np.zeros(v.shape[:-1] + (self.size,), dtype=np.float32)
        at = 0
        for off, shape in zip(self.offsets, self.shapes):
            n = math.prod(shape)
            out[..., off:off + n] = v[..., at:at + n]
            at += n
        return out

    def pack(self, arrays):
        """A new flat device array holding ``arrays`` (device arrays of the
        layout's shapes, or None for zeros) and its views: ``(flat, views)``.
        Copies through the host: packing happens when a layout is made or its
        arrays were replaced (weights set, moved, planning's copies), not per step."""
        host = np.zeros(self.size, dtype=np.float32)
        for a, off, shape in zip(arrays, self.offsets, self.shapes):
            if a is not None:
                host[off:off + math.prod(shape)] = self.device.to_host(a).reshape(-1)
        flat = self.device.asarray(host)
        return flat, self.views(flat)


__all__ = ["FlatGroup", "ALIGN"]
