"""Batch normalisation, dropout and the residual sum for the CPU device.

Batch normalisation splits its work over channels with OpenMP: each
channel's statistics, normalisation and gradient sums touch only its own
elements.  Shapes follow :mod:`hetnet.devices.base`; x is viewed as
(N, C, S), S the elements per sample and channel.
"""

from cython.parallel cimport prange
from libc.math cimport sqrt

include "_openmp.pxi"
include "_act.pxi"


cdef inline int _nt_channels(int nthreads, Py_ssize_t channels, double work) noexcept nogil:
    return hn_threads(<int>min(<Py_ssize_t>nthreads, max(channels, 1)), work, HN_ELEMENT_UNIT)


cdef void _bn_forward_channel(const float *x, float *y, Py_ssize_t c, Py_ssize_t nb,
                              Py_ssize_t ch, Py_ssize_t s, float *gamma, float *beta,
                              float *mean, float *invstd, float *rm, float *rv,
                              double momentum, double eps, bint training,
                              int act) noexcept nogil:
    cdef Py_ssize_t n, j, base
    cdef Py_ssize_t m = nb * s
    cdef double acc = 0.0, d, mu, var
    cdef float a, b
    if training:
        for n in range(nb):
            base = (n * ch + c) * s
            for j in range(s):
                acc = acc + x[base + j]
        mu = acc / m
        acc = 0.0
        for n in range(nb):             # two passes: no cancellation in E[x^2] - E[x]^2
            base = (n * ch + c) * s
            for j in range(s):
                d = x[base + j] - mu
                acc = acc + d * d
        var = acc / m
        rm[c] = <float>((1.0 - momentum) * rm[c] + momentum * mu)
        rv[c] = <float>((1.0 - momentum) * rv[c] + momentum * var * m / (m - 1))
    else:
        mu = rm[c]
        var = rv[c]
    d = 1.0 / sqrt(var + eps)
    mean[c] = <float>mu
    invstd[c] = <float>d
    a = <float>(gamma[c] * d)
    b = <float>(beta[c] - mu * gamma[c] * d)
    for n in range(nb):
        base = (n * ch + c) * s
        for j in range(s):
            y[base + j] = _act(act, x[base + j] * a + b)


def batchnorm_forward(float[:, :, ::1] x, float[::1] gamma, float[::1] beta,
                      float[::1] mean, float[::1] invstd, float[::1] running_mean,
                      float[::1] running_var, double momentum, double eps, bint training,
                      int act, float[:, :, ::1] y, int nthreads):
    """y = act(gamma * (x - mean) * invstd + beta) per channel of x (N, C, S);
    training: the batch's statistics (written to mean, invstd) and the
    running ones updated; else the running statistics."""
    cdef Py_ssize_t nb = x.shape[0], ch = x.shape[1], s = x.shape[2], c
    if nb * ch * s == 0:
        return
    cdef const float *px = &x[0, 0, 0]
    cdef float *py = &y[0, 0, 0]
    cdef float *pg = &gamma[0]
    cdef float *pb = &beta[0]
    cdef float *pm = &mean[0]
    cdef float *pi = &invstd[0]
    cdef float *prm = &running_mean[0]
    cdef float *prv = &running_var[0]
    for c in prange(ch, nogil=True, schedule="static",
                    num_threads=_nt_channels(nthreads, ch, 3.0 * nb * ch * s)):
        _bn_forward_channel(px, py, c, nb, ch, s, pg, pb, pm, pi, prm, prv, momentum, eps,
                            training, act)


cdef void _bn_backward_channel(const float *x, const float *y, float *dy, float *dx,
                               Py_ssize_t c, Py_ssize_t nb, Py_ssize_t ch, Py_ssize_t s,
                               const float *gamma, const float *mean, const float *invstd,
                               float *dgamma, float *dbeta, bint training, int act,
                               bint need_dx) noexcept nogil:
    cdef Py_ssize_t n, j, base
    cdef Py_ssize_t m = nb * s
    cdef double sb = 0.0, sg = 0.0
    cdef float g, mu = mean[c], inv = invstd[c], k, cb, cg
    for n in range(nb):
        base = (n * ch + c) * s
        for j in range(s):
            g = _act_grad(act, y[base + j], dy[base + j])
            dy[base + j] = g
            sb = sb + g
            sg = sg + g * ((x[base + j] - mu) * inv)
    dbeta[c] = <float>sb
    dgamma[c] = <float>sg
    if not need_dx:
        return
    k = gamma[c] * inv
    if training:
        cb = <float>(sb / m)
        cg = <float>(sg / m)
        for n in range(nb):
            base = (n * ch + c) * s
            for j in range(s):
                dx[base + j] = k * (dy[base + j] - cb - (x[base + j] - mu) * inv * cg)
    else:
        for n in range(nb):
            base = (n * ch + c) * s
            for j in range(s):
                dx[base + j] = k * dy[base + j]


def batchnorm_backward(float[:, :, ::1] x, float[:, :, ::1] y, float[:, :, ::1] dy,
                       float[::1] gamma, float[::1] mean, float[::1] invstd, bint training,
                       int act, float[::1] dgamma, float[::1] dbeta, float[:, :, ::1] dx,
                       bint need_dx, int nthreads):
    """dbeta, dgamma and (when need_dx) dx of batchnorm_forward; dy becomes
    the gradient through the activation."""
    cdef Py_ssize_t nb = x.shape[0], ch = x.shape[1], s = x.shape[2], c
    if ch == 0:
        return
    if nb * s == 0:
        for c in range(ch):
            dgamma[c] = 0.0
            dbeta[c] = 0.0
        return
    cdef const float *px = &x[0, 0, 0]
    cdef const float *py = &y[0, 0, 0]
    cdef float *pdy = &dy[0, 0, 0]
    cdef float *pdx = &dx[0, 0, 0] if need_dx else NULL
    cdef const float *pg = &gamma[0]
    cdef const float *pm = &mean[0]
    cdef const float *pi = &invstd[0]
    cdef float *pdg = &dgamma[0]
    cdef float *pdb = &dbeta[0]
    for c in prange(ch, nogil=True, schedule="static",
                    num_threads=_nt_channels(nthreads, ch, 3.0 * nb * ch * s)):
        _bn_backward_channel(px, py, pdy, pdx, c, nb, ch, s, pg, pm, pi, pdg, pdb, training,
                             act, need_dx)


cdef inline unsigned int _mix32(unsigned int v) noexcept nogil:
    """Wellons' lowbias32, as hetnet.devices.base.mix32."""
    v ^= v >> 16
    v *= 0x7FEB352Du
    v ^= v >> 15
    v *= 0x846CA68Bu
    v ^= v >> 16
    return v


def dropout(float[::1] x, float[::1] y, float p, unsigned int key, float scale, int nthreads):
    """y[i] = x[i] * scale where the hash of (key, i) keeps element i, else 0
    (the mask of Device.dropout; y may be x)."""
    cdef Py_ssize_t i, n = x.shape[0]
    cdef unsigned int h
    cdef float u
    if n == 0:
        return
    cdef const float *px = &x[0]
    cdef float *py = &y[0]
    for i in prange(n, nogil=True, schedule="static",
                    num_threads=hn_threads(nthreads, <double>n, HN_ELEMENT_UNIT)):
        h = _mix32(_mix32(<unsigned int>i) ^ key)
        u = <float>(h >> 8) * <float>5.9604644775390625e-08
        py[i] = px[i] * scale if u >= p else 0.0


def add_act(float[::1] a, float[::1] b, float[::1] out, int act, int nthreads):
    """out = act(a + b) elementwise (out may be a or b)."""
    cdef Py_ssize_t i, n = a.shape[0]
    if n == 0:
        return
    cdef const float *pa = &a[0]
    cdef const float *pb = &b[0]
    cdef float *po = &out[0]
    for i in prange(n, nogil=True, schedule="static",
                    num_threads=hn_threads(nthreads, <double>n, HN_ELEMENT_UNIT)):
        po[i] = _act(act, pa[i] + pb[i])
