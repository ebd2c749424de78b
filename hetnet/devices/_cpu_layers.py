"""The CPU device's batch-norm, dropout, pooling and residual-sum operations
(Cython+OpenMP kernels in :mod:`hetnet._cpu.norm` and :mod:`hetnet._cpu.pool`)."""

import numpy as np

from .base import conv_output_size
from .._cpu import norm as _norm, pool as _pool

_F32 = np.float32
_ACT_CODES = {"identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3}
_EMPTY3 = np.empty((0, 0, 0), dtype=_F32)


def _as3(a):
    """View an (N, C, ...) array as (N, C, S)."""
    return a.reshape(a.shape[0], a.shape[1], -1)


class CPULayerOps:
    """Mixed into :class:`hetnet.devices.cpu.CPUDevice` (uses its ``num_threads``)."""

    def maxpool2d_padded(self, x, kh, kw, sh, sw, ph, pw, out=None, argmax=None):
        n, ch, h, w = x.shape
        shape = (n, ch, conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw))
        if out is None:
            out = np.empty(shape, dtype=_F32)
        if argmax is None:
            argmax = np.empty(shape, dtype=np.int32)
        _pool.maxpool2d_padded(x, out, argmax, kh, kw, sh, sw, ph, pw, self.num_threads)
        return out, argmax

    def avgpool2d(self, x, kh, kw, sh, sw, ph, pw, out=None):
        n, ch, h, w = x.shape
        if out is None:
            out = np.empty((n, ch, conv_output_size(h, kh, sh, ph),
                            conv_output_size(w, kw, sw, pw)), dtype=_F32)
        _pool.avgpool2d(x, out, kh, kw, sh, sw, ph, pw, self.num_threads)
        return out

    def avgpool2d_backward(self, dy, x_shape, kh, kw, sh, sw, ph, pw, out=None):
        if out is None:
            out = np.empty(x_shape, dtype=_F32)
        _pool.avgpool2d_backward(dy, out, kh, kw, sh, sw, ph, pw, self.num_threads)
        return out

    def batchnorm_forward(self, x, gamma, beta, mean, invstd, running_mean, running_var,
                          momentum, eps, training, activation="identity", out=None):
        if out is None:
            out = np.empty_like(x)
        _norm.batchnorm_forward(_as3(x), gamma, beta, mean, invstd, running_mean, running_var,
                                momentum, eps, bool(training), _ACT_CODES[activation],
                                _as3(out), self.num_threads)
        return out

    def batchnorm_backward(self, x, y, dy, gamma, mean, invstd, training, activation,
                           dgamma, dbeta, need_dx=True, dx=None):
        if need_dx and dx is None:
            dx = np.empty_like(x)
        _norm.batchnorm_backward(_as3(x), _as3(y), _as3(dy), gamma, mean, invstd,
                                 bool(training), _ACT_CODES[activation], dgamma, dbeta,
                                 _as3(dx) if need_dx else _EMPTY3, bool(need_dx),
                                 self.num_threads)
        return dx if need_dx else None

    def dropout(self, x, p, key, out=None):
        if out is None:
            out = np.empty_like(x)
        scale = 1.0 / (1.0 - p) if p < 1 else 0.0
        _norm.dropout(x.reshape(-1), out.reshape(-1), p, int(key), scale, self.num_threads)
        return out

    def add_activation(self, a, b, name, out=None):
        if out is None:
            out = np.empty_like(a)
        _norm.add_act(a.reshape(-1), b.reshape(-1), out.reshape(-1), _ACT_CODES[name],
                      self.num_threads)
        return out
