"""Padded max pooling and average pooling for the CPU device.

Work is split over (image, channel) planes with OpenMP, as in conv.pyx:
every plane's windows are independent, so no two threads write the same
memory.  Shapes follow :mod:`hetnet.devices.base`.
"""

from cython.parallel cimport prange
from libc.string cimport memset
from libc.math cimport INFINITY

include "_openmp.pxi"


cdef inline int _nt_planes(int nthreads, Py_ssize_t planes, double work) noexcept nogil:
    return hn_threads(<int>min(<Py_ssize_t>nthreads, max(planes, 1)), work, HN_COPY_UNIT)


cdef inline void _span(int o, int s, int p, int k, int n, int *lo, int *hi) noexcept nogil:
    # Output o's window along one axis is o*s - p + [0, k); clipping it to the
    # plane [0, n) once lets the window loops run without per-element bounds
    # tests, and -inf or zero padding then needs no reads at all.
    lo[0] = o * s - p
    hi[0] = lo[0] + k
    if lo[0] < 0:
        lo[0] = 0
    if hi[0] > n:
        hi[0] = n


cdef void _maxpool_pad_plane(const float *x, float *y, int *am, int h, int w, int ho, int wo,
                             int kh, int kw, int sh, int sw, int ph, int pw) noexcept nogil:
    cdef int oy, ox, iy, ix, y0, y1, x0, x1, pos
    cdef float best, v
    for oy in range(ho):
        _span(oy, sh, ph, kh, h, &y0, &y1)
        for ox in range(wo):
            _span(ox, sw, pw, kw, w, &x0, &x1)
            best = -INFINITY
            pos = -1
            for iy in range(y0, y1):
                for ix in range(x0, x1):
                    v = x[iy * w + ix]
                    if pos < 0 or v > best:
                        best = v
                        pos = iy * w + ix
            y[oy * wo + ox] = best
            am[oy * wo + ox] = pos


def maxpool2d_padded(float[:, :, :, ::1] x, float[:, :, :, ::1] y, int[:, :, :, ::1] argmax,
                     int kh, int kw, int sh, int sw, int ph, int pw, int nthreads):
    """Max over kh x kw windows of x padded with -inf; argmax is the flat
    index in the unpadded plane (the first maximum in row-major window order)."""
    cdef int h = x.shape[2], w = x.shape[3], ho = y.shape[2], wo = y.shape[3]
    cdef Py_ssize_t p, planes = <Py_ssize_t>x.shape[0] * x.shape[1]
    cdef Py_ssize_t hw = <Py_ssize_t>h * w, howo = <Py_ssize_t>ho * wo
    if planes == 0 or howo == 0:
        return
    cdef const float *px = &x[0, 0, 0, 0]
    cdef float *py = &y[0, 0, 0, 0]
    cdef int *pa = &argmax[0, 0, 0, 0]
    for p in prange(planes, nogil=True, schedule="static",
                    num_threads=_nt_planes(nthreads, planes, <double>planes * howo * kh * kw)):
        _maxpool_pad_plane(px + p * hw, py + p * howo, pa + p * howo, h, w, ho, wo,
                           kh, kw, sh, sw, ph, pw)


cdef void _avgpool_plane(const float *x, float *y, int h, int w, int ho, int wo, int kh,
                         int kw, int sh, int sw, int ph, int pw) noexcept nogil:
    cdef int oy, ox, iy, ix, y0, y1, x0, x1
    cdef float acc
    cdef float inv = 1.0 / (kh * kw)
    for oy in range(ho):
        _span(oy, sh, ph, kh, h, &y0, &y1)
        for ox in range(wo):
            _span(ox, sw, pw, kw, w, &x0, &x1)
            acc = 0.0
            for iy in range(y0, y1):
                for ix in range(x0, x1):
                    acc = acc + x[iy * w + ix]
            y[oy * wo + ox] = acc * inv


def avgpool2d(float[:, :, :, ::1] x, float[:, :, :, ::1] y, int kh, int kw, int sh, int sw,
              int ph, int pw, int nthreads):
    """Mean over kh x kw windows of x zero-padded, the padding counted."""
    cdef int h = x.shape[2], w = x.shape[3], ho = y.shape[2], wo = y.shape[3]
    cdef Py_ssize_t p, planes = <Py_ssize_t>x.shape[0] * x.shape[1]
    cdef Py_ssize_t hw = <Py_ssize_t>h * w, howo = <Py_ssize_t>ho * wo
    if planes == 0 or howo == 0:
        return
    cdef const float *px = &x[0, 0, 0, 0]
    cdef float *py = &y[0, 0, 0, 0]
    for p in prange(planes, nogil=True, schedule="static",
                    num_threads=_nt_planes(nthreads, planes, <double>planes * howo * kh * kw)):
        _avgpool_plane(px + p * hw, py + p * howo, h, w, ho, wo, kh, kw, sh, sw, ph, pw)


cdef void _avgpool_back_plane(const float *dy, float *dx, int h, int w, int ho, int wo,
                              int kh, int kw, int sh, int sw, int ph, int pw) noexcept nogil:
    cdef int oy, ox, iy, ix, y0, y1, x0, x1
    cdef float share
    cdef float inv = 1.0 / (kh * kw)
    memset(dx, 0, <Py_ssize_t>h * w * sizeof(float))
    for oy in range(ho):
        _span(oy, sh, ph, kh, h, &y0, &y1)
        for ox in range(wo):
            _span(ox, sw, pw, kw, w, &x0, &x1)
            share = dy[oy * wo + ox] * inv
            for iy in range(y0, y1):
                for ix in range(x0, x1):
                    dx[iy * w + ix] += share


def avgpool2d_backward(float[:, :, :, ::1] dy, float[:, :, :, ::1] dx, int kh, int kw,
                       int sh, int sw, int ph, int pw, int nthreads):
    """dx (overwritten) = the adjoint of avgpool2d applied to dy."""
    cdef int h = dx.shape[2], w = dx.shape[3], ho = dy.shape[2], wo = dy.shape[3]
    cdef Py_ssize_t p, planes = <Py_ssize_t>dx.shape[0] * dx.shape[1]
    cdef Py_ssize_t hw = <Py_ssize_t>h * w, howo = <Py_ssize_t>ho * wo
    if planes == 0 or hw == 0:
        return
    cdef const float *pdy = &dy[0, 0, 0, 0]
    cdef float *pdx = &dx[0, 0, 0, 0]
    for p in prange(planes, nogil=True, schedule="static",
                    num_threads=_nt_planes(nthreads, planes, <double>planes * howo * kh * kw)):
        _avgpool_back_plane(pdy + p * howo, pdx + p * hw, h, w, ho, wo, kh, kw, sh, sw, ph, pw)
