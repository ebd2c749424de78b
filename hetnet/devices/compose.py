"""Operations composed from the primitive ones: convolution as im2col + GEMM.

:class:`Im2colConvolution` gives a device ``conv2d`` and ``conv2d_backward``
written in its own primitives (:meth:`~hetnet.devices.base.Device.im2col`,
:meth:`~hetnet.devices.base.Device.col2im`, batched
:meth:`~hetnet.devices.base.Device.gemm`, the fused bias and activation),
a chunk of the batch at a time in a bounded workspace.  A device with a
fused convolution kernel overrides the two operations and keeps the
workspace helpers.
"""

import threading

from .base import conv_output_size


class Im2colConvolution:
    """Convolution by im2col + GEMM (a mixin of a :class:`Device`)."""

    #: bound on the im2col workspace of the default conv2d (bytes)
    workspace_bytes = 8 << 20

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_ws_local", None)     # the per-thread workspace does not travel
        return state

    def conv_chunk(self, batch, col_shape):
        """Images per im2col chunk in :meth:`conv2d`: as many as fit
        ``workspace_bytes`` (at least one)."""
        per_image = 4 * col_shape[0] * col_shape[1]
        return max(1, min(batch, self.workspace_bytes // per_image))

    def conv_workspace_bytes(self, batch, col_shape):
        """Bytes of workspace :meth:`conv2d` uses at this batch size."""
        return 4 * self.conv_chunk(batch, col_shape) * col_shape[0] * col_shape[1]

    def _conv_workspace(self, n, rows, cols):
        """A ``(n, rows, cols)`` view of the one workspace all convolutions
        on this device share (grown on demand, never beyond the bound plus one
        image)."""
        size = n * rows * cols
        # one workspace per thread: models run from several threads share the device
        local = self.__dict__.get("_ws_local")
        if local is None:
            local = self.__dict__.setdefault("_ws_local", threading.local())
        ws = getattr(local, "ws", None)
        if ws is None or ws.shape[0] < size:
            ws = local.ws = self.empty((size,))
        return self.reshape(self.batch_slice(ws, 0, size), (n, rows, cols))

    def conv2d(self, x, w, b, stride, pad, activation="identity", out=None):
        """Convolution with bias and activation: ``y[n] = act(W2 @
        im2col(x[n]) + b)``, ``W2 = w.reshape(F, C*kh*kw)``.

        x ``(N, C, H, W)``, w ``(F, C, kh, kw)``, b ``(F,)`` or None,
        returns y ``(N, F, Ho, Wo)``.  This default runs im2col + one batched
        GEMM per chunk of the batch (see :meth:`conv_chunk`), then the fused
        bias + activation; devices may fuse further.
        """
        n, _, h, wd = x.shape
        f, c, kh, kw = w.shape
        (sh, sw), (ph, pw) = stride, pad
        ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(wd, kw, sw, pw)
        rows, p = c * kh * kw, ho * wo
        if out is None:
            out = self.empty((n, f, ho, wo))
        y3 = self.reshape(out, (n, f, p))
        w2 = self.reshape(w, (f, rows))
        step = self.conv_chunk(n, (rows, p))
        for i0 in range(0, n, step):
            i1 = min(n, i0 + step)
            cols = self.im2col(self.batch_slice(x, i0, i1), kh, kw, sh, sw, ph, pw,
                               out=self._conv_workspace(i1 - i0, rows, p))
            self.gemm(w2, cols, self.batch_slice(y3, i0, i1))
        return self.bias_activation(out, b, activation)

    def conv2d_backward(self, x, w, y, dy, stride, pad, activation, dw, db=None,
                        need_dx=True, dx=None):
        """Gradients of :meth:`conv2d` from its input ``x``, output ``y`` and
        output gradient ``dy`` (which may be overwritten).

        Writes ``dw`` (shape of w) and ``db`` (``(F,)``, when not None);
        returns ``dx`` (shape of x) when ``need_dx``, else None.
        """
        n, c, h, wd = x.shape
        f, _, kh, kw = w.shape
        (sh, sw), (ph, pw) = stride, pad
        rows, p = c * kh * kw, dy.shape[2] * dy.shape[3]
        dy = self.activation_bias_backward(activation, y, dy, db)
        dy3 = self.reshape(dy, (n, f, p))
        w2, dw2 = self.reshape(w, (f, rows)), self.reshape(dw, (f, rows))
        if need_dx and dx is None:
            dx = self.empty(x.shape)
        step = self.conv_chunk(n, (rows, p))
        for k, i0 in enumerate(range(0, n, step)):
            i1 = min(n, i0 + step)
            ws = self._conv_workspace(i1 - i0, rows, p)
            cols = self.im2col(self.batch_slice(x, i0, i1), kh, kw, sh, sw, ph, pw, out=ws)
            dyc = self.batch_slice(dy3, i0, i1)
            self.gemm(dyc, cols, dw2, trans_b=True, beta=0.0 if k == 0 else 1.0)
            if need_dx:
                dcols = self.gemm(w2, dyc, ws, trans_a=True)   # the columns are used up
                self.col2im(dcols, (i1 - i0, c, h, wd), kh, kw, sh, sw, ph, pw,
                            out=self.batch_slice(dx, i0, i1))
        return dx if need_dx else None


__all__ = ["Im2colConvolution"]
