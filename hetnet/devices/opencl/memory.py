"""Memory and transfers of the OpenCL device: device arrays from the
device's memory pool, host <-> device copies (through pinned staging
buffers on a GPU, queued without waiting), views, and the wait for the queue.

:class:`OpenCLMemory` is the memory half of :class:`OpenCLDevice`; it uses
the device's ``context``, ``queue``, ``pool`` and launch helpers.
"""

import numpy as np

from .platform import cl

if cl is not None:
    import pyopencl.array as cla

_F32 = np.float32

_STAGING_MIN_BYTES = 1 << 16     # smaller uploads: plain non-blocking copy
_STAGING_SLOTS = 3


def _off(a):
    """Element offset of a (possibly offset) view into its buffer."""
    return a.offset // a.dtype.itemsize


class _StagingUploader:
    """Host -> device copies through a ring of pinned (ALLOC_HOST_PTR, mapped)
    host buffers: the host copies into pinned memory and queues a DMA without
    waiting for it.

    The DMA goes on the compute queue, in order.  A second queue would let
    it overlap kernels queued before it, but the destination comes from the
    memory pool and may be memory that those kernels still read (freed by
    Python, not yet by the device); keeping that safe needs dependency
    tracking per buffer.  A LeNet-5 step is bound by host time (the GPU idles
    most of it), so the in-order DMA costs nothing measurable there.
    """

    def __init__(self, dev):
        self.dev = dev
        self.slots = [None] * _STAGING_SLOTS     # (buffer, mapped host array, event)
        self.next = 0

    def _slot(self, nbytes):
        i = self.next
        self.next = (i + 1) % _STAGING_SLOTS
        slot = self.slots[i]
        if slot is not None and slot[2] is not None:
            slot[2].wait()          # the DMA from this slot has run (rarely waits)
        if slot is None or slot[1].nbytes < nbytes:
            if slot is not None:
                slot[1].base.release(self.dev.queue)
            size = max(nbytes, 2 * (slot[1].nbytes if slot else 0))
            buf = cl.Buffer(self.dev.context,
                            cl.mem_flags.READ_WRITE | cl.mem_flags.ALLOC_HOST_PTR, size)
            host, _ = cl.enqueue_map_buffer(self.dev.queue, buf, cl.map_flags.WRITE, 0,
                                            (size,), np.uint8, is_blocking=True)
            slot = (buf, host, None)
        self.slots[i] = slot
        return i, slot

    def upload(self, host, out, queue=None, wait_for=None):
        """Queue ``host`` -> ``out`` through a pinned slot (on ``queue``, by
        default the compute queue, after ``wait_for``); returns the event."""
        i, (buf, pinned, _) = self._slot(host.nbytes)
        stage = pinned[:host.nbytes]
        np.copyto(stage, host.reshape(-1).view(np.uint8))
        evt = cl.enqueue_copy(queue or self.dev.queue, out.base_data, stage,
                              dst_offset=out.offset, is_blocking=False, wait_for=wait_for)
        self.slots[i] = (buf, pinned, evt)      # keeps the NannyEvent until it ran
        return evt


class OpenCLMemory:
    """Device arrays and copies of an OpenCL device (a mixin of
    :class:`hetnet.devices.opencl.OpenCLDevice`)."""

    def asarray(self, a, dtype=_F32):
        """Copy a host array to the device; returns a new device array.

        The copy is queued, not awaited: on a GPU, arrays of 64 KiB or more go
        through pinned staging buffers, smaller ones are copied from a private
        host copy.
        """
        src = np.asarray(a)
        host = np.ascontiguousarray(src, dtype=dtype)
        out = self.empty(host.shape, host.dtype)
        self._count("to_device", host.nbytes)
        if host.nbytes == 0:
            return out
        if self._uploader is not None and host.nbytes >= _STAGING_MIN_BYTES:
            self._uploader.upload(host, out)
        else:
            if np.may_share_memory(host, src):
                host = host.copy()      # the caller may change `a` before the copy runs
            self._keep(cl.enqueue_copy(self.queue, out.base_data, host, dst_offset=out.offset,
                                       is_blocking=False))
        return out

    def gather_rows(self, X, idx, out=None):
        """Rows ``idx`` of host ``X`` on the device.  With ``overlap_uploads``
        the copy runs on the upload queue into one of two alternating buffers
        while earlier steps still compute; the compute queue waits for it."""
        if not self.overlap_uploads:
            return super().gather_rows(X, idx, out)
        host = np.ascontiguousarray(X[idx])
        self._count("to_device", host.nbytes)
        key = (host.shape, host.dtype)
        ring = self._inputs.get(key)
        if ring is None:
            ring = self._inputs[key] = [[self.empty(host.shape, host.dtype),
                                         self.empty(host.shape, host.dtype)], 0]
        bufs, k = ring
        ring[1] = 1 - k
        dst = bufs[k]
        if host.nbytes == 0:
            return dst
        # dst was last read by the step before the previous one; the marker
        # queued at the previous upload follows that step's kernels.
        wait = [self._inputs_free] if self._inputs_free is not None else None
        evt = self._uploader.upload(host, dst, queue=self._upload_queue, wait_for=wait)
        self._upload_queue.flush()
        cl.enqueue_barrier(self.queue, wait_for=[evt])      # this step's kernels wait for it
        self._inputs_free = cl.enqueue_marker(self.queue)
        return dst

    def _keep(self, evt):
        """Hold a non-blocking host copy's event until it has run.

        pyopencl's NannyEvent *waits* for its copy when it is garbage-collected;
        dropping it at once would make every upload wait for all the work
        queued before it (a host/device round trip per batch)."""
        pend = self._pending
        pend.append(evt)
        done = cl.command_execution_status.COMPLETE
        while pend and pend[0].command_execution_status == done:
            pend.popleft()
        if len(pend) > 256:
            pend.popleft().wait()

    def to_host(self, a):
        """Copy a device array into a new numpy array (waits for it)."""
        host = np.empty(a.shape, a.dtype)
        self._count("to_host", host.nbytes)
        if host.nbytes:
            cl.enqueue_copy(self.queue, host, a.base_data, src_offset=a.offset,
                            is_blocking=True)
        return host

    # The two other transfer paths, for the cost model's transfer tables
    # (asarray/to_host above are the paths training uses).
    def upload_pageable(self, a):
        """Host -> device straight from pageable (ordinary) memory."""
        host = np.ascontiguousarray(a, dtype=_F32).copy()
        out = self.empty(host.shape, host.dtype)
        self._count("to_device", host.nbytes)
        if host.nbytes:
            self._keep(cl.enqueue_copy(self.queue, out.base_data, host, dst_offset=out.offset,
                                       is_blocking=False))
        return out

    def download_pinned(self, a):
        """Device -> host through a pinned (mapped) buffer, then into numpy."""
        nbytes = a.nbytes
        self._count("to_host", nbytes)
        if not nbytes:
            return np.empty(a.shape, a.dtype)
        buf = self._pinned_read.get(nbytes)
        if buf is None:
            mem = cl.Buffer(self.context, cl.mem_flags.READ_WRITE | cl.mem_flags.ALLOC_HOST_PTR,
                            nbytes)
            host, _ = cl.enqueue_map_buffer(self.queue, mem, cl.map_flags.READ, 0, (nbytes,),
                                            np.uint8, is_blocking=True)
            buf = self._pinned_read[nbytes] = (mem, host)
        mem, host = buf
        cl.enqueue_copy(self.queue, host, a.base_data, src_offset=a.offset, is_blocking=True)
        return host.view(a.dtype).reshape(a.shape).copy()

    def empty(self, shape, dtype=_F32):
        try:
            key = (shape, dtype)
            meta = self._meta.get(key)
        except TypeError:                   # a list shape
            key = (tuple(shape), dtype)
            meta = self._meta.get(key)
        if meta is None:
            dt = np.dtype(dtype)
            shp = (int(shape),) if np.isscalar(shape) else tuple(int(d) for d in shape)
            strides = tuple(int(np.prod(shp[i + 1:], dtype=np.int64)) * dt.itemsize
                            for i in range(len(shp)))
            meta = self._meta[key] = (shp, dt, int(np.prod(shp, dtype=np.int64)), strides)
        shp, dt, size, strides = meta
        # pyopencl's fast constructor: skips re-deriving size and strides
        return cla.Array(None, shp, dt, allocator=self.pool, strides=strides, _fast=True,
                         _size=size, _context=self.context, _queue=self.queue)

    def zeros(self, shape, dtype=_F32):
        out = self.empty(shape, dtype)
        if out.nbytes:
            cl.enqueue_fill_buffer(self.queue, out.base_data, np.zeros(1, out.dtype),
                                   out.offset, out.nbytes)
        return out

    def copy(self, a):
        out = self.empty(a.shape, a.dtype)
        if a.nbytes:
            cl.enqueue_copy(self.queue, out.base_data, a.base_data, byte_count=a.nbytes,
                            src_offset=a.offset, dst_offset=out.offset)
        return out

    def batch_slice(self, a, start, stop):
        """View of rows ``start:stop`` of ``a`` along axis 0 (no copy).

        The same view as ``a[start:stop]`` (non-negative bounds, clipped like
        a slice), built with pyopencl's fast constructor: layers slice every
        batch into chunks, and ``Array.__getitem__`` costs ~10 µs."""
        n = a.shape[0]
        i0 = min(max(int(start), 0), n)
        i1 = min(max(int(stop), i0), n)
        rows = i1 - i0
        return cla.Array(None, (rows,) + a.shape[1:], a.dtype, allocator=a.allocator,
                         data=a.base_data, offset=a.offset + i0 * a.strides[0],
                         strides=a.strides, _fast=True,
                         _size=rows * (a.size // n) if n else 0,
                         _context=self.context, _queue=self.queue)

    def reshape(self, a, shape):
        """View of ``a`` with a new shape (same size, C order; one dimension
        may be -1).  As ``a.reshape(shape)`` for the C-contiguous arrays of
        this device, without pyopencl's general path (~30 µs a call)."""
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(shape)
        size = 1
        for d in shape:
            size *= d
        if size < 0 and shape.count(-1) == 1:          # one dimension inferred
            shape = tuple(a.size // -size if d == -1 else d for d in shape)
            size = a.size if a.size % -size == 0 else -1
        if size != a.size:
            raise ValueError(f"cannot reshape an array of size {a.size} into {shape}")
        stride, strides = a.dtype.itemsize, []
        for d in reversed(shape):
            strides.append(stride)
            stride *= max(d, 1)
        strides = tuple(reversed(strides))
        return cla.Array(None, shape, a.dtype, allocator=a.allocator, data=a.base_data,
                         offset=a.offset, strides=strides, _fast=True, _size=a.size,
                         _context=self.context, _queue=self.queue)

    def synchronize(self):
        self.queue.finish()
        self._pending.clear()

