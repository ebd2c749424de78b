"""CPUDevice: numpy arrays, Cython+OpenMP kernels, GEMM through SciPy's BLAS."""

import os
import contextlib
import threading
import weakref

import numpy as np

from .base import (Device, HostArrays, conv_output_size, check_gemm, check_maxpool_backward,
                   check_same_size)
from .compose import Im2colConvolution
from ._cpu_layers import CPULayerOps
from .._cpu import blas as _blas, conv as _conv, elementwise as _ew

_F32 = np.float32
_ACT_CODES = {"identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3}
_EMPTY = np.empty(0, dtype=_F32)
_EMPTY4 = np.empty((0, 0, 0, 0), dtype=_F32)


def default_num_threads():
    """Threads for the CPU kernels: ``HETNET_NUM_THREADS``, else
    ``OMP_NUM_THREADS``, else the CPUs this process may run on, less two on
    machines with more than eight.

    OpenMP threads wait for work by spinning; with every core taken they
    crowd out the threads a step also needs (a GPU driver's, the OS's), and
    a step slows severalfold, on the CPU and with a GPU alike
    (docs/performance.md, "CPU threads")."""
    for var in ("HETNET_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                n = int(value.split(",")[0])
            except ValueError:
                raise ValueError(f"{var}={value!r} is not a whole number of threads") from None
            if n < 1:
                raise ValueError(f"{var}={value!r}: the thread count must be at least 1")
            return n
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return n - 2 if n > 8 else n


def _scipy_blas_controller():
    """threadpoolctl's controller for the OpenBLAS that our sgemm calls, or None."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    libs = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    scipy_libs = [c for c in libs if "scipy.libs" in c.filepath or os.sep + "scipy" + os.sep in c.filepath]
    if scipy_libs:
        return scipy_libs[0]
    return libs[0] if len(libs) == 1 else None


def blas_description():
    """The BLAS library behind the CPU's GEMM, as text (``"unknown"`` when
    threadpoolctl cannot tell)."""
    ctl = _scipy_blas_controller()
    if ctl is None:
        return "unknown"
    arch = getattr(ctl, "architecture", None)
    return f"{ctl.internal_api} {ctl.version}" + (f" ({arch})" if arch else "")


def openmp_enabled():
    """Whether the CPU kernels were compiled with OpenMP."""
    return bool(_blas.openmp_enabled())


def _flat(a):
    return a.reshape(-1)


def _as3(a):
    """View an (N, F, ...) array as (N, F, P)."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def _weights_arg(weights):
    return _EMPTY if weights is None else weights


class CPUDevice(CPULayerOps, HostArrays, Im2colConvolution, Device):
    """Runs every operation on the host CPU.

    Parameters
    ----------
    num_threads : int, optional
        OpenMP threads for the kernels; default :func:`default_num_threads`.
    workspace_bytes : int
        Bound on the im2col workspace a convolution uses per chunk of the batch.
    """

    kind = "cpu"
    #: gradients up to this many elements (8 MB) are updated by the threads
    #: that wrote them (see :meth:`_update_threads`)
    UPDATE_HINT_ELEMENTS = 1 << 21

    def __init__(self, num_threads=None, workspace_bytes=Im2colConvolution.workspace_bytes):
        super().__init__()
        n = default_num_threads() if num_threads is None else int(num_threads)
        if n < 1:
            raise ValueError(f"num_threads must be at least 1, got {num_threads!r}")
        if not _blas.openmp_enabled():
            n = 1
        self.num_threads = n
        self.workspace_bytes = int(workspace_bytes)
        self.name = "cpu"
        self._blas_ctl = _scipy_blas_controller()
        self._scratch_local = threading.local()
        self._writers = {}     # id(array) -> (weak ref, row blocks its last GEMM wrote)

    @property
    def _partials(self):
        """Scratch buffers (GEMM partial sums, the convolutions' unrolled
        columns) of the calling thread: one device serves every model of the
        process, and two models run from two threads must not share them."""
        local = self.__dict__.get("_scratch_local")
        if local is None:          # a device unpickled from before the field existed
            local = self._scratch_local = threading.local()
        d = getattr(local, "buffers", None)
        if d is None:
            d = local.buffers = {}
        return d

    def __getstate__(self):
        state = dict(self.__dict__)
        for key in ("_scratch_local", "_ws_local"):   # scratch is per thread and process
            state.pop(key, None)
        return state

    @contextlib.contextmanager
    def session(self):
        """Keep the BLAS single-threaded while hetnet drives the threads.

        Our kernels split work over OpenMP threads and call the BLAS inside
        them; a multi-threaded BLAS underneath would oversubscribe the cores.
        """
        ctl = self._blas_ctl
        if ctl is None:
            yield self
            return
        before = ctl.num_threads
        ctl.set_num_threads(1)
        try:
            yield self
        finally:
            ctl.set_num_threads(before)

    # ------------------------------------------------------- linear algebra
    def gemm(self, a, b, c=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
        check_gemm(a, b, c, trans_a, trans_b)
        a3 = a if a.ndim == 3 else a[None]
        b3 = b if b.ndim == 3 else b[None]
        m = a3.shape[2] if trans_a else a3.shape[1]
        n = b3.shape[1] if trans_b else b3.shape[2]
        nb = max(a3.shape[0], b3.shape[0])
        batched = a.ndim == 3 or b.ndim == 3
        if c is None:
            c = np.empty((nb, m, n) if batched else (m, n), dtype=_F32)
            beta = 0.0
        if batched and c.ndim == 2:
            _blas.gemm_batch_sum(a3, b3, c, self._partial(m, n),
                                 trans_a, trans_b, alpha, beta, self.num_threads)
        else:
            blocks = _blas.gemm(a3, b3, c if c.ndim == 3 else c[None], trans_a, trans_b,
                                alpha, beta, self.num_threads)
            if blocks:
                self._remember_writers(c, blocks)
        return c

    def gather_rows(self, X, idx, out=None):
        if (isinstance(idx, slice) or X.dtype != _F32 or not X.flags.c_contiguous
                or X.ndim < 2 or X.shape[0] == 0):
            return super().gather_rows(X, idx, out)
        idx = np.asarray(idx, dtype=np.int64)
        out = self._rows_out(out, X, len(idx))
        if len(idx) == 0:
            return out
        bad = _ew.gather_rows(X.reshape(X.shape[0], -1), idx, out.reshape(len(idx), -1),
                              self.num_threads)
        if bad >= 0:
            raise IndexError(f"row index {idx[bad]} is out of range for {X.shape[0]} rows")
        self._count("to_device", out.nbytes)
        return out

    def _partial(self, m, n):
        """Per-thread ``(num_threads, m, n)`` accumulators for batch-summed
        GEMM, carved from one buffer that grows on demand."""
        size = self.num_threads * m * n
        buf = self._partials.get("gemm")
        if buf is None or buf.size < size:
            buf = np.empty(size, dtype=_F32)
            self._partials["gemm"] = buf
        return buf[:size].reshape(self.num_threads, m, n)

    # ---------------------------------------------------------- convolution
    def conv_workspace_bytes(self, batch, col_shape):
        # the fused kernel unrolls one image per thread at a time
        return 4 * min(batch, self.num_threads) * col_shape[0] * col_shape[1]

    def _scratch(self, key, shape):
        """A reused float32 buffer of at least ``shape`` (returned exactly so)."""
        size = int(np.prod(shape))
        buf = self._partials.get(key)
        if buf is None or buf.size < size:
            buf = self._partials[key] = np.empty(size, dtype=_F32)
        return buf[:size].reshape(shape)

    def conv2d(self, x, w, b, stride, pad, activation="identity", out=None):
        n, _, h, wd = x.shape
        f, c, kh, kw = w.shape
        (sh, sw), (ph, pw) = stride, pad
        ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(wd, kw, sw, pw)
        if out is None:
            out = np.empty((n, f, ho, wo), dtype=_F32)
        ws = self._scratch("conv_ws", (self.num_threads, c * kh * kw * ho * wo))
        _conv.conv2d_forward(x, w.reshape(f, -1), _EMPTY if b is None else b,
                             out.reshape(n, f, ho * wo), ws, kh, kw, sh, sw, ph, pw,
                             _ACT_CODES[activation], self.num_threads)
        return out

    def conv2d_backward(self, x, w, y, dy, stride, pad, activation, dw, db=None,
                        need_dx=True, dx=None):
        n, c, h, wd = x.shape
        f, _, kh, kw = w.shape
        (sh, sw), (ph, pw) = stride, pad
        p = dy.shape[2] * dy.shape[3]
        rows = c * kh * kw
        if need_dx and dx is None:
            dx = np.empty(x.shape, dtype=_F32)
        nt = self.num_threads
        _conv.conv2d_backward(
            x, w.reshape(f, rows), y.reshape(n, f, p), dy.reshape(n, f, p),
            dw.reshape(f, rows), _EMPTY if db is None else db,
            dx if need_dx else _EMPTY4, self._scratch("conv_ws", (nt, rows * p)),
            self._scratch("conv_dw", (nt, f * rows)), self._scratch("conv_db", (nt, f)),
            kh, kw, sh, sw, ph, pw, _ACT_CODES[activation], need_dx, nt)
        return dx if need_dx else None

    def im2col(self, x, kh, kw, sh, sw, ph, pw, out=None):
        n, ch, h, w = x.shape
        p = conv_output_size(h, kh, sh, ph) * conv_output_size(w, kw, sw, pw)
        if out is None:
            out = np.empty((n, ch * kh * kw, p), dtype=_F32)
        _conv.im2col(x, out, kh, kw, sh, sw, ph, pw, self.num_threads)
        return out

    def col2im(self, cols, x_shape, kh, kw, sh, sw, ph, pw, out=None):
        if out is None:
            out = np.empty(x_shape, dtype=_F32)
        _conv.col2im(cols, out, kh, kw, sh, sw, ph, pw, self.num_threads)
        return out

    def maxpool2d(self, x, kh, kw, sh, sw, out=None, argmax=None):
        n, ch, h, w = x.shape
        shape = (n, ch, conv_output_size(h, kh, sh, 0), conv_output_size(w, kw, sw, 0))
        if out is None:
            out = np.empty(shape, dtype=_F32)
        if argmax is None:
            argmax = np.empty(shape, dtype=np.int32)
        _conv.maxpool2d(x, out, argmax, kh, kw, sh, sw, self.num_threads)
        return out, argmax

    def maxpool2d_backward(self, dy, argmax, x_shape, out=None):
        check_maxpool_backward(dy, argmax, x_shape)
        if out is None:
            out = np.empty(x_shape, dtype=_F32)
        bad = _conv.maxpool2d_backward(dy, argmax, out, self.num_threads)
        if bad:
            raise IndexError(f"maxpool2d_backward: {bad} arg-max entries lie outside their "
                             f"{x_shape[2]}x{x_shape[3]} plane")
        return out

    # ------------------------------------------------ bias and activations
    def bias_add(self, y, b):
        _ew.bias_act(_as3(y), b, 0, self.num_threads)
        return y

    def bias_activation(self, y, b, name):
        """In place ``y = act(y + b)`` along axis 1 (fused bias + activation)."""
        _ew.bias_act(_as3(y), _EMPTY if b is None else b, _ACT_CODES[name], self.num_threads)
        return y

    def bias_grad(self, dy, out=None):
        if out is None:
            out = np.empty(dy.shape[1], dtype=_F32)
        _ew.bias_grad(_as3(dy), out, self.num_threads)
        return out

    def swap_leading_axes(self, x, out=None):
        # a strided copy: numpy's is memory-bound already
        if out is None:
            out = np.empty((x.shape[1], x.shape[0]) + x.shape[2:], dtype=_F32)
        np.copyto(out, np.swapaxes(x, 0, 1))
        return out

    def activation(self, name, x, out=None):
        if out is None:
            out = np.empty_like(x)
        if name == "softmax":
            _ew.softmax_rows(x, out, self.num_threads)
        else:
            _ew.act_forward(_flat(x), _flat(out), _ACT_CODES[name], self.num_threads)
        return out

    def activation_backward(self, name, y, dy, out=None):
        if out is None:
            out = np.empty_like(dy)
        if name == "softmax":
            _ew.softmax_backward(y, dy, out, self.num_threads)
        else:
            _ew.act_backward(_flat(y), _flat(dy), _flat(out), _ACT_CODES[name], self.num_threads)
        return out

    def activation_bias_backward(self, name, y, dy, db=None):
        if dy.ndim != 2 or db is None or name == "softmax":
            return super().activation_bias_backward(name, y, dy, db)
        _ew.act_backward_bias_grad(y, dy, db, _ACT_CODES[name], self.num_threads)
        return dy

    # -------------------------------------------------------------- losses
    def _loss(self, kernel, pred, target, weights, grad_out):
        if grad_out is None:
            grad_out = np.empty_like(pred)
        loss = kernel(pred, target, _weights_arg(weights), grad_out, self.num_threads)
        return np.array([loss], dtype=_F32), grad_out

    def softmax_cross_entropy(self, logits, labels, weights=None, grad_out=None):
        return self._loss(_ew.softmax_cross_entropy, logits, labels, weights, grad_out)

    def sigmoid_binary_cross_entropy(self, logits, targets, weights=None, grad_out=None):
        return self._loss(_ew.sigmoid_bce, logits, targets, weights, grad_out)

    def mse(self, pred, targets, weights=None, grad_out=None):
        return self._loss(_ew.mse, pred, targets, weights, grad_out)

    def mae(self, pred, targets, weights=None, grad_out=None):
        return self._loss(_ew.mae, pred, targets, weights, grad_out)

    # ----------------------------------------------------------- optimisers
    def _remember_writers(self, c, blocks):
        """Note that ``c`` was just written in ``blocks`` contiguous row
        blocks, one per thread (see :meth:`_update_threads`)."""
        writers = self._writers
        if len(writers) >= 4096:          # a hint, not a registry: forget old arrays
            writers.clear()
        writers[id(c)] = (weakref.ref(c), blocks)   # holds no array alive

    def _update_threads(self, g):
        """Threads for an optimizer update reading gradient ``g``: exactly as
        many as wrote ``g``, if a GEMM just wrote it in contiguous row blocks
        (else None: the update's own rule by its size).  Each
        thread's static share of the update is then (nearly) the block it
        wrote itself and still holds in its core's cache; with another
        split, half the gradient crosses between cores, which can double the
        update's time.  Only for gradients up to :attr:`UPDATE_HINT_ELEMENTS`:
        larger ones stream from memory anyway, where more threads draw more
        bandwidth.  Exactly, not at most: fewer threads than wrote the
        gradient leave part of it in other cores' caches
        (docs/performance.md, "Update threads")."""
        entry = self._writers.get(id(g))
        if entry is not None and entry[0]() is g and g.size <= self.UPDATE_HINT_ELEMENTS:
            return min(entry[1], self.num_threads)
        return None

    def sgd_update(self, w, g, v, lr, momentum=0.0, weight_decay=0.0, nesterov=False,
                   scale=1.0):
        check_same_size("sgd_update", w, g=g, v=v)
        threads = self._update_threads(g)
        _ew.sgd_update(_flat(w), _flat(g), _EMPTY if v is None else _flat(v), lr,
                       momentum, weight_decay, nesterov, threads or self.num_threads,
                       threads is not None, scale)
        return w

    def adam_update(self, w, g, m, v, lr, beta1, beta2, eps, t, weight_decay=0.0,
                    decoupled=False, scale=1.0):
        check_same_size("adam_update", w, g=g, m=m, v=v)
        threads = self._update_threads(g)
        _ew.adam_update(_flat(w), _flat(g), _flat(m), _flat(v), lr, beta1, beta2, eps,
                        int(t), weight_decay, threads or self.num_threads, threads is not None,
                        decoupled, scale)
        return w

    def rmsprop_update(self, w, g, sq, buf, lr, alpha, eps, momentum=0.0, weight_decay=0.0,
                       scale=1.0):
        if buf is None and momentum:
            raise ValueError("rmsprop_update needs a momentum buffer when momentum != 0")
        check_same_size("rmsprop_update", w, g=g, sq=sq, buf=buf)
        threads = self._update_threads(g)
        _ew.rmsprop_update(_flat(w), _flat(g), _flat(sq), _EMPTY if buf is None else _flat(buf),
                           lr, alpha, eps, momentum, weight_decay, threads or self.num_threads,
                           threads is not None, scale)
        return w

    # ----------------------------------------------------------- reductions
    def sum(self, x):
        return np.array([_ew.total(_flat(x), self.num_threads)], dtype=_F32)

    def sum_squares(self, x, out=None, accumulate=False):
        s = _ew.sum_squares(_flat(x), self.num_threads)
        if out is None:
            out = np.zeros(1, dtype=_F32)
        out[0] = (float(out[0]) if accumulate else 0.0) + s
        return out

    def argmax(self, x, out=None):
        if out is None:
            out = np.empty(x.shape[0], dtype=np.int32)
        _ew.argmax_rows(x, out, self.num_threads)
        return out

    def axpy(self, alpha, x, y):
        _ew.axpy(alpha, _flat(x), _flat(y), self.num_threads)
        return y

    def scale(self, alpha, x):
        _ew.scale(alpha, _flat(x), self.num_threads)
        return x
