"""Batch normalisation, dropout and the residual sum for the CPU device.

Batch normalisation splits its work over channels with OpenMP: each
channel's statistics, normalisation and gradient sums touch only its own
elements.  Shapes follow :mod:`hetnet.devices.base`; x is viewed as
(N, C, S), S the elements per sample and channel.
"""

import numpy as np

from cython.parallel cimport prange
from libc.math cimport sqrt

include "_openmp.pxi"
include "_act.pxi"


cdef inline int _nt_channels(int nthreads, Py_ssize_t channels, double work) noexcept nogil:
    return hn_threads(<int>min(<Py_ssize_t>nthreads, max(channels, 1)), work, HN_ELEMENT_UNIT)


cdef inline double _sum_run(const float *x, Py_ssize_t s) noexcept nogil:
    """Sum of a contiguous run: eight float lanes (independent chains the
    compiler vectorises; one double chain runs at one add per 4 cycles),
    added in double at the end."""
    cdef float a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0
    cdef Py_ssize_t j = 0
    while j + 8 <= s:
        a0 += x[j]; a1 += x[j + 1]; a2 += x[j + 2]; a3 += x[j + 3]
        a4 += x[j + 4]; a5 += x[j + 5]; a6 += x[j + 6]; a7 += x[j + 7]
        j += 8
    cdef double t = (<double>a0 + a1) + (<double>a2 + a3) + (<double>a4 + a5) + (<double>a6 + a7)
    while j < s:
        t += x[j]
        j += 1
    return t


cdef inline double _sqdev_run(const float *x, Py_ssize_t s, float mu) noexcept nogil:
    """Sum of (x - mu)**2 over a contiguous run, as _sum_run."""
    cdef float a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0, d
    cdef Py_ssize_t j = 0
    while j + 8 <= s:
        a0 += (x[j] - mu) * (x[j] - mu); a1 += (x[j + 1] - mu) * (x[j + 1] - mu)
        a2 += (x[j + 2] - mu) * (x[j + 2] - mu); a3 += (x[j + 3] - mu) * (x[j + 3] - mu)
        a4 += (x[j + 4] - mu) * (x[j + 4] - mu); a5 += (x[j + 5] - mu) * (x[j + 5] - mu)
        a6 += (x[j + 6] - mu) * (x[j + 6] - mu); a7 += (x[j + 7] - mu) * (x[j + 7] - mu)
        j += 8
    cdef double t = (<double>a0 + a1) + (<double>a2 + a3) + (<double>a4 + a5) + (<double>a6 + a7)
    while j < s:
        d = x[j] - mu
        t += d * d
        j += 1
    return t


cdef inline void _affine_act_run(const float *x, float *y, Py_ssize_t s, float a, float b,
                                 int act) noexcept nogil:
    """y = act(x * a + b) over a contiguous run, one loop per activation so
    that each vectorises."""
    cdef Py_ssize_t j
    cdef float v
    if act == ACT_RELU:
        for j in range(s):
            v = x[j] * a + b
            y[j] = v if v > 0 else 0.0
    elif act == ACT_IDENTITY:
        for j in range(s):
            y[j] = x[j] * a + b
    else:
        for j in range(s):
            y[j] = _act(act, x[j] * a + b)


cdef void _bn_stats(const float *x, Py_ssize_t c, Py_ssize_t nb, Py_ssize_t ch, Py_ssize_t s,
                    float *mean, float *invstd, float *rm, float *rv, double momentum,
                    double eps, bint training) noexcept nogil:
    cdef Py_ssize_t n
    cdef Py_ssize_t m = nb * s
    cdef double acc = 0.0, mu, var
    if training:
        for n in range(nb):
            acc = acc + _sum_run(x + (n * ch + c) * s, s)
        mu = acc / m
        acc = 0.0
        for n in range(nb):             # two passes: no cancellation in E[x^2] - E[x]^2
            acc = acc + _sqdev_run(x + (n * ch + c) * s, s, <float>mu)
        var = acc / m
        rm[c] = <float>((1.0 - momentum) * rm[c] + momentum * mu)
        rv[c] = <float>((1.0 - momentum) * rv[c] + momentum * var * m / (m - 1))
    else:
        mu = rm[c]
        var = rv[c]
    mean[c] = <float>mu
    invstd[c] = <float>(1.0 / sqrt(var + eps))


cdef void _bn_stats_rows(const float *x, Py_ssize_t nb, Py_ssize_t ch, double *acc,
                         float *mean, float *invstd, float *rm, float *rv, double momentum,
                         double eps) noexcept nogil:
    """Training statistics of (N, C) input (one value per sample and
    feature): rows are walked in order, every feature's sum vectorised
    across the row (a loop per feature would stride through memory)."""
    cdef Py_ssize_t n, c
    cdef double d, var
    cdef const float *row
    for c in range(ch):
        acc[c] = 0.0
        acc[ch + c] = 0.0
    for n in range(nb):
        row = x + n * ch
        for c in range(ch):
            acc[c] += row[c]
    for c in range(ch):
        acc[c] /= nb
    for n in range(nb):
        row = x + n * ch
        for c in range(ch):
            d = row[c] - acc[c]
            acc[ch + c] += d * d
    for c in range(ch):
        var = acc[ch + c] / nb
        mean[c] = <float>acc[c]
        invstd[c] = <float>(1.0 / sqrt(var + eps))
        rm[c] = <float>((1.0 - momentum) * rm[c] + momentum * acc[c])
        rv[c] = <float>((1.0 - momentum) * rv[c] + momentum * var * nb / (nb - 1))


cdef void _bn_apply_rows(const float *x, float *y, Py_ssize_t nb, Py_ssize_t ch,
                         const float *gamma, const float *beta, const float *mean,
                         const float *invstd, int act) noexcept nogil:
    """The normalisation of (N, C) input row by row (vectorised across the row)."""
    cdef Py_ssize_t n, c
    cdef float v
    for n in range(nb):
        for c in range(ch):
            v = (x[n * ch + c] - mean[c]) * (gamma[c] * invstd[c]) + beta[c]
            y[n * ch + c] = _act(act, v)


cdef inline void _dx_coefficients(Py_ssize_t c, Py_ssize_t m, const float *gamma,
                                  const float *mean, const float *invstd,
                                  const float *dgamma, const float *dbeta, bint training,
                                  float *k, float *c1, float *c0) noexcept nogil:
    """dx = k (g - dbeta / M - xhat dgamma / M) = k g + c1 x + c0 for
    channel c (training; in inference dx = k g)."""
    k[0] = gamma[c] * invstd[c]
    if training:
        c1[0] = -k[0] * invstd[c] * dgamma[c] / m
        c0[0] = -k[0] * dbeta[c] / m - c1[0] * mean[c]
    else:
        c1[0] = 0.0
        c0[0] = 0.0


cdef void _bn_backward_rows(const float *x, const float *y, float *dy, float *dx,
                            Py_ssize_t nb, Py_ssize_t ch, const float *gamma,
                            const float *mean, const float *invstd, float *dgamma,
                            float *dbeta, double *acc, bint training, int act,
                            bint need_dx) noexcept nogil:
    """batchnorm_backward of (N, C) input, walking rows in order."""
    cdef Py_ssize_t n, c, q
    cdef float k, c0, c1, g
    for c in range(ch):
        acc[c] = 0.0
        acc[ch + c] = 0.0
    for n in range(nb):
        for c in range(ch):
            q = n * ch + c
            g = _act_grad(act, y[q], dy[q])
            dy[q] = g
            acc[c] += g
            acc[ch + c] += g * (x[q] - mean[c])
    for c in range(ch):
        dbeta[c] = <float>acc[c]
        dgamma[c] = <float>(acc[ch + c] * invstd[c])
    if not need_dx:
        return
    for n in range(nb):
        for c in range(ch):
            q = n * ch + c
            _dx_coefficients(c, nb, gamma, mean, invstd, dgamma, dbeta, training, &k, &c1, &c0)
            dx[q] = k * dy[q] + c1 * x[q] + c0


def batchnorm_forward(float[:, :, ::1] x, float[::1] gamma, float[::1] beta,
                      float[::1] mean, float[::1] invstd, float[::1] running_mean,
                      float[::1] running_var, double momentum, double eps, bint training,
                      int act, float[:, :, ::1] y, int nthreads):
    """y = act(gamma * (x - mean) * invstd + beta) per channel of x (N, C, S);
    training: the batch's statistics (written to mean, invstd) and the
    running ones updated; else the running statistics.  Statistics per
    channel in parallel (rows in order when S = 1), then the normalisation
    over (n, c) runs in parallel."""
    cdef Py_ssize_t nb = x.shape[0], ch = x.shape[1], s = x.shape[2], c, q
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
    cdef double[::1] acc
    cdef int nt = hn_threads(nthreads, 3.0 * nb * ch * s, HN_ELEMENT_UNIT)
    if training and s == 1:
        acc = np.empty(2 * ch, dtype=np.float64)
        _bn_stats_rows(px, nb, ch, &acc[0], pm, pi, prm, prv, momentum, eps)
    else:
        for c in prange(ch, nogil=True, schedule="static",
                        num_threads=_nt_channels(nthreads, ch, 2.0 * nb * ch * s)):
            _bn_stats(px, c, nb, ch, s, pm, pi, prm, prv, momentum, eps, training)
    if s == 1:
        _bn_apply_rows(px, py, nb, ch, pg, pb, pm, pi, act)
        return
    for q in prange(nb * ch, nogil=True, schedule="static", num_threads=nt):
        c = q % ch
        _affine_act_run(px + q * s, py + q * s, s, pg[c] * pi[c], pb[c] - pm[c] * pg[c] * pi[c],
                        act)


cdef void _bn_grad_sums(const float *x, const float *y, float *dy, Py_ssize_t c,
                        Py_ssize_t nb, Py_ssize_t ch, Py_ssize_t s, float mu, int act,
                        double *sb, double *sg) noexcept nogil:
    """dy becomes g = dy * act'(y) over channel c; sums of g and g * (x - mu)
    in eight float lanes per run (a plain vector add per step), then double."""
    cdef Py_ssize_t n, j, l, base
    cdef float lb[8]
    cdef float lg[8]
    cdef double tb = 0.0, tg = 0.0
    cdef const float *xr
    cdef float *gr
    for n in range(nb):
        base = (n * ch + c) * s
        xr, gr = x + base, dy + base
        if act != ACT_IDENTITY:
            _act_grad_inplace(y + base, gr, s, act)
        for l in range(8):
            lb[l] = 0.0
            lg[l] = 0.0
        j = 0
        while j + 8 <= s:
            for l in range(8):
                lb[l] += gr[j + l]
                lg[l] += gr[j + l] * (xr[j + l] - mu)
            j += 8
        for l in range(8):
            tb += lb[l]
            tg += lg[l]
        while j < s:
            tb += gr[j]
            tg += gr[j] * (xr[j] - mu)
            j += 1
    sb[0] = tb
    sg[0] = tg


def batchnorm_backward(float[:, :, ::1] x, float[:, :, ::1] y, float[:, :, ::1] dy,
                       float[::1] gamma, float[::1] mean, float[::1] invstd, bint training,
                       int act, float[::1] dgamma, float[::1] dbeta, float[:, :, ::1] dx,
                       bint need_dx, int nthreads):
    """dbeta, dgamma and (when need_dx) dx of batchnorm_forward; dy becomes
    the gradient through the activation.  The sums per channel in parallel,
    then dx over (n, c) runs in parallel."""
    cdef Py_ssize_t nb = x.shape[0], ch = x.shape[1], s = x.shape[2], c, q, j
    cdef double sb, sg
    cdef float k, c0, c1
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
    cdef Py_ssize_t m = nb * s
    cdef int nt = hn_threads(nthreads, 2.0 * nb * ch * s, HN_ELEMENT_UNIT)
    cdef double[::1] acc
    if s == 1:
        acc = np.empty(2 * ch, dtype=np.float64)
        _bn_backward_rows(px, py, pdy, pdx, nb, ch, pg, pm, pi, pdg, pdb, &acc[0], training,
                          act, need_dx)
        return
    for c in prange(ch, nogil=True, schedule="static",
                    num_threads=_nt_channels(nthreads, ch, 3.0 * nb * ch * s)):
        sb = 0.0
        sg = 0.0
        _bn_grad_sums(px, py, pdy, c, nb, ch, s, pm[c], act, &sb, &sg)
        pdb[c] = <float>sb
        pdg[c] = <float>(sg * pi[c])
    if not need_dx:
        return
    for q in prange(nb * ch, nogil=True, schedule="static", num_threads=nt):
        c = q % ch
        k = c1 = c0 = 0.0          # assigned in the loop: private to each thread
        _dx_coefficients(c, m, pg, pm, pi, pdg, pdb, training, &k, &c1, &c0)
        for j in range(s):
            pdx[q * s + j] = k * pdy[q * s + j] + c1 * px[q * s + j] + c0


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
