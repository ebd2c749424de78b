"""OpenCL device: every operation of :class:`hetnet.devices.base.Device` as
kernels from ``clkernels/*.cl``, run through pyopencl.

Device arrays are ``pyopencl.array.Array`` (float32 or int32, C-contiguous).
Views that start inside a buffer (``batch_slice``, ``a[i0:i1]``) are fine
everywhere: each kernel takes the buffer and an element offset.

Nothing in an operation waits for the device: kernels and copies are queued
and :meth:`OpenCLDevice.synchronize` (or :meth:`to_host`) waits.  Losses and
sums come back as 1-element device arrays.  Programs are built once per
context and cached; kernel objects are made once per device with their scalar
argument types declared, and each launch sets the arguments and enqueues
the kernel from C (:mod:`hetnet._cpu.clenqueue`, no event object), or,
where that is not built, is pyopencl's ``set_args`` +
``enqueue_nd_range_kernel`` (about 12 µs of host time on an H100, against
45 µs for pyopencl's convenience call).  Non-blocking host copies keep their
events until done (dropping pyopencl's NannyEvent would wait for the copy).  Temporaries come from a
``pyopencl.tools.MemoryPool``.  Uploads of large host arrays on a GPU go
through pinned staging buffers, queued without waiting.

Examples
--------
>>> from hetnet.devices.opencl import OpenCLDevice, opencl_devices
>>> opencl_devices()                                   # doctest: +SKIP
[('NVIDIA CUDA', 'NVIDIA H100 80GB HBM3', 'gpu')]
>>> dev = OpenCLDevice.from_spec("gpu")                # doctest: +SKIP
"""

import collections
import math

import numpy as np

from ._opencl_gemm import Gemm, GemmConfig
from ._opencl_platform import (DeviceNotFoundError, PyOpenCLMissingError, build_program,
                               cl, device_type_name, entry_points, find_device,
                               opencl_devices, require_pyopencl, status_name)
from .base import Device, conv_output_size
from ._opencl_layers import OpenCLLayerOps

if cl is not None:
    import pyopencl.array as cla

try:
    from .._cpu import clenqueue as _clenqueue
except ImportError:              # the extension is not built: pyopencl enqueues
    _clenqueue = None

__all__ = ["OpenCLDevice", "DeviceNotFoundError", "PyOpenCLMissingError",
           "OpenCLLaunchError", "opencl_devices", "GemmConfig"]

_F32, _I32 = np.float32, np.int32

#: Activation name -> code understood by elementwise.cl (lookup, not if-chain).
_ACT_CODES = {"identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3}

_LOSS_BCE, _LOSS_MSE, _LOSS_MAE = 0, 1, 2       # modes of loss.cl's pointwise_loss

_ARG_CODES = {"b": None, "i": _I32, "f": _F32}
_CODE_OF = {t: ord(c) for c, t in _ARG_CODES.items()}

#: kernel name -> (file, argument types: b = buffer, i = int32, f = float32)
_KERNELS = {
    "im2col": ("conv.cl", "bi bi iiii iiii iiii"),
    "col2im": ("conv.cl", "bi bi iiii iiii iiii"),
    "maxpool2d_fwd": ("pool.cl", "bi bi bi iii iiii ii"),
    "maxpool2d_bwd": ("pool.cl", "bi bi bi ii"),
    "bias_act": ("elementwise.cl", "bi bi iiii"),
    "activation_fwd": ("elementwise.cl", "bi bi ii"),
    "activation_bwd": ("elementwise.cl", "bi bi bi ii"),
    "softmax_fwd": ("elementwise.cl", "bi bi ii"),
    "softmax_bwd": ("elementwise.cl", "bi bi bi ii"),
    "axpy": ("elementwise.cl", "f bi bi i"),
    "scale": ("elementwise.cl", "f bi i"),
    "softmax_xent": (("reduce.cl", "loss.cl"), "bi bi bii bi bi iif"),
    "pointwise_loss": (("reduce.cl", "loss.cl"), "bi bi bii bi bi iif if"),
    "sgd_step": ("optim.cl", "bi bi bi i fff i f"),
    "adam_step": ("optim.cl", "bi bi bi bi i ffffffff"),
    "rmsprop_step": ("optim.cl", "bi bi bi bi i ffffff"),
    "sum_partial": ("reduce.cl", "bii bif"),
    "sumsq_partial": ("reduce.cl", "bii bi ii"),
    "argmax_rows": ("reduce.cl", "bi bi ii"),
    "bias_grad": ("reduce.cl", "bi bi iii"),
    "act_bias_grad": (("elementwise.cl", "reduce.cl", "bias_backward.cl"), "bi bi bi iiii"),
}

_STAGING_MIN_BYTES = 1 << 16     # smaller uploads: plain non-blocking copy
_STAGING_SLOTS = 3


def _off(a):
    """Element offset of a (possibly offset) view into its buffer."""
    return a.offset // a.dtype.itemsize


def _signature(code):
    return [_ARG_CODES[ch] for ch in code.replace(" ", "")]


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


class OpenCLLaunchError(RuntimeError):
    """The OpenCL driver refused to enqueue a kernel."""


def _c_enqueue_available():
    """Whether kernels can be launched from C: the extension is built and
    the OpenCL loader's entry points were found (bound once per process)."""
    if _clenqueue is None:
        return False
    if not _clenqueue.bound():
        addresses = entry_points()
        if addresses is None:
            return False
        _clenqueue.bind(*addresses)
    return True


class OpenCLDevice(OpenCLLayerOps, Device):
    """Device running every operation as OpenCL kernels.

    Parameters
    ----------
    spec : None, str, tuple or pyopencl.Device
        Which OpenCL device; see :meth:`from_spec`.
    precision : {"fp32", "tf32"}
        ``"fp32"`` (default) keeps every product exact float32.  ``"tf32"``
        allows the tensor-core GEMM on NVIDIA GPUs (inputs rounded to TF32,
        float32 accumulation, relative error ~3e-4), like PyTorch's
        ``allow_tf32``; other devices ignore it.
    autotune : bool
        Tune the GEMM tile configuration at first use on a GPU (cached on disk).
    workspace_bytes : int, optional
        Size the convolution layers may use for im2col chunks; default 256 MiB
        on a GPU, 16 MiB on a CPU OpenCL device.
    profiling : bool
        Create the queue with profiling enabled (event timings for benchmarks).
    staging : bool, optional
        Upload large arrays through pinned staging buffers; default: on for
        GPUs, off for CPU devices.
    overlap_uploads : bool, optional
        Upload mini-batches (:meth:`gather_rows`) on a second queue, into two
        alternating buffers, so that the next batch's copy runs while the
        earlier steps' kernels do.  Default: on for GPUs (LeNet-5 on an H100
        trained 1.1-1.3x faster than with in-order uploads in the same run,
        benchmarks/results/gpu_lenet5_overlap.json against gpu_lenet5.json),
        off for CPU devices.
    c_enqueue : bool, optional
        Launch kernels from C (:mod:`hetnet._cpu.clenqueue`: arguments set
        and the kernel queued in one call) instead of through pyopencl's
        ``set_args`` and ``enqueue_nd_range_kernel``, which builds an event
        object per launch.  Default: on where the extension is built and the
        OpenCL loader's entry points are found; True raises where they are not.

    Attributes
    ----------
    context, queue, cl_device
        The pyopencl objects.
    pool : pyopencl.tools.MemoryPool
        Allocator of every array this device makes.
    workspace_bytes : int
    flat_update : bool
        True: a model keeps its parameters here in one buffer and the
        optimizer updates them in one launch (:mod:`hetnet.flatparams`);
        set it False on an instance for one launch per parameter array.
    """

    flat_update = True

    def __init__(self, spec=None, *, precision="fp32", autotune=True,
                 workspace_bytes=None, profiling=False, staging=None, overlap_uploads=None,
                 c_enqueue=None):
        require_pyopencl()
        super().__init__()
        if precision not in ("fp32", "tf32"):
            raise ValueError(f"precision must be 'fp32' or 'tf32', got {precision!r}")
        import pyopencl.tools as cl_tools
        self.cl_device = find_device(spec)
        self.kind = "gpu" if device_type_name(self.cl_device) == "gpu" else "cpu"
        platform = self.cl_device.platform.name.strip()
        self.name = f"opencl:{platform}:{self.cl_device.name.strip()}"
        self.precision = precision
        self.context = cl.Context([self.cl_device])
        props = cl.command_queue_properties.PROFILING_ENABLE if profiling else 0
        self.queue = cl.CommandQueue(self.context, self.cl_device, properties=props)
        available = c_enqueue is not False and _c_enqueue_available()
        if c_enqueue and not available:
            raise RuntimeError(
                "c_enqueue=True, but kernels cannot be enqueued from C here: "
                + ("hetnet's extension hetnet._cpu.clenqueue is not built "
                   "(`python setup.py build_ext --inplace`)" if _clenqueue is None
                   else "clEnqueueNDRangeKernel and clSetKernelArg were not found in the OpenCL loader"))
        self.c_enqueue = available if c_enqueue is None else bool(c_enqueue)
        self._queue_ptr = self.queue.int_ptr
        self.pool = cl_tools.MemoryPool(cl_tools.ImmediateAllocator(self.queue))
        if workspace_bytes is None:
            workspace_bytes = (256 if self.kind == "gpu" else 16) << 20
        self.workspace_bytes = int(workspace_bytes)
        wg = 256
        while wg > self.cl_device.max_work_group_size:
            wg //= 2
        self.wg = wg
        self._options = (f"-DRED_WG={wg}",)
        self._kernels = {}
        self._meta = {}                      # (shape, dtype) -> (shape, size, strides)
        self._pending = collections.deque()  # events of host copies still running
        self._pinned_read = {}               # nbytes -> (buffer, mapped host array)
        self._gemm = Gemm(self, autotune=autotune)
        if staging is None:
            staging = self.kind == "gpu"
        if overlap_uploads is None:
            overlap_uploads = self.kind == "gpu"
        self._uploader = _StagingUploader(self) if staging or overlap_uploads else None
        self.overlap_uploads = bool(overlap_uploads)
        if self.overlap_uploads:
            self._upload_queue = cl.CommandQueue(self.context, self.cl_device)
            self._inputs = {}          # (shape, dtype) -> [two device arrays, next index]
            self._inputs_free = None   # marker: every step queued before the last upload is done

    @classmethod
    def from_spec(cls, spec=None, **kwargs):
        """Open the OpenCL device named by ``spec``.

        Parameters
        ----------
        spec : None, str, tuple or pyopencl.Device
            ``None``: ``$PYOPENCL_CTX`` if set, else the first GPU, else the
            first device (unless an NVIDIA driver is installed without its
            ICD file: then :class:`DeviceNotFoundError`); ``"gpu"`` or
            ``"cpu"``: the first device of that type; ``"P:D"``, ``"P"`` or
            ``(P, D)``: platform P, device D (as ``PYOPENCL_CTX``); a leading
            ``"opencl:"`` is ignored.
        **kwargs
            Passed to the constructor.

        Raises
        ------
        DeviceNotFoundError
            No such device (the message says what is missing and how to fix
            it, e.g. a missing NVIDIA ICD file).  Never falls back silently.
        PyOpenCLMissingError
            pyopencl is not installed.
        """
        return cls(spec, **kwargs)

    # ------------------------------------------------------------ plumbing
    def _kernel(self, filename, name, argtypes, options=()):
        key = (filename, name, options)
        knl = self._kernels.get(key)
        if knl is None:
            prg = build_program(self.context, filename, tuple(options) + self._options)
            knl = cl.Kernel(prg, name)
            knl.set_scalar_arg_dtypes(argtypes)
            # the argument types again, one byte each, for the C launch
            knl.hetnet_codes = bytes(_CODE_OF[t] for t in argtypes)
            self._kernels[key] = knl
        return knl

    def _k(self, name):
        knl = self._kernels.get(name)
        if knl is None:
            filename, code = _KERNELS[name]
            knl = self._kernel(filename, name, _signature(code))
            self._kernels[name] = knl
        return knl

    def _launch(self, knl, gsize, lsize, *args):
        """Set ``args`` (buffers and scalars, in order) and enqueue ``knl``.

        On the H100 (NVIDIA OpenCL 3.0, driver 580) setting gemm_main's 24
        arguments costs 2.3 µs and the enqueue 9.7 µs of host time
        (benchmarks/results/gpu_launch.json), so arguments are simply set on
        every launch.  A version that re-enqueued per-call-site kernel clones
        holding their arguments was slower (a small gemm 17.8 against 13.0 µs;
        LeNet-5 at batch 64 29k against 33k images/s): building the lookup key
        costs more than setting the arguments.  With :attr:`c_enqueue` both
        are one C call (:func:`hetnet._cpu.clenqueue.launch`) that makes no
        event object (nothing waits on a kernel's event: the queue is in
        order)."""
        if self.c_enqueue:
            status = _clenqueue.launch(self._queue_ptr, knl.int_ptr, knl.hetnet_codes, args,
                                       gsize, lsize)
            if status:
                arg = _clenqueue.failed_arg
                what = (f"clSetKernelArg(argument {arg}: {args[arg]!r})" if arg >= 0
                        else f"clEnqueueNDRangeKernel(global {tuple(gsize)}, local {lsize})")
                raise OpenCLLaunchError(f"{knl.function_name}: {what} failed: "
                                        f"{status_name(status)} ({status})")
            return None
        knl.set_args(*args)
        return cl.enqueue_nd_range_kernel(self.queue, knl, gsize, lsize)

    def _round(self, n, wg=None):
        wg = wg or self.wg
        return max(wg, -(-n // wg) * wg)

    def _elementwise(self, name, n, *args):
        if n > 0:
            self._launch(self._k(name), (self._round(n),), (self.wg,), *args)

    def _out(self, out, shape, dtype=_F32):
        return self.empty(shape, dtype) if out is None else out

    # ---------------------------------------------------------------- memory
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

    # ------------------------------------------------------- linear algebra
    def gemm(self, a, b, c=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
        if c is None:
            c = self._gemm_out(a, b, trans_a, trans_b)
            beta = 0.0
        return self._gemm.run(a, b, c, trans_a, trans_b, alpha, beta)

    def gemm_variant(self, version, a, b, c=None, trans_a=False, trans_b=False,
                     alpha=1.0, beta=0.0, config=None):
        """Run one specific GEMM kernel (tests and benchmarks).

        Parameters
        ----------
        version : {1, 2, 3, 4, 5, "main"}
            1-4: the teaching kernels of ``clkernels/gemm.cl`` (2-D operands
            only; any M, N, K and transposes).  5 or ``"main"``: the
            production kernel with every option of :meth:`gemm`.
        a, b, c, trans_a, trans_b, alpha, beta
            As :meth:`gemm`.
        config : GemmConfig, optional
            Tile configuration of the production kernel (default: chosen as
            :meth:`gemm` does).
        """
        if version not in (1, 2, 3, 4, 5, "main"):
            raise ValueError(f"GEMM version must be 1, 2, 3, 4, 5 or 'main', got {version!r}")
        if version in (1, 2, 3, 4) and (a.ndim != 2 or b.ndim != 2):
            raise ValueError(f"GEMM v{version} takes 2-D operands, got {a.shape} and {b.shape}")
        if c is None:
            c = self._gemm_out(a, b, trans_a, trans_b)
            beta = 0.0
        if version in (5, "main"):
            return self._gemm.run(a, b, c, trans_a, trans_b, alpha, beta, cfg=config)
        return self._gemm.run_teaching(version, a, b, c, trans_a, trans_b, alpha, beta)

    def _gemm_out(self, a, b, trans_a, trans_b):
        m = a.shape[-1] if trans_a else a.shape[-2]
        n = b.shape[-2] if trans_b else b.shape[-1]
        if a.ndim == 3 or b.ndim == 3:
            nb = max(a.shape[0] if a.ndim == 3 else 1, b.shape[0] if b.ndim == 3 else 1)
            return self.empty((nb, m, n))
        return self.empty((m, n))

    # ---------------------------------------------------------- convolution
    def im2col(self, x, kh, kw, sh, sw, ph, pw, out=None):
        n, ch, h, w = x.shape
        ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
        out = self._out(out, (n, ch * kh * kw, ho * wo))
        self._elementwise("im2col", out.size, x.base_data, _off(x), out.base_data, _off(out),
                          n, ch, h, w, kh, kw, sh, sw, ph, pw, ho, wo)
        return out

    def col2im(self, cols, x_shape, kh, kw, sh, sw, ph, pw, out=None):
        n, ch, h, w = x_shape
        ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
        out = self._out(out, tuple(x_shape))
        self._elementwise("col2im", out.size, cols.base_data, _off(cols),
                          out.base_data, _off(out), n, ch, h, w, kh, kw, sh, sw, ph, pw, ho, wo)
        return out

    def maxpool2d(self, x, kh, kw, sh, sw, out=None, argmax=None):
        n, ch, h, w = x.shape
        ho, wo = conv_output_size(h, kh, sh, 0), conv_output_size(w, kw, sw, 0)
        out = self._out(out, (n, ch, ho, wo))
        argmax = self._out(argmax, (n, ch, ho, wo), _I32)
        self._elementwise("maxpool2d_fwd", out.size, x.base_data, _off(x),
                          out.base_data, _off(out), argmax.base_data, _off(argmax),
                          n * ch, h, w, kh, kw, sh, sw, ho, wo)
        return out, argmax

    def maxpool2d_backward(self, dy, argmax, x_shape, out=None):
        n, ch, h, w = x_shape
        out = self._out(out, tuple(x_shape))
        planes = n * ch
        if planes:
            wg = min(self.wg, 128)
            p = dy.size // planes
            self._launch(self._k("maxpool2d_bwd"), (planes * wg,), (wg,),
                         dy.base_data, _off(dy), argmax.base_data, _off(argmax),
                         out.base_data, _off(out), h * w, p)
        return out

    # ------------------------------------------------ bias and activations
    def bias_add(self, y, b):
        return self.bias_activation(y, b, "identity")

    def bias_activation(self, y, b, name):
        """Fused, in place: ``y = act(y + b[f])`` for ``y (N, F, ...)``, one
        pass over ``y``; ``b`` may be None (activation only).  Returns y."""
        if b is None:
            return self.activation(name, y, out=y)
        f = y.shape[1]
        s = y.size // (y.shape[0] * f) if y.size else 1
        self._elementwise("bias_act", y.size, y.base_data, _off(y), b.base_data, _off(b),
                          y.size, f, s, self._act_code(name))
        return y

    @staticmethod
    def _act_code(name):
        try:
            return _ACT_CODES[name]
        except KeyError:
            raise ValueError(f"unknown activation {name!r}; expected one of "
                             f"{sorted(_ACT_CODES) + ['softmax']}") from None

    def activation(self, name, x, out=None):
        out = self._out(out, x.shape)
        if name == "softmax":
            n, k = x.shape
            self._launch(self._k("softmax_fwd"), (self._round(n, 64),), (64,),
                         x.base_data, _off(x), out.base_data, _off(out), n, k)
            return out
        self._elementwise("activation_fwd", x.size, x.base_data, _off(x),
                          out.base_data, _off(out), x.size, self._act_code(name))
        return out

    def activation_backward(self, name, y, dy, out=None):
        out = self._out(out, y.shape)
        if name == "softmax":
            n, k = y.shape
            self._launch(self._k("softmax_bwd"), (self._round(n, 64),), (64,),
                         y.base_data, _off(y), dy.base_data, _off(dy),
                         out.base_data, _off(out), n, k)
            return out
        self._elementwise("activation_bwd", y.size, y.base_data, _off(y), dy.base_data,
                          _off(dy), out.base_data, _off(out), y.size, self._act_code(name))
        return out

    # -------------------------------------------------------------- losses
    def _loss(self, kernel, pred, target, weights, grad_out, scale, *mode):
        n, k = pred.shape
        grad = self._out(grad_out, pred.shape)
        loss = self.empty((1,))
        groups = min(64, max(1, -(-n // (8 * self.wg))))
        w = weights if weights is not None else pred
        part = loss if groups == 1 else self.empty((groups,))
        self._launch(self._k(kernel), (groups * self.wg,), (self.wg,),
                     pred.base_data, _off(pred), target.base_data, _off(target),
                     w.base_data, _off(w), int(weights is not None),
                     grad.base_data, _off(grad), part.base_data, _off(part),
                     n, k, scale if groups == 1 else 1.0, *mode)
        if groups > 1:
            self._launch(self._k("sum_partial"), (self.wg,), (self.wg,),
                         part.base_data, 0, groups, loss.base_data, 0, scale)
        return loss, grad

    def softmax_cross_entropy(self, logits, labels, weights=None, grad_out=None):
        return self._loss("softmax_xent", logits, labels, weights, grad_out,
                          1.0 / logits.shape[0])

    def sigmoid_binary_cross_entropy(self, logits, targets, weights=None, grad_out=None):
        n = logits.shape[0]
        return self._loss("pointwise_loss", logits, targets, weights, grad_out,
                          1.0 / n, _LOSS_BCE, 1.0 / n)

    def mse(self, pred, targets, weights=None, grad_out=None):
        nk = pred.shape[0] * pred.shape[1]
        return self._loss("pointwise_loss", pred, targets, weights, grad_out,
                          1.0 / nk, _LOSS_MSE, 2.0 / nk)

    def mae(self, pred, targets, weights=None, grad_out=None):
        nk = pred.shape[0] * pred.shape[1]
        return self._loss("pointwise_loss", pred, targets, weights, grad_out,
                          1.0 / nk, _LOSS_MAE, 1.0 / nk)

    # ----------------------------------------------------------- optimisers
    def sgd_update(self, w, g, v, lr, momentum=0.0, weight_decay=0.0, nesterov=False,
                   scale=1.0):
        if v is None:
            if momentum:
                raise ValueError("sgd_update needs a velocity array when momentum != 0")
            v = w
        self._elementwise("sgd_step", w.size, w.base_data, _off(w), g.base_data, _off(g),
                          v.base_data, _off(v), w.size, lr, momentum, weight_decay,
                          int(bool(nesterov)), scale)
        return w

    def adam_update(self, w, g, m, v, lr, beta1, beta2, eps, t, weight_decay=0.0,
                    decoupled=False, scale=1.0):
        # bias corrections and decay once here, in double, not per element
        step = lr / (1.0 - beta1 ** t)
        inv_c2s = 1.0 / math.sqrt(1.0 - beta2 ** t)
        l2, decay = (0.0, 1.0 - lr * weight_decay) if decoupled else (weight_decay, 1.0)
        self._elementwise("adam_step", w.size, w.base_data, _off(w), g.base_data, _off(g),
                          m.base_data, _off(m), v.base_data, _off(v), w.size,
                          beta1, beta2, eps, step, inv_c2s, l2, decay, scale)
        return w

    def rmsprop_update(self, w, g, sq, buf, lr, alpha, eps, momentum=0.0, weight_decay=0.0,
                       scale=1.0):
        if buf is None:
            if momentum:
                raise ValueError("rmsprop_update needs a momentum buffer when momentum != 0")
            buf = sq
        self._elementwise("rmsprop_step", w.size, w.base_data, _off(w), g.base_data, _off(g),
                          sq.base_data, _off(sq), buf.base_data, _off(buf), w.size,
                          lr, alpha, eps, momentum, weight_decay, scale)
        return w

    # ----------------------------------------------------------- reductions
    def sum(self, x):
        out = self.empty((1,))
        n = x.size
        groups = min(256, max(1, -(-n // (16 * self.wg))))
        part = out if groups == 1 else self.empty((groups,))
        self._launch(self._k("sum_partial"), (groups * self.wg,), (self.wg,),
                     x.base_data, _off(x), n, part.base_data, _off(part), 1.0)
        if groups > 1:
            self._launch(self._k("sum_partial"), (self.wg,), (self.wg,),
                         part.base_data, 0, groups, out.base_data, 0, 1.0)
        return out

    def sum_squares(self, x, out=None, accumulate=False):
        if out is None:
            out = self.zeros((1,))
        n = x.size
        groups = min(256, max(1, -(-n // (16 * self.wg))))
        if groups == 1:
            self._launch(self._k("sumsq_partial"), (self.wg,), (self.wg,),
                         x.base_data, _off(x), n, out.base_data, _off(out), 1, int(accumulate))
            return out
        part = self.empty((groups,))
        self._launch(self._k("sumsq_partial"), (groups * self.wg,), (self.wg,),
                     x.base_data, _off(x), n, part.base_data, 0, 1, 0)
        self._launch(self._k("sumsq_partial"), (self.wg,), (self.wg,),
                     part.base_data, 0, groups, out.base_data, _off(out), 0, int(accumulate))
        return out

    @staticmethod
    def _features(dy):
        """``dy`` (N, F, ...) as the (N, F, S) the bias-gradient kernels
        index: S elements per sample and feature."""
        n, f = dy.shape[0], dy.shape[1]
        return n, f, (dy.size // (n * f) if dy.size else 1)

    def bias_grad(self, dy, out=None):
        n, f, s = self._features(dy)
        out = self._out(out, (f,))
        self._launch(self._k("bias_grad"), (f * self.wg,), (self.wg,),
                     dy.base_data, _off(dy), out.base_data, _off(out), n, f, s)
        return out

    #: ``act_bias_grad`` runs one work-group per feature, each reading and
    #: writing all of its feature's N*S elements; beyond this many elements a
    #: work-item, the fully parallel activation_bwd plus bias_grad (which only
    #: reads) is faster on the device than the launch it saves on the host
    #: (LeNet-5 at batch 256 on the H100: 1018 µs of kernels a step fused
    #: everywhere, gpu_lenet5_fused-everywhere.json; 891 with two launches,
    #: gpu_lenet5_c-launch.json; 800 with this limit, gpu_lenet5_flat.json)
    FUSED_BIAS_GRAD_PER_ITEM = 32

    def activation_bias_backward(self, name, y, dy, db=None):
        """One launch for both (``act_bias_grad``) when there is a bias, the
        activation is elementwise (not identity: then bias_grad alone) and
        each feature has few elements (:attr:`FUSED_BIAS_GRAD_PER_ITEM`);
        the default's two operations otherwise."""
        n, f, s = self._features(dy)
        if (db is None or name in ("identity", "softmax")
                or n * s > self.FUSED_BIAS_GRAD_PER_ITEM * self.wg):
            return super().activation_bias_backward(name, y, dy, db)
        self._launch(self._k("act_bias_grad"), (f * self.wg,), (self.wg,),
                     y.base_data, _off(y), dy.base_data, _off(dy), db.base_data, _off(db),
                     n, f, s, self._act_code(name))
        return dy

    def argmax(self, x, out=None):
        n, k = x.shape
        out = self._out(out, (n,), _I32)
        self._launch(self._k("argmax_rows"), (self._round(n, 64),), (64,),
                     x.base_data, _off(x), out.base_data, _off(out), n, k)
        return out

    def axpy(self, alpha, x, y):
        self._elementwise("axpy", y.size, alpha, x.base_data, _off(x),
                          y.base_data, _off(y), y.size)
        return y

    def scale(self, alpha, x):
        self._elementwise("scale", x.size, alpha, x.base_data, _off(x), x.size)
        return x
