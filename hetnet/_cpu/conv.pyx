"""im2col / col2im and max pooling for the CPU device.

Work is split over (image, channel) planes with OpenMP: each plane's patches
(or pooling windows) are independent, so no two threads write the same memory.
Shapes follow :mod:`hetnet.devices.base`.
"""

from cython.parallel cimport prange
from libc.string cimport memset

include "_openmp.pxi"


cdef inline void im2col_plane(const float *x, float *cols, int h, int w, int ho, int wo,
                              int kh, int kw, int sh, int sw, int ph, int pw,
                              Py_ssize_t row_stride) noexcept nogil:
    """Unroll one (H, W) plane into its kh*kw rows of ``cols``."""
    cdef int i, j, oy, ox, iy, ix, ox_lo, ox_hi
    cdef float *dst
    cdef const float *src
    for i in range(kh):
        for j in range(kw):
            dst = cols + (i * kw + j) * row_stride
            # ox range for which ix = ox*sw - pw + j lies inside [0, w)
            ox_lo = 0
            while ox_lo < wo and ox_lo * sw - pw + j < 0:
                ox_lo = ox_lo + 1
            ox_hi = wo
            while ox_hi > ox_lo and (ox_hi - 1) * sw - pw + j >= w:
                ox_hi = ox_hi - 1
            for oy in range(ho):
                iy = oy * sh - ph + i
                if iy < 0 or iy >= h:
                    memset(dst + oy * wo, 0, wo * sizeof(float))
                    continue
                src = x + iy * w - pw + j
                for ox in range(ox_lo):
                    dst[oy * wo + ox] = 0.0
                if sw == 1:
                    for ox in range(ox_lo, ox_hi):
                        dst[oy * wo + ox] = src[ox]
                else:
                    for ox in range(ox_lo, ox_hi):
                        dst[oy * wo + ox] = src[ox * sw]
                for ox in range(ox_hi, wo):
                    dst[oy * wo + ox] = 0.0


def im2col(float[:, :, :, ::1] x, float[:, :, ::1] cols, int kh, int kw,
           int sh, int sw, int ph, int pw, int nthreads):
    """x (N, C, H, W) -> cols (N, C*kh*kw, Ho*Wo)."""
    cdef int n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef int ho = (h + 2 * ph - kh) // sh + 1, wo = (w + 2 * pw - kw) // sw + 1
    cdef Py_ssize_t p, planes = <Py_ssize_t>n * c, hw = h * w, howo = ho * wo
    cdef Py_ssize_t kk = kh * kw
    cdef float *px = &x[0, 0, 0, 0]
    cdef float *pc = &cols[0, 0, 0]
    if planes == 0 or howo == 0:
        return
    # plane p = (image, channel); its rows start at p*kk in the (N*C*kk, HoWo) view
    for p in prange(planes, nogil=True, num_threads=nthreads, schedule="static"):
        im2col_plane(px + p * hw, pc + p * kk * howo, h, w, ho, wo,
                     kh, kw, sh, sw, ph, pw, howo)


def col2im(float[:, :, ::1] cols, float[:, :, :, ::1] x, int kh, int kw,
           int sh, int sw, int ph, int pw, int nthreads):
    """Scatter-add cols (N, C*kh*kw, Ho*Wo) into x (N, C, H, W) (overwritten)."""
    cdef int n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef int ho = (h + 2 * ph - kh) // sh + 1, wo = (w + 2 * pw - kw) // sw + 1
    cdef Py_ssize_t p, planes = <Py_ssize_t>n * c, hw = h * w, howo = ho * wo
    cdef Py_ssize_t kk = kh * kw
    cdef float *px = &x[0, 0, 0, 0]
    cdef float *pc = &cols[0, 0, 0]
    cdef int i, j, oy, ox, iy, ix
    cdef float *dst
    cdef const float *src
    if planes == 0:
        return
    for p in prange(planes, nogil=True, num_threads=nthreads, schedule="static"):
        dst = px + p * hw
        memset(dst, 0, hw * sizeof(float))
        for i in range(kh):
            for j in range(kw):
                src = pc + (p * kk + i * kw + j) * howo
                for oy in range(ho):
                    iy = oy * sh - ph + i
                    if iy < 0 or iy >= h:
                        continue
                    for ox in range(wo):
                        ix = ox * sw - pw + j
                        if ix >= 0 and ix < w:
                            dst[iy * w + ix] += src[oy * wo + ox]


def maxpool2d(float[:, :, :, ::1] x, float[:, :, :, ::1] y, int[:, :, :, ::1] argmax,
              int kh, int kw, int sh, int sw, int nthreads):
    """Max over kh x kw windows (no padding); argmax is the flat index in the plane."""
    cdef int n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef int ho = y.shape[2], wo = y.shape[3]
    cdef Py_ssize_t p, planes = <Py_ssize_t>n * c, hw = h * w, howo = ho * wo
    cdef float *px = &x[0, 0, 0, 0]
    cdef float *py = &y[0, 0, 0, 0]
    cdef int *pa = &argmax[0, 0, 0, 0]
    cdef int i, j, oy, ox, idx, best_idx
    cdef float best, v
    cdef const float *src
    if planes == 0 or howo == 0:
        return
    for p in prange(planes, nogil=True, num_threads=nthreads, schedule="static"):
        src = px + p * hw
        for oy in range(ho):
            for ox in range(wo):
                best_idx = (oy * sh) * w + ox * sw
                best = src[best_idx]
                for i in range(kh):
                    for j in range(kw):
                        idx = (oy * sh + i) * w + ox * sw + j
                        v = src[idx]
                        if v > best:
                            best = v
                            best_idx = idx
                py[p * howo + oy * wo + ox] = best
                pa[p * howo + oy * wo + ox] = best_idx


def maxpool2d_backward(float[:, :, :, ::1] dy, int[:, :, :, ::1] argmax,
                       float[:, :, :, ::1] dx, int nthreads):
    """dx (overwritten) gets dy added at each window's arg-max."""
    cdef int n = dx.shape[0], c = dx.shape[1], h = dx.shape[2], w = dx.shape[3]
    cdef Py_ssize_t howo = dy.shape[2] * dy.shape[3]
    cdef Py_ssize_t p, q, planes = <Py_ssize_t>n * c, hw = h * w
    cdef float *pdx = &dx[0, 0, 0, 0]
    cdef float *pdy = &dy[0, 0, 0, 0]
    cdef int *pa = &argmax[0, 0, 0, 0]
    if planes == 0:
        return
    for p in prange(planes, nogil=True, num_threads=nthreads, schedule="static"):
        memset(pdx + p * hw, 0, hw * sizeof(float))
        for q in range(howo):
            pdx[p * hw + pa[p * howo + q]] += pdy[p * howo + q]
