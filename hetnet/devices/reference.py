"""Plain numpy reference for every device operation.

Slow but obviously correct: the tests hold every other device to it.  It is
also a usable device (``device="numpy"``) for debugging.
"""

import numpy as np

from .base import Device, HostArrays, conv_output_size, mix32

_F32 = np.float32


def _op(a, trans):
    return np.swapaxes(a, -1, -2) if trans else a


class NumpyDevice(HostArrays, Device):
    """Reference device: every operation in a few lines of numpy."""

    name = "numpy"
    kind = "cpu"

    @staticmethod
    def _store(value, out):
        if out is None:
            return np.ascontiguousarray(value, dtype=value.dtype)
        out[...] = value
        return out

    # ------------------------------------------------------- linear algebra
    def gemm(self, a, b, c=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
        prod = np.matmul(_op(a, trans_a).astype(np.float64), _op(b, trans_b).astype(np.float64))
        if prod.ndim == 3 and c is not None and c.ndim == 2:
            prod = prod.sum(axis=0)
        res = alpha * prod
        if c is None:
            return res.astype(_F32)
        c[...] = res if beta == 0 else res + beta * c.astype(np.float64)   # beta 0: c is not read
        return c

    # ---------------------------------------------------------- convolution
    def im2col(self, x, kh, kw, sh, sw, ph, pw, out=None):
        n, ch, h, w = x.shape
        ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        cols = np.empty((n, ch, kh, kw, ho, wo), dtype=_F32)
        for i in range(kh):
            for j in range(kw):
                cols[:, :, i, j] = xp[:, :, i:i + sh * ho:sh, j:j + sw * wo:sw]
        return self._store(cols.reshape(n, ch * kh * kw, ho * wo), out)

    def col2im(self, cols, x_shape, kh, kw, sh, sw, ph, pw, out=None):
        n, ch, h, w = x_shape
        ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
        c6 = cols.reshape(n, ch, kh, kw, ho, wo)
        xp = np.zeros((n, ch, h + 2 * ph, w + 2 * pw), dtype=np.float64)
        for i in range(kh):
            for j in range(kw):
                xp[:, :, i:i + sh * ho:sh, j:j + sw * wo:sw] += c6[:, :, i, j]
        return self._store(xp[:, :, ph:ph + h, pw:pw + w].astype(_F32), out)

    def maxpool2d(self, x, kh, kw, sh, sw, out=None, argmax=None):
        n, ch, h, w = x.shape
        ho, wo = conv_output_size(h, kh, sh, 0), conv_output_size(w, kw, sw, 0)
        win = np.empty((n, ch, ho, wo, kh * kw), dtype=_F32)
        pos = np.empty((ho, wo, kh * kw), dtype=np.int32)
        for i in range(kh):
            for j in range(kw):
                win[..., i * kw + j] = x[:, :, i:i + sh * ho:sh, j:j + sw * wo:sw]
                rows = np.arange(ho)[:, None] * sh + i
                colz = np.arange(wo)[None, :] * sw + j
                pos[..., i * kw + j] = rows * w + colz
        k = win.argmax(axis=-1)
        y = np.take_along_axis(win, k[..., None], axis=-1)[..., 0]
        am = np.take_along_axis(np.broadcast_to(pos, win.shape), k[..., None], axis=-1)[..., 0]
        return self._store(y, out), self._store(am.astype(np.int32), argmax)

    def maxpool2d_backward(self, dy, argmax, x_shape, out=None):
        n, ch, h, w = x_shape
        dx = np.zeros((n * ch, h * w), dtype=np.float64)
        flat_idx = argmax.reshape(n * ch, -1)
        rows = np.repeat(np.arange(n * ch), flat_idx.shape[1])
        np.add.at(dx, (rows, flat_idx.ravel()), dy.reshape(n * ch, -1).ravel())
        return self._store(dx.reshape(x_shape).astype(_F32), out)

    # ------------------------------------------------ direct convolution
    # The reference convolves directly (a loop over the kh*kw kernel offsets,
    # each a channel contraction over strided views of the padded input), so
    # it checks the im2col + GEMM path of the other devices independently.
    def conv_workspace_bytes(self, batch, col_shape):
        """0: the direct convolution below needs no im2col workspace."""
        return 0

    def conv2d(self, x, w, b, stride, pad, activation="identity", out=None):
        n, c, h, wd = x.shape
        f, _, kh, kw = w.shape
        (sh, sw), (ph, pw) = stride, pad
        ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(wd, kw, sw, pw)
        xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        w64 = w.astype(np.float64)
        y = np.zeros((n, f, ho, wo))
        for i in range(kh):
            for j in range(kw):
                y += np.einsum("nchw,fc->nfhw", xp[:, :, i:i + sh * ho:sh, j:j + sw * wo:sw],
                               w64[:, :, i, j])
        if b is not None:
            y += b.astype(np.float64)[None, :, None, None]
        y = self.activation(activation, y.astype(_F32))
        return self._store(y, out)

    def conv2d_backward(self, x, w, y, dy, stride, pad, activation, dw, db=None,
                        need_dx=True, dx=None):
        n, c, h, wd = x.shape
        f, _, kh, kw = w.shape
        (sh, sw), (ph, pw) = stride, pad
        ho, wo = dy.shape[2], dy.shape[3]
        g = self.activation_backward(activation, y, dy).astype(np.float64)
        if db is not None:
            db[...] = g.sum(axis=(0, 2, 3))
        xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        w64 = w.astype(np.float64)
        dxp = np.zeros_like(xp)
        for i in range(kh):
            for j in range(kw):
                win = (slice(None), slice(None), slice(i, i + sh * ho, sh), slice(j, j + sw * wo, sw))
                dw[:, :, i, j] = np.einsum("nfhw,nchw->fc", g, xp[win])
                if need_dx:
                    dxp[win] += np.einsum("nfhw,fc->nchw", g, w64[:, :, i, j])
        if not need_dx:
            return None
        return self._store(dxp[:, :, ph:ph + h, pw:pw + wd].astype(_F32), dx)

    # ------------------------------- normalisation, dropout, pooling, sums
    @staticmethod
    def _windows(x, kh, kw, sh, sw, ph, pw, fill):
        """``(N, C, Ho, Wo, kh*kw)`` windows of ``x`` padded with ``fill``
        (float64) and the flat in-plane index of each window entry."""
        n, ch, h, w = x.shape
        ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
        xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)),
                    constant_values=fill)
        win = np.empty((n, ch, ho, wo, kh * kw))
        pos = np.empty((ho, wo, kh * kw), dtype=np.int64)
        for i in range(kh):
            for j in range(kw):
                win[..., i * kw + j] = xp[:, :, i:i + sh * ho:sh, j:j + sw * wo:sw]
                rows = np.arange(ho)[:, None] * sh + i - ph
                colz = np.arange(wo)[None, :] * sw + j - pw
                pos[..., i * kw + j] = rows * w + colz
        return win, pos

    def maxpool2d_padded(self, x, kh, kw, sh, sw, ph, pw, out=None, argmax=None):
        win, pos = self._windows(x, kh, kw, sh, sw, ph, pw, -np.inf)
        k = win.argmax(axis=-1)
        y = np.take_along_axis(win, k[..., None], axis=-1)[..., 0]
        am = np.take_along_axis(np.broadcast_to(pos, win.shape), k[..., None], axis=-1)[..., 0]
        return self._store(y.astype(_F32), out), self._store(am.astype(np.int32), argmax)

    def avgpool2d(self, x, kh, kw, sh, sw, ph, pw, out=None):
        win, _ = self._windows(x, kh, kw, sh, sw, ph, pw, 0.0)
        return self._store((win.sum(axis=-1) / (kh * kw)).astype(_F32), out)

    def avgpool2d_backward(self, dy, x_shape, kh, kw, sh, sw, ph, pw, out=None):
        n, ch, h, w = x_shape
        ho, wo = dy.shape[2], dy.shape[3]
        dxp = np.zeros((n, ch, h + 2 * ph, w + 2 * pw))
        share = dy.astype(np.float64) / (kh * kw)
        for i in range(kh):
            for j in range(kw):
                dxp[:, :, i:i + sh * ho:sh, j:j + sw * wo:sw] += share
        return self._store(dxp[:, :, ph:ph + h, pw:pw + w].astype(_F32), out)

    @staticmethod
    def _channels(a):
        """``a (N, C, ...)`` as float64 ``(N, C, S)``."""
        return a.astype(np.float64).reshape(a.shape[0], a.shape[1], -1)

    def batchnorm_forward(self, x, gamma, beta, mean, invstd, running_mean, running_var,
                          momentum, eps, training, activation="identity", out=None):
        x3 = self._channels(x)
        if training:
            m = x3.shape[0] * x3.shape[2]
            mu = x3.mean(axis=(0, 2))
            var = ((x3 - mu[None, :, None]) ** 2).mean(axis=(0, 2))
            running_mean[...] = (1 - momentum) * running_mean + momentum * mu
            running_var[...] = (1 - momentum) * running_var + momentum * var * m / (m - 1)
        else:
            mu, var = running_mean.astype(np.float64), running_var.astype(np.float64)
        inv = 1 / np.sqrt(var + eps)
        mean[...], invstd[...] = mu, inv
        y = ((x3 - mu[None, :, None]) * (inv * gamma)[None, :, None] + beta[None, :, None])
        y = self.activation(activation, y.reshape(x.shape).astype(_F32))
        return self._store(y, out)

    def batchnorm_backward(self, x, y, dy, gamma, mean, invstd, training, activation,
                           dgamma, dbeta, need_dx=True, dx=None):
        g = self.activation_backward(activation, y, dy, out=dy)
        g3, x3 = self._channels(g), self._channels(x)
        inv = invstd.astype(np.float64)[None, :, None]
        xhat = (x3 - mean.astype(np.float64)[None, :, None]) * inv
        sb, sg = g3.sum(axis=(0, 2)), (g3 * xhat).sum(axis=(0, 2))
        dbeta[...], dgamma[...] = sb, sg
        if not need_dx:
            return None
        scale = gamma.astype(np.float64)[None, :, None] * inv
        if training:
            m = x3.shape[0] * x3.shape[2]
            d = scale * (g3 - (sb[None, :, None] + xhat * sg[None, :, None]) / m)
        else:
            d = scale * g3
        return self._store(d.reshape(x.shape).astype(_F32), dx)

    def dropout(self, x, p, key, out=None):
        i = np.arange(x.size, dtype=np.uint32)
        h = mix32(mix32(i) ^ np.uint32(key))
        keep = (h >> np.uint32(8)).astype(_F32) * _F32(2.0 ** -24) >= _F32(p)
        scale = _F32(1.0 / (1.0 - p)) if p < 1 else _F32(0.0)
        y = np.where(keep.reshape(x.shape), x * scale, _F32(0.0)).astype(_F32)
        return self._store(y, out)

    def add_activation(self, a, b, name, out=None):
        return self._store(self.activation(name, (a.astype(np.float64) + b).astype(_F32)), out)

    # ------------------------------------------------ bias and activations
    def bias_add(self, y, b):
        shape = (1, -1) + (1,) * (y.ndim - 2)
        y += b.reshape(shape)
        return y

    def bias_activation(self, y, b, name):
        if b is not None:
            self.bias_add(y, b)
        return self.activation(name, y, out=y)

    def bias_grad(self, dy, out=None):
        axes = (0,) + tuple(range(2, dy.ndim))
        return self._store(dy.astype(np.float64).sum(axis=axes).astype(_F32), out)

    def swap_leading_axes(self, x, out=None):
        return self._store(np.swapaxes(x, 0, 1), out)

    def activation(self, name, x, out=None):
        x64 = x.astype(np.float64)
        if name == "relu":
            y = np.maximum(x64, 0)
        elif name == "sigmoid":
            y = 1 / (1 + np.exp(-x64))
        elif name == "tanh":
            y = np.tanh(x64)
        elif name == "identity":
            y = x64
        elif name == "softmax":
            e = np.exp(x64 - x64.max(axis=1, keepdims=True))
            y = e / e.sum(axis=1, keepdims=True)
        else:
            raise ValueError(f"unknown activation {name!r}")
        return self._store(y.astype(_F32), out)

    def activation_backward(self, name, y, dy, out=None):
        y64, dy64 = y.astype(np.float64), dy.astype(np.float64)
        if name == "relu":
            dx = dy64 * (y64 > 0)
        elif name == "sigmoid":
            dx = dy64 * y64 * (1 - y64)
        elif name == "tanh":
            dx = dy64 * (1 - y64 ** 2)
        elif name == "identity":
            dx = dy64
        elif name == "softmax":
            dx = y64 * (dy64 - (dy64 * y64).sum(axis=1, keepdims=True))
        else:
            raise ValueError(f"unknown activation {name!r}")
        return self._store(dx.astype(_F32), out)

    # -------------------------------------------------------------- losses
    @staticmethod
    def _weights(weights, n):
        return np.ones(n) if weights is None else weights.astype(np.float64)

    def softmax_cross_entropy(self, logits, labels, weights=None, grad_out=None):
        z = logits.astype(np.float64)
        n = z.shape[0]
        w = self._weights(weights, n)
        z = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        rows = np.arange(n)
        loss = (w * (lse - z[rows, labels])).sum() / n
        p = np.exp(z - lse[:, None])
        p[rows, labels] -= 1
        grad = p * (w / n)[:, None]
        return np.array([loss], dtype=_F32), self._store(grad.astype(_F32), grad_out)

    def sigmoid_binary_cross_entropy(self, logits, targets, weights=None, grad_out=None):
        z, t = logits.astype(np.float64), targets.astype(np.float64)
        n = z.shape[0]
        w = self._weights(weights, n)
        # log(1 + exp(-|z|)) + max(z, 0) - z * t  is the stable form
        per = np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0) - z * t
        loss = (w * per.sum(axis=1)).sum() / n
        grad = (1 / (1 + np.exp(-z)) - t) * (w / n)[:, None]
        return np.array([loss], dtype=_F32), self._store(grad.astype(_F32), grad_out)

    def mse(self, pred, targets, weights=None, grad_out=None):
        p, t = pred.astype(np.float64), targets.astype(np.float64)
        n, k = p.shape
        w = self._weights(weights, n)
        d = p - t
        loss = (w * (d ** 2).sum(axis=1)).sum() / (n * k)
        grad = 2 * d * (w / (n * k))[:, None]
        return np.array([loss], dtype=_F32), self._store(grad.astype(_F32), grad_out)

    def mae(self, pred, targets, weights=None, grad_out=None):
        p, t = pred.astype(np.float64), targets.astype(np.float64)
        n, k = p.shape
        w = self._weights(weights, n)
        d = p - t
        loss = (w * np.abs(d).sum(axis=1)).sum() / (n * k)
        grad = np.sign(d) * (w / (n * k))[:, None]
        return np.array([loss], dtype=_F32), self._store(grad.astype(_F32), grad_out)

    # ----------------------------------------------------------- optimisers
    def sgd_update(self, w, g, v, lr, momentum=0.0, weight_decay=0.0, nesterov=False,
                   scale=1.0):
        g = scale * g.astype(np.float64) + weight_decay * w
        if momentum:
            v[...] = momentum * v + g
            step = g + momentum * v if nesterov else v.astype(np.float64)
        else:
            step = g
        w[...] = w - lr * step
        return w

    def adam_update(self, w, g, m, v, lr, beta1, beta2, eps, t, weight_decay=0.0,
                    decoupled=False, scale=1.0):
        g = scale * g.astype(np.float64)
        if decoupled:
            w[...] = w * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * w
        m[...] = beta1 * m + (1 - beta1) * g
        v[...] = beta2 * v + (1 - beta2) * g * g
        mhat = m / (1 - beta1 ** t)
        vhat = v / (1 - beta2 ** t)
        w[...] = w - lr * mhat / (np.sqrt(vhat) + eps)
        return w

    def rmsprop_update(self, w, g, sq, buf, lr, alpha, eps, momentum=0.0, weight_decay=0.0,
                       scale=1.0):
        g = scale * g.astype(np.float64) + weight_decay * w
        sq[...] = alpha * sq + (1 - alpha) * g * g
        d = g / (np.sqrt(sq.astype(np.float64)) + eps)
        if momentum:
            buf[...] = momentum * buf + d
            d = buf.astype(np.float64)
        w[...] = w - lr * d
        return w

    # ----------------------------------------------------------- reductions
    def sum(self, x):
        return np.array([x.astype(np.float64).sum()], dtype=_F32)

    def sum_squares(self, x, out=None, accumulate=False):
        s = np.square(x.astype(np.float64)).sum()
        if out is None:
            out = np.zeros(1, dtype=_F32)
        out[0] = (float(out[0]) if accumulate else 0.0) + s
        return out

    def argmax(self, x, out=None):
        return self._store(x.argmax(axis=1).astype(np.int32), out)

    def axpy(self, alpha, x, y):
        y += np.float32(alpha) * x
        return y

    def scale(self, alpha, x):
        x *= np.float32(alpha)
        return x
