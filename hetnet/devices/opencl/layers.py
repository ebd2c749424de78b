"""The OpenCL device's batch-norm, dropout, pooling and residual-sum
operations: kernels from ``clkernels/norm.cl``, ``dropout.cl``,
``residual.cl`` and ``pool.cl``, launched through the device's own
``_kernel`` / ``_launch`` plumbing."""

import numpy as np

from ..base import conv_output_size

_F32, _I32 = np.float32, np.int32
_ACT_CODES = {"identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3}
_ARG_TYPES = {"b": None, "i": _I32, "f": _F32}

#: kernel name -> (file or files built as one program, argument types:
#: b = buffer, i = int32, f = float32)
_LAYER_KERNELS = {
    "bn_stats": (("elementwise.cl", "reduce.cl", "norm.cl"), "bi bi bi bi bi iii ff"),
    "bn_apply": (("elementwise.cl", "reduce.cl", "norm.cl"), "bi bi bi bi bi bi bi bi iii fii"),
    "bn_bwd_reduce": (("elementwise.cl", "reduce.cl", "norm.cl"), "bi bi bi bi bi bi bi iiii"),
    "bn_bwd_dx": (("elementwise.cl", "reduce.cl", "norm.cl"), "bi bi bi bi bi bi bi bi iiiii"),
    "dropout": (("hash.cl", "dropout.cl"), "bi bi i f i f"),
    "add_act": (("elementwise.cl", "residual.cl"), "bi bi bi ii"),
    "maxpool2d_pad_fwd": ("pool.cl", "bi bi bi iii iiii ii ii"),
    "avgpool2d_fwd": ("pool.cl", "bi bi iii iiii ii ii"),
    "avgpool2d_bwd": ("pool.cl", "bi bi iii iiii ii ii"),
}


def _off(a):
    return a.offset // a.dtype.itemsize


def _int32(key):
    """An unsigned 32-bit value as the int32 with the same bits."""
    key = int(key) & 0xFFFFFFFF
    return key - (1 << 32) if key >= 1 << 31 else key


class OpenCLLayerOps:
    """Mixed into :class:`hetnet.devices.opencl.OpenCLDevice` (uses its
    ``kernel``, ``launch``, ``empty``, ``wg``)."""

    def _layer_kernel(self, name):
        knl = self._kernels.get(name)
        if knl is None:
            files, code = _LAYER_KERNELS[name]
            knl = self.kernel(files, name, [_ARG_TYPES[c] for c in code.replace(" ", "")])
            self._kernels[name] = knl
        return knl

    def _layer_launch(self, name, n, *args):
        """One work-item per element of an ``n``-element 1-D grid."""
        if n > 0:
            wg = self.wg
            self.launch(self._layer_kernel(name), (max(wg, -(-n // wg) * wg),), (wg,), *args)

    def _new(self, out, shape, dtype=_F32):
        return self.empty(shape, dtype) if out is None else out

    # ------------------------------------------------------------ pooling
    def maxpool2d_padded(self, x, kh, kw, sh, sw, ph, pw, out=None, argmax=None):
        n, ch, h, w = x.shape
        ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
        out = self._new(out, (n, ch, ho, wo))
        argmax = self._new(argmax, (n, ch, ho, wo), _I32)
        self._layer_launch("maxpool2d_pad_fwd", out.size, x.base_data, _off(x),
                           out.base_data, _off(out), argmax.base_data, _off(argmax),
                           n * ch, h, w, kh, kw, sh, sw, ph, pw, ho, wo)
        return out, argmax

    def avgpool2d(self, x, kh, kw, sh, sw, ph, pw, out=None):
        n, ch, h, w = x.shape
        ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
        out = self._new(out, (n, ch, ho, wo))
        self._layer_launch("avgpool2d_fwd", out.size, x.base_data, _off(x),
                           out.base_data, _off(out), n * ch, h, w, kh, kw, sh, sw, ph, pw,
                           ho, wo)
        return out

    def avgpool2d_backward(self, dy, x_shape, kh, kw, sh, sw, ph, pw, out=None):
        n, ch, h, w = x_shape
        out = self._new(out, tuple(x_shape))
        self._layer_launch("avgpool2d_bwd", out.size, dy.base_data, _off(dy),
                           out.base_data, _off(out), n * ch, h, w, kh, kw, sh, sw, ph, pw,
                           dy.shape[2], dy.shape[3])
        return out

    # -------------------------------------------------------- batch norm
    @staticmethod
    def _channels(x):
        n, c = x.shape[0], x.shape[1]
        return n, c, (x.size // (n * c) if x.size else 1)

    def batchnorm_forward(self, x, gamma, beta, mean, invstd, running_mean, running_var,
                          momentum, eps, training, activation="identity", out=None):
        n, c, s = self._channels(x)
        out = self._new(out, x.shape)
        if training:
            self.launch(self._layer_kernel("bn_stats"), (c * self.wg,), (self.wg,),
                         x.base_data, _off(x), mean.base_data, _off(mean),
                         invstd.base_data, _off(invstd), running_mean.base_data,
                         _off(running_mean), running_var.base_data, _off(running_var),
                         n, c, s, momentum, eps)
        self._layer_launch("bn_apply", max(x.size, c), x.base_data, _off(x),
                           out.base_data, _off(out), gamma.base_data, _off(gamma),
                           beta.base_data, _off(beta), mean.base_data, _off(mean),
                           invstd.base_data, _off(invstd), running_mean.base_data,
                           _off(running_mean), running_var.base_data, _off(running_var),
                           x.size, c, s, eps, int(bool(training)), _ACT_CODES[activation])
        return out

    def batchnorm_backward(self, x, y, dy, gamma, mean, invstd, training, activation,
                           dgamma, dbeta, need_dx=True, dx=None):
        n, c, s = self._channels(x)
        self.launch(self._layer_kernel("bn_bwd_reduce"), (c * self.wg,), (self.wg,),
                     x.base_data, _off(x), y.base_data, _off(y), dy.base_data, _off(dy),
                     mean.base_data, _off(mean), invstd.base_data, _off(invstd),
                     dgamma.base_data, _off(dgamma), dbeta.base_data, _off(dbeta),
                     n, c, s, _ACT_CODES[activation])
        if not need_dx:
            return None
        dx = self._new(dx, x.shape)
        self._layer_launch("bn_bwd_dx", x.size, x.base_data, _off(x), dy.base_data, _off(dy),
                           gamma.base_data, _off(gamma), mean.base_data, _off(mean),
                           invstd.base_data, _off(invstd), dgamma.base_data, _off(dgamma),
                           dbeta.base_data, _off(dbeta), dx.base_data, _off(dx),
                           x.size, c, s, n * s, int(bool(training)))
        return dx

    # ------------------------------------------- dropout and residual sum
    def dropout(self, x, p, key, out=None):
        out = self._new(out, x.shape)
        scale = 1.0 / (1.0 - p) if p < 1 else 0.0
        self._layer_launch("dropout", x.size, x.base_data, _off(x), out.base_data, _off(out),
                           x.size, p, _int32(key), scale)
        return out

    def add_activation(self, a, b, name, out=None):
        out = self._new(out, a.shape)
        self._layer_launch("add_act", a.size, a.base_data, _off(a), b.base_data, _off(b),
                           out.base_data, _off(out), a.size, _ACT_CODES[name])
        return out
