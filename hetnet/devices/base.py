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
    #: whether models in different threads may run on this one device at
    #: once (their scratch is per thread); False: the models refuse
    #: concurrent use of it (hetnet.model.guard)
    thread_safe = True

    def __init__(self):
        self.transfers = {"to_device": 0, "to_host": 0,
                          "bytes_to_device": 0, "bytes_to_host": 0}

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"

    def __deepcopy__(self, memo):
        # a device is a process-wide resource: a copied model or layer shares it
        return self

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

    # ------------------------------- normalisation, dropout, pooling, sums
    def maxpool2d_padded(self, x, kh, kw, sh, sw, ph, pw, out=None, argmax=None):
        """Max pooling with ``(ph, pw)`` of implicit ``-inf`` padding (as
        PyTorch's ``MaxPool2d(padding=...)``; ``ph <= kh // 2``, ``pw <= kw //
        2``, so every window holds at least one input value).

        ``y`` is ``(N, C, Ho, Wo)`` with ``Ho = (H + 2ph - kh)//sh + 1``;
        ``argmax`` as :meth:`maxpool2d` (the flat index inside the unpadded
        plane), so :meth:`maxpool2d_backward` routes its gradient.
        """
        raise NotImplementedError

    def avgpool2d(self, x, kh, kw, sh, sw, ph, pw, out=None):
        """Average pooling with zero padding counted in the divisor
        (PyTorch's ``count_include_pad=True``): ``y = sum(window) / (kh*kw)``.
        x ``(N, C, H, W)`` -> y ``(N, C, Ho, Wo)``, ``Ho = (H + 2ph - kh)//sh + 1``.
        A ``(H, W)`` window without padding is global average pooling."""
        raise NotImplementedError

    def avgpool2d_backward(self, dy, x_shape, kh, kw, sh, sw, ph, pw, out=None):
        """Adjoint of :meth:`avgpool2d`: every input position gets the sum of
        ``dy / (kh*kw)`` over the windows that cover it.  Returns ``dx``."""
        raise NotImplementedError

    def batchnorm_forward(self, x, gamma, beta, mean, invstd, running_mean, running_var,
                          momentum, eps, training, activation="identity", out=None):
        """Batch normalisation over axis 1 of ``x (N, C, ...)`` with a fused
        activation: ``y = act(gamma[c] * (x - mean[c]) * invstd[c] + beta[c])``.

        Training: ``mean`` and ``invstd = 1 / sqrt(var + eps)`` (``(C,)``,
        written) are the batch's, ``var`` biased, over the ``M = N * prod(...)``
        values of each channel; the running statistics are updated in place,
        ``running = (1 - momentum) * running + momentum * batch`` with the
        unbiased variance ``var * M / (M - 1)`` (needs ``M > 1``), as PyTorch.
        Inference: ``mean`` and ``invstd`` are written from the running
        statistics, which stay.  Either way ``mean`` and ``invstd`` are what
        :meth:`batchnorm_backward` needs.  Returns ``y``.
        """
        raise NotImplementedError

    def batchnorm_backward(self, x, y, dy, gamma, mean, invstd, training, activation,
                           dgamma, dbeta, need_dx=True, dx=None):
        """Gradients of :meth:`batchnorm_forward` from its input ``x``, output
        ``y``, output gradient ``dy`` (overwritten: it becomes the gradient
        through the activation, ``g``) and the ``mean``, ``invstd`` it wrote.

        With ``xhat = (x - mean) * invstd``: ``dbeta = sum g``, ``dgamma =
        sum g * xhat`` over all but axis 1 (written); ``dx = gamma * invstd *
        (g - (dbeta + xhat * dgamma) / M)`` in training (the statistics
        depend on the batch), ``gamma * invstd * g`` in inference.  Returns
        ``dx`` (shape of x) when ``need_dx``, else None.
        """
        raise NotImplementedError

    def dropout(self, x, p, key, out=None):
        """Inverted dropout with a counter-based mask: ``out[i] = x[i] / (1 - p)``
        where element ``i`` (flat index) is kept, else 0 (all 0 for p = 1).

        The mask is a pure function of ``(key, i)``: ``h = mix32(mix32(i) ^
        key)`` with ``mix32`` the 32-bit finaliser of
        :func:`mix32`, kept where ``(h >> 8) * 2**-24 >= p`` (both
        float32).  Every device computes the same bits, and the backward pass
        is the same call on ``dy`` with the same key (no mask is stored).
        ``key`` is an int in ``[0, 2**32)``; ``out`` may be ``x``.
        """
        raise NotImplementedError

    def add_activation(self, a, b, name, out=None):
        """``out = act(a + b)`` elementwise (same shapes; ``out`` may be
        ``a`` or ``b``): the sum of a residual block and its fused activation."""
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

    def swap_leading_axes(self, x, out=None):
        """A copy of ``x (A, B, *rest)`` with its first two axes swapped:
        ``(B, A, *rest)``, C-contiguous (float32)."""
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

    def mae(self, pred, targets, weights=None, grad_out=None):
        """Mean absolute error: ``sum_i w_i * sum_k |p - t| / (N * K)``,
        gradient ``w_i * sign(p - t) / (N * K)`` (0 where ``p == t``, as
        PyTorch's ``l1_loss``).  Returns ``(loss (1,), grad)``."""
        raise NotImplementedError

    # ----------------------------------------------------------- optimisers
    # Every update takes ``scale``: the gradient is read as ``scale * g``
    # (gradient clipping, hetnet.optim), before weight decay is added.
    def sgd_update(self, w, g, v, lr, momentum=0.0, weight_decay=0.0, nesterov=False,
                   scale=1.0):
        """In-place SGD step, PyTorch's convention.

        ``g' = scale * g + weight_decay * w``; ``v = momentum * v + g'`` (if
        momentum); ``w -= lr * (g' + momentum * v)`` if nesterov else
        ``w -= lr * v``.  ``v`` may be None when momentum is 0.
        """
        raise NotImplementedError

    def adam_update(self, w, g, m, v, lr, beta1, beta2, eps, t, weight_decay=0.0,
                    decoupled=False, scale=1.0):
        """In-place Adam step (bias-corrected, step number ``t`` from 1),
        PyTorch's ``Adam`` (``decoupled=False``: ``g' = scale * g +
        weight_decay * w``) or ``AdamW`` (``decoupled``: ``w *= 1 - lr *
        weight_decay`` first, ``g' = scale * g``); then ``m = b1 m + (1 - b1)
        g'``, ``v = b2 v + (1 - b2) g'^2``, ``w -= lr / (1 - b1^t) * m /
        (sqrt(v) / sqrt(1 - b2^t) + eps)``."""
        raise NotImplementedError

    def rmsprop_update(self, w, g, sq, buf, lr, alpha, eps, momentum=0.0, weight_decay=0.0,
                       scale=1.0):
        """In-place RMSProp step, PyTorch's (not centred): ``g' = scale * g +
        weight_decay * w``; ``sq = alpha sq + (1 - alpha) g'^2``; ``d = g' /
        (sqrt(sq) + eps)``; with momentum ``buf = momentum buf + d``, ``w -=
        lr buf``, else ``w -= lr d``.  ``buf`` may be None when momentum is 0."""
        raise NotImplementedError

    # ----------------------------------------------------------- reductions
    def sum(self, x):
        """Sum of all elements, as a device array of shape (1,)."""
        raise NotImplementedError

    def sum_squares(self, x, out=None, accumulate=False):
        """Sum of the squares of all elements into ``out`` (a device array
        of shape (1,)), added to what it holds when ``accumulate``.  Returns
        ``out``."""
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


MIX32_MUL = (0x7FEB352D, 0x846CA68B)
WEYL32 = 0x9E3779B9


def mix32(x):
    """The 32-bit finaliser every device's dropout hashes with (Wellons'
    ``lowbias32``: xor-shift, multiply, three times), on a Python int or a
    numpy uint32 array."""
    if isinstance(x, np.ndarray):
        x = x.astype(np.uint32)
        x ^= x >> np.uint32(16)
        x *= np.uint32(MIX32_MUL[0])
        x ^= x >> np.uint32(15)
        x *= np.uint32(MIX32_MUL[1])
        x ^= x >> np.uint32(16)
        return x
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * MIX32_MUL[0]) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * MIX32_MUL[1]) & 0xFFFFFFFF
    x ^= x >> 16
    return x


def dropout_key(seed, step):
    """The mask key of a dropout layer's ``step``-th training pass: a Weyl
    sequence in the step, hashed (``mix32(seed + (step + 1) * 0x9E3779B9)``)."""
    return mix32((int(seed) + (int(step) + 1) * WEYL32) & 0xFFFFFFFF)


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


# ---------------------------------------------------------------- checks
# Cheap shape checks at the public device operations: the kernels under them
# trust their arguments and would read or write past a short array.

def check_gemm(a, b, c, trans_a, trans_b):
    """Shapes of ``gemm(a, b, c)``: 2-D or 3-D operands whose inner sizes
    agree, batches that broadcast, and ``c`` of the product's shape."""
    if a.ndim not in (2, 3) or b.ndim not in (2, 3):
        raise ValueError(f"gemm takes 2-D or 3-D arrays, got shapes {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    ka = a.shape[-2] if trans_a else a.shape[-1]
    kb = b.shape[-1] if trans_b else b.shape[-2]
    if ka != kb:
        raise ValueError(f"gemm: inner sizes differ: a {tuple(a.shape)} (trans_a={trans_a}) "
                         f"has K={ka}, b {tuple(b.shape)} (trans_b={trans_b}) has K={kb}")
    na = a.shape[0] if a.ndim == 3 else 1
    nb = b.shape[0] if b.ndim == 3 else 1
    if na != nb and 1 not in (na, nb):
        raise ValueError(f"gemm: batch sizes {na} and {nb} do not broadcast")
    if c is not None:
        m = a.shape[-1] if trans_a else a.shape[-2]
        n = b.shape[-2] if trans_b else b.shape[-1]
        batched = a.ndim == 3 or b.ndim == 3
        ok = {(m, n)} if not batched else {(max(na, nb), m, n), (m, n)}
        if tuple(c.shape) not in ok:
            raise ValueError(f"gemm: c has shape {tuple(c.shape)}, the product is "
                             f"{sorted(ok, key=len)[-1]}")


def check_same_size(op, w, **arrays):
    """Every array in ``arrays`` (None allowed) holds as many elements as ``w``."""
    for name, a in arrays.items():
        if a is not None and a.size != w.size:
            raise ValueError(f"{op}: {name} has {a.size} elements, the parameter has {w.size} "
                             f"(shape {tuple(w.shape)})")


def check_maxpool_backward(dy, argmax, x_shape):
    """``dy`` and ``argmax`` of one shape, of the input's batch and channels."""
    if tuple(dy.shape) != tuple(argmax.shape):
        raise ValueError(f"maxpool2d_backward: dy {tuple(dy.shape)} and argmax "
                         f"{tuple(argmax.shape)} differ in shape")
    if len(x_shape) != 4 or dy.ndim != 4 or tuple(dy.shape[:2]) != tuple(x_shape[:2]):
        raise ValueError(f"maxpool2d_backward: dy {tuple(dy.shape)} does not match the input "
                         f"shape {tuple(x_shape)}")
