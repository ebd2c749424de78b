"""The device interface: the small operation set every layer is written in.

A layer never touches numpy or pyopencl directly; it asks its device for these
operations.  Every device implements the same set with the same names and the
same shapes, and ``tests/test_ops.py`` runs each one against the plain numpy
reference in :mod:`hetnet.devices.reference`.

Conventions
-----------
* Arrays are float32 (labels and arg-max indices int32), C-contiguous, NCHW.
* "Device array" means whatever the device stores: ``numpy.ndarray`` on the
  CPU devices, ``pyopencl.array.Array`` on OpenCL devices.
* Operations that produce an array take an optional ``out=`` and return it.
* Inputs are validated at the public API (layers, model); the operations
  assume shapes and dtypes are right.
"""

import contextlib

import numpy as np


class TransferPaths:
    """Copies that only the cost model's transfer tables time, beside the
    paths training takes (:meth:`Device.asarray`, :meth:`Device.to_host`):
    a device with pinned host memory overrides them."""

    def upload_pageable(self, a):
        """Host -> device from ordinary (pageable) memory; devices with a
        pinned path (see :meth:`asarray`) override this for the cost model's
        transfer tables.  Here: :meth:`asarray`."""
        return self.asarray(a)

    def download_pinned(self, a):
        """Device -> host through pinned memory, where the device has it;
        here: :meth:`to_host`."""
        return self.to_host(a)


class Device(TransferPaths):
    """Abstract device.  Subclasses implement every method below.

    Attributes
    ----------
    name : str
        Short name: ``"numpy"``, ``"cpu"``, ``"opencl:<platform>:<device>"``.
    kind : str
        ``"cpu"`` or ``"gpu"``.
    transfers : dict
        Counts and bytes of host<->device copies: ``{"to_device": n,
        "to_host": n, "bytes_to_device": b, "bytes_to_host": b}``.
    """

    name = "abstract"
    kind = "cpu"
    #: the model keeps the parameters here in one flat buffer and the
    #: optimizer updates them all in one operation (hetnet.runtime.flatparams): for
    #: devices where each operation costs a launch
    flat_update = False

    def __init__(self):
        self.transfers = {"to_device": 0, "to_host": 0,
                          "bytes_to_device": 0, "bytes_to_host": 0}

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"

    # ---------------------------------------------------------------- memory
    def asarray(self, a, dtype=np.float32):
        """Copy a host array to the device (float32 or int32, C-contiguous)."""
        raise NotImplementedError

    def to_host(self, a):
        """Copy a device array back to a new numpy array."""
        raise NotImplementedError

    def gather_rows(self, X, idx, out=None):
        """Rows ``idx`` (an index array or a slice) of host array ``X`` as a
        device array; ``out``, a device array of the right shape and dtype,
        is reused when given.  The default gathers on the host and uploads."""
        return self.asarray(X[idx], dtype=X.dtype)

    def empty(self, shape, dtype=np.float32):
        raise NotImplementedError

    def zeros(self, shape, dtype=np.float32):
        raise NotImplementedError

    def copy(self, a):
        """A new device array holding the same values as device array ``a``."""
        raise NotImplementedError

    def batch_slice(self, a, start, stop):
        """A view of rows ``start:stop`` of ``a`` along axis 0 (no copy)."""
        raise NotImplementedError

    def reshape(self, a, shape):
        """A view of device array ``a`` with a new shape (C order; one
        dimension may be -1).  Layers and the default operations reshape
        through here: a device's arrays may have a cheaper way than their
        own ``reshape`` (pyopencl's costs ~10 µs a call)."""
        return a.reshape(shape)

    def session(self):
        """Context manager entered around a fit / predict call (thread
        settings, queues).  The default does nothing."""
        return contextlib.nullcontext(self)

    def synchronize(self):
        """Wait until queued work has finished (no-op on synchronous devices)."""

    def _count(self, direction, nbytes):
        self.transfers[direction] += 1
        self.transfers["bytes_" + direction] += int(nbytes)

    # ------------------------------------------------------- linear algebra
    def gemm(self, a, b, c=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
        """General matrix multiply ``c = alpha * op(a) @ op(b) + beta * c``.

        ``a`` is ``(M, K)`` (``(K, M)`` when ``trans_a``) or batched
        ``(B, M, K)``; ``b`` is ``(K, N)`` (``(N, K)`` when ``trans_b``) or
        batched ``(B, K, N)``.  A 2-D operand is shared by every batch entry.
        ``c`` is ``(B, M, N)`` for a batched product, or ``(M, N)``: then a
        batched product is *summed over the batch* (used for weight gradients
        of convolutions).  ``beta`` is ignored (taken as 0) when ``c`` is None.
        """
        raise NotImplementedError

    # ---------------------------------------------------------- convolution
    def conv2d(self, x, w, b, stride, pad, activation="identity", out=None):
        """Convolution with bias and activation.

        x ``(N, C, H, W)``, w ``(F, C, kh, kw)``, b ``(F,)`` or None,
        stride and pad pairs; returns y ``(N, F, Ho, Wo)``, ``y = act(conv(x,
        w) + b)``.  :class:`hetnet.devices.compose.Im2colConvolution`
        composes it from :meth:`im2col` and :meth:`gemm`.
        """
        raise NotImplementedError

    def conv2d_backward(self, x, w, y, dy, stride, pad, activation, dw, db=None,
                        need_dx=True, dx=None):
        """Gradients of :meth:`conv2d` from its input ``x``, output ``y`` and
        output gradient ``dy`` (which may be overwritten).

        Writes ``dw`` (shape of w) and ``db`` (``(F,)``, when not None);
        returns ``dx`` (shape of x) when ``need_dx``, else None.
        """
        raise NotImplementedError

    def conv_workspace_bytes(self, batch, col_shape):
        """Bytes of workspace :meth:`conv2d` uses at this batch size for a
        layer whose im2col columns are ``col_shape`` per image (0: none)."""
        return 0

    def im2col(self, x, kh, kw, sh, sw, ph, pw, out=None):
        """Unroll patches: ``x (N, C, H, W)`` -> ``cols (N, C*kh*kw, Ho*Wo)``.

        ``cols[n, (c*kh + i)*kw + j, oy*Wo + ox] = x[n, c, oy*sh - ph + i,
        ox*sw - pw + j]``, zero outside the image.  ``Ho = (H + 2ph - kh)//sh + 1``.
        """
        raise NotImplementedError

    def col2im(self, cols, x_shape, kh, kw, sh, sw, ph, pw, out=None):
        """Adjoint of :meth:`im2col`: scatter-add ``cols`` back to ``x_shape``."""
        raise NotImplementedError

    def maxpool2d(self, x, kh, kw, sh, sw, out=None, argmax=None):
        """Max pooling without padding.  Returns ``(y, argmax)``.

        ``y`` is ``(N, C, Ho, Wo)`` with ``Ho = (H - kh)//sh + 1``; ``argmax``
        (int32, same shape) holds the flat index ``row*W + col`` of the winner
        inside its ``(H, W)`` plane (the first one on ties).
        """
        raise NotImplementedError

    def maxpool2d_backward(self, dy, argmax, x_shape, out=None):
        """Route ``dy`` to the arg-max positions; returns ``dx`` of ``x_shape``."""
        raise NotImplementedError

    # ------------------------------------------------ bias and activations
    def bias_add(self, y, b):
        """In place: ``y[:, f, ...] += b[f]`` for ``y (N, F, ...)``.  Returns y."""
        raise NotImplementedError

    def bias_activation(self, y, b, name):
        """In place ``y = act(y + b)`` along axis 1: the fused bias +
        activation of a dense or conv layer.  ``b`` may be None; ``name`` is
        ``identity``, ``relu``, ``sigmoid`` or ``tanh``.  Returns y."""
        raise NotImplementedError

    def bias_grad(self, dy, out=None):
        """``db[f] = sum of dy[:, f, ...]``, shape ``(F,)``."""
        raise NotImplementedError

    def activation(self, name, x, out=None):
        """Elementwise ``relu``, ``sigmoid``, ``tanh`` or ``identity``;
        ``softmax`` is taken over axis 1 of a 2-D ``x``.  ``out`` may be ``x``."""
        raise NotImplementedError

    def activation_backward(self, name, y, dy, out=None):
        """Gradient through an activation, from its *output* ``y``.

        relu: ``dy * (y > 0)``; sigmoid: ``dy * y * (1 - y)``; tanh:
        ``dy * (1 - y**2)``; softmax (rows): ``y * (dy - sum(dy * y))``.
        """
        raise NotImplementedError

    def activation_bias_backward(self, name, y, dy, db=None):
        """The backward pass between a layer's output and its GEMM, for ``y``
        and ``dy`` ``(N, F)`` or ``(N, F, ...)`` (features on axis 1): ``dy``
        becomes, in place, the gradient through activation ``name`` (from the
        output ``y``; softmax excluded) and, when given, ``db`` the bias
        gradient (:meth:`bias_grad` of the result).  Returns ``dy``.  Devices
        may do both in one pass; the default runs the two operations."""
        if name != "identity":
            dy = self.activation_backward(name, y, dy, out=dy)
        if db is not None:
            self.bias_grad(dy, out=db)
        return dy

    # -------------------------------------------------------------- losses
    def softmax_cross_entropy(self, logits, labels, weights=None, grad_out=None):
        """Fused, numerically stable softmax + cross-entropy.

        ``logits (N, K)``, ``labels (N,)`` int32 class indices, optional
        per-sample ``weights (N,)``.  Loss ``sum_i w_i * (lse_i - z_i[y_i]) / N``
        and its gradient ``w_i * (softmax_i - onehot_i) / N``.
        Returns ``(loss, grad)`` where ``loss`` is a device array of shape (1,).
        """
        raise NotImplementedError

    def sigmoid_binary_cross_entropy(self, logits, targets, weights=None, grad_out=None):
        """Fused sigmoid + binary cross-entropy over ``(N, K)`` logits and
        float targets in [0, 1]; loss is the mean over samples of the sum over
        outputs.  Returns ``(loss (1,), grad)``."""
        raise NotImplementedError

    def mse(self, pred, targets, weights=None, grad_out=None):
        """Mean squared error: ``sum_i w_i * sum_k (p - t)**2 / (N * K)``.
        Returns ``(loss (1,), grad)``."""
        raise NotImplementedError

    # ----------------------------------------------------------- optimisers
    def sgd_update(self, w, g, v, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        """In-place SGD step, PyTorch's convention.

        ``g' = g + weight_decay * w``; ``v = momentum * v + g'`` (if momentum);
        ``w -= lr * (g' + momentum * v)`` if nesterov else ``w -= lr * v``.
        ``v`` may be None when momentum is 0.
        """
        raise NotImplementedError

    def adam_update(self, w, g, m, v, lr, beta1, beta2, eps, t, weight_decay=0.0):
        """In-place Adam step (bias-corrected, step number ``t`` from 1)."""
        raise NotImplementedError

    # ----------------------------------------------------------- reductions
    def sum(self, x):
        """Sum of all elements, as a device array of shape (1,)."""
        raise NotImplementedError

    def argmax(self, x, out=None):
        """Row-wise arg-max of a 2-D array, int32 ``(N,)``."""
        raise NotImplementedError

    def axpy(self, alpha, x, y):
        """In place ``y += alpha * x`` (same shapes).  Returns y."""
        raise NotImplementedError

    def scale(self, alpha, x):
        """In place ``x *= alpha``.  Returns x."""
        raise NotImplementedError


def conv_output_size(size, k, s, p):
    """Output length of a convolution / pooling window along one axis."""
    return (size + 2 * p - k) // s + 1


class HostArrays:
    """Memory operations of the devices whose arrays are numpy arrays in host
    memory (the CPU and the numpy reference): "transfers" are copies."""

    def asarray(self, a, dtype=np.float32):
        a = np.asarray(a)
        self._count("to_device", a.nbytes)
        return np.array(a, dtype=dtype, order="C", copy=True)

    def to_host(self, a):
        self._count("to_host", a.nbytes)
        return np.array(a, copy=True)

    @staticmethod
    def _rows_out(out, X, n):
        """``out`` when it can take ``n`` rows of ``X``, else a new array for them."""
        shape = (n,) + X.shape[1:]
        if out is None or out.shape != shape or out.dtype != X.dtype:
            out = np.empty(shape, dtype=X.dtype)
        return out

    def gather_rows(self, X, idx, out=None):
        n = len(range(*idx.indices(X.shape[0]))) if isinstance(idx, slice) else len(idx)
        out = self._rows_out(out, X, n)
        if isinstance(idx, slice):
            np.copyto(out, X[idx])
        else:
            np.take(X, idx, axis=0, out=out)
        self._count("to_device", out.nbytes)
        return out

    def empty(self, shape, dtype=np.float32):
        return np.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype=np.float32):
        return np.zeros(shape, dtype=dtype)

    def copy(self, a):
        return a.copy()

    def batch_slice(self, a, start, stop):
        return a[start:stop]
