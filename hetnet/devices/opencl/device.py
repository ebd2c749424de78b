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
the kernel from C (:mod:`hetnet.devices.opencl._clenqueue`, no event object), or,
where that is not built, is pyopencl's ``set_args`` +
``enqueue_nd_range_kernel`` (a fraction of the host time of pyopencl's
convenience call; docs/performance.md, "Kernel launch").  Non-blocking host copies keep their
events until done (dropping pyopencl's NannyEvent would wait for the copy).  Temporaries come from a
``pyopencl.tools.MemoryPool``.  Uploads of large host arrays on a GPU go
through pinned staging buffers, queued without waiting.

Examples
--------
>>> from hetnet.devices.opencl import OpenCLDevice, opencl_devices
>>> opencl_devices()                                   # doctest: +SKIP
[('NVIDIA CUDA', 'NVIDIA GeForce RTX 4090', 'gpu')]
>>> dev = OpenCLDevice.from_spec("gpu")                # doctest: +SKIP
"""


import collections
import math

import numpy as np

from .gemm import Gemm, GemmConfig
from .launch import (OpenCLLaunchError, c_enqueue_available, c_enqueue_built, enqueue,
                     make_kernel, round_up, signature)
from .memory import OpenCLMemory, _StagingUploader, _off
from .platform import (DeviceNotFoundError, PyOpenCLMissingError, cl, device_type_name,
                       find_device, opencl_devices, require_pyopencl)
from ..base import (Device, conv_output_size, check_gemm, check_maxpool_backward,
                    check_same_size)
from ..compose import Im2colConvolution
from .layers import OpenCLLayerOps

__all__ = ["OpenCLDevice", "DeviceNotFoundError", "PyOpenCLMissingError",
           "OpenCLLaunchError", "opencl_devices", "GemmConfig"]

_F32, _I32 = np.float32, np.int32

#: Activation name -> code understood by elementwise.cl (lookup, not if-chain).
_ACT_CODES = {"identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3}

_LOSS_BCE, _LOSS_MSE, _LOSS_MAE = 0, 1, 2       # modes of loss.cl's pointwise_loss


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
    "swap_leading_axes": ("elementwise.cl", "bi bi iii"),
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


class OpenCLDevice(OpenCLLayerOps, OpenCLMemory, Im2colConvolution, Device):
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
        earlier steps' kernels do.  Default: on for GPUs, where a step's
        upload then hides behind compute (docs/performance.md, "Overlapped
        uploads"), off for CPU devices.
    c_enqueue : bool, optional
        Launch kernels from C (:mod:`hetnet.devices.opencl._clenqueue`: arguments set
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
        optimizer updates them in one launch (:mod:`hetnet.runtime.flatparams`);
        set it False on an instance for one launch per parameter array.
    """

    #: kernels' arguments, pinned read buffers and staged inputs are per device
    thread_safe = False

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
        available = c_enqueue is not False and c_enqueue_available()
        if c_enqueue and not available:
            raise RuntimeError(
                "c_enqueue=True, but kernels cannot be enqueued from C here: "
                + ("hetnet's extension hetnet.devices.opencl._clenqueue is not built "
                   "(`python setup.py build_ext --inplace`)" if not c_enqueue_built()
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
    # ------------------------------------------------------------ launching
    def kernel(self, filename, name, argtypes, options=()):
        """Kernel ``name`` of ``clkernels/filename`` built with ``options``
        (``-D`` defines) and this device's own, argument types declared
        (:func:`hetnet.devices.opencl.launch.signature`); built once, kept."""
        key = (filename, name, tuple(options))
        knl = self._kernels.get(key)
        if knl is None:
            knl = make_kernel(self.context, filename, name, argtypes,
                              tuple(options) + self._options)
            self._kernels[key] = knl
        return knl

    def _k(self, name):
        knl = self._kernels.get(name)
        if knl is None:
            filename, code = _KERNELS[name]
            knl = self.kernel(filename, name, signature(code))
            self._kernels[name] = knl
        return knl

    def launch(self, knl, gsize, lsize, *args):
        """Set ``args`` (buffers and scalars, in order) and enqueue ``knl``
        on this device's queue (:func:`hetnet.devices.opencl.launch.enqueue`)."""
        return enqueue(self.queue, knl, gsize, lsize, args, self.c_enqueue, self._queue_ptr)

    def round_up(self, n, wg=None):
        """``n`` work-items rounded up to whole work-groups (default size :attr:`wg`)."""
        return round_up(n, wg or self.wg)

    # the names kernels outside this class were written against
    _kernel, _launch, _round = kernel, launch, round_up

    def _elementwise(self, name, n, *args):
        if n > 0:
            self.launch(self._k(name), (self.round_up(n),), (self.wg,), *args)

    def _out(self, out, shape, dtype=_F32):
        return self.empty(shape, dtype) if out is None else out

    # ------------------------------------------------------- linear algebra
    def gemm(self, a, b, c=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
        check_gemm(a, b, c, trans_a, trans_b)
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
        check_maxpool_backward(dy, argmax, x_shape)
        n, ch, h, w = x_shape
        out = self._out(out, tuple(x_shape))
        planes = n * ch
        if planes:
            wg = min(self.wg, 128)
            p = dy.size // planes
            self.launch(self._k("maxpool2d_bwd"), (planes * wg,), (wg,),
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

    def swap_leading_axes(self, x, out=None):
        a, b = x.shape[0], x.shape[1]
        k = int(np.prod(x.shape[2:]))
        out = self._out(out, (b, a) + tuple(x.shape[2:]))
        self._elementwise("swap_leading_axes", x.size, x.base_data, _off(x),
                          out.base_data, _off(out), a, b, k)
        return out

    def activation(self, name, x, out=None):
        out = self._out(out, x.shape)
        if name == "softmax":
            n, k = x.shape
            self.launch(self._k("softmax_fwd"), (self.round_up(n, 64),), (64,),
                         x.base_data, _off(x), out.base_data, _off(out), n, k)
            return out
        self._elementwise("activation_fwd", x.size, x.base_data, _off(x),
                          out.base_data, _off(out), x.size, self._act_code(name))
        return out

    def activation_backward(self, name, y, dy, out=None):
        out = self._out(out, y.shape)
        if name == "softmax":
            n, k = y.shape
            self.launch(self._k("softmax_bwd"), (self.round_up(n, 64),), (64,),
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
        self.launch(self._k(kernel), (groups * self.wg,), (self.wg,),
                     pred.base_data, _off(pred), target.base_data, _off(target),
                     w.base_data, _off(w), int(weights is not None),
                     grad.base_data, _off(grad), part.base_data, _off(part),
                     n, k, scale if groups == 1 else 1.0, *mode)
        if groups > 1:
            self.launch(self._k("sum_partial"), (self.wg,), (self.wg,),
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
        check_same_size("sgd_update", w, g=g, v=v)
        self._elementwise("sgd_step", w.size, w.base_data, _off(w), g.base_data, _off(g),
                          v.base_data, _off(v), w.size, lr, momentum, weight_decay,
                          int(bool(nesterov)), scale)
        return w

    def adam_update(self, w, g, m, v, lr, beta1, beta2, eps, t, weight_decay=0.0,
                    decoupled=False, scale=1.0):
        check_same_size("adam_update", w, g=g, m=m, v=v)
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
        check_same_size("rmsprop_update", w, g=g, sq=sq, buf=buf)
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
        self.launch(self._k("sum_partial"), (groups * self.wg,), (self.wg,),
                     x.base_data, _off(x), n, part.base_data, _off(part), 1.0)
        if groups > 1:
            self.launch(self._k("sum_partial"), (self.wg,), (self.wg,),
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
        self.launch(self._k("bias_grad"), (f * self.wg,), (self.wg,),
                     dy.base_data, _off(dy), out.base_data, _off(out), n, f, s)
        return out

    #: ``act_bias_grad`` runs one work-group per feature, each reading and
    #: writing all of its feature's N*S elements; beyond this many elements a
    #: work-item, the fully parallel activation_bwd plus bias_grad (which only
    #: reads) is faster on the device than the launch it saves on the host
    #: (docs/performance.md, "Fused bias gradient")
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
        self.launch(self._k("act_bias_grad"), (f * self.wg,), (self.wg,),
                     y.base_data, _off(y), dy.base_data, _off(dy), db.base_data, _off(db),
                     n, f, s, self._act_code(name))
        return dy

    def argmax(self, x, out=None):
        n, k = x.shape
        out = self._out(out, (n,), _I32)
        self.launch(self._k("argmax_rows"), (self.round_up(n, 64),), (64,),
                     x.base_data, _off(x), out.base_data, _off(out), n, k)
        return out

    def axpy(self, alpha, x, y):
        self._elementwise("axpy", y.size, alpha, x.base_data, _off(x),
                          y.base_data, _off(y), y.size)
        return y

    def scale(self, alpha, x):
        self._elementwise("scale", x.size, alpha, x.base_data, _off(x), x.size)
        return x
