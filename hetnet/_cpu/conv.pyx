"""im2col / col2im and max pooling for the CPU device.

Work is split over (image, channel) planes with OpenMP: each plane's patches
(or pooling windows) are independent, so no two threads write the same memory.
Shapes follow :mod:`hetnet.devices.base`.
"""

from cython.parallel cimport prange, threadid
from libc.string cimport memset, memcpy

from hetnet._cpu.blas cimport gemm_rm

include "_openmp.pxi"
include "_act.pxi"


cdef inline int _threads_for(int nthreads, Py_ssize_t items, double work, double unit) noexcept nogil:
    """Threads worth waking for ``work`` spread over ``items`` independent
    pieces (planes, images): one per item at most (see hn_threads)."""
    return hn_threads(<int>min(<Py_ssize_t>nthreads, max(items, 1)), work, unit)


cdef inline void _ox_range(int wo, int sw, int off, int w, int *lo, int *hi) noexcept nogil:
    """Output columns ox in [lo, hi) whose input column ox*sw + off lies in [0, w)."""
    cdef int a = 0, b = wo
    if off < 0:
        a = (-off + sw - 1) // sw
    if (b - 1) * sw + off >= w:
        b = (w - 1 - off) // sw + 1 if w - 1 - off >= 0 else 0
    if b < a:
        b = a
    lo[0] = min(a, wo)
    hi[0] = min(b, wo)


cdef inline void im2col_plane(const float *x, float *cols, int h, int w, int ho, int wo,
                              int kh, int kw, int sh, int sw, int ph, int pw,
                              Py_ssize_t row_stride) noexcept nogil:
    """Unroll one (H, W) plane into its kh*kw rows of ``cols``.

    Each output row is a zero margin, a run copied from one input row (one
    memcpy at stride 1) and another zero margin.
    """
    cdef int i, j, oy, ox, iy, lo, hi
    cdef float *dst
    cdef const float *src
    for i in range(kh):
        for j in range(kw):
            _ox_range(wo, sw, j - pw, w, &lo, &hi)
            for oy in range(ho):
                dst = cols + (i * kw + j) * row_stride + oy * wo
                iy = oy * sh - ph + i
                if iy < 0 or iy >= h or hi <= lo:
                    memset(dst, 0, wo * sizeof(float))
                    continue
                if lo > 0:
                    memset(dst, 0, lo * sizeof(float))
                src = x + iy * w + j - pw
                if sw == 1:
                    memcpy(dst + lo, src + lo, (hi - lo) * sizeof(float))
                else:
                    for ox in range(lo, hi):
                        dst[ox] = src[ox * sw]
                if hi < wo:
                    memset(dst + hi, 0, (wo - hi) * sizeof(float))


cdef inline void col2im_plane(const float *cols, float *x, int h, int w, int ho, int wo,
                              int kh, int kw, int sh, int sw, int ph, int pw,
                              Py_ssize_t row_stride) noexcept nogil:
    """Overwrite one (H, W) plane with the scatter-add of its kh*kw rows."""
    cdef int i, j, oy, ox, iy, lo, hi
    cdef const float *src
    cdef float *dst
    memset(x, 0, h * w * sizeof(float))
    for i in range(kh):
        for j in range(kw):
            _ox_range(wo, sw, j - pw, w, &lo, &hi)
            for oy in range(ho):
                iy = oy * sh - ph + i
                if iy < 0 or iy >= h:
                    continue
                src = cols + (i * kw + j) * row_stride + oy * wo
                dst = x + iy * w + j - pw
                if sw == 1:
                    for ox in range(lo, hi):
                        dst[ox] += src[ox]
                else:
                    for ox in range(lo, hi):
                        dst[ox * sw] += src[ox]


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
    for p in prange(planes, nogil=True, num_threads=_threads_for(nthreads, planes, <double>planes * kk * howo, HN_COPY_UNIT), schedule="static"):
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
    if planes == 0:
        return
    for p in prange(planes, nogil=True, num_threads=_threads_for(nthreads, planes, <double>planes * kk * howo, HN_COPY_UNIT), schedule="static"):
        col2im_plane(pc + p * kk * howo, px + p * hw, h, w, ho, wo, kh, kw, sh, sw, ph, pw, howo)


cdef void _maxpool2x2(const float *px, float *py, int *pa, Py_ssize_t planes, int h, int w,
                      int ho, int wo, int nthreads) noexcept nogil:
    """:func:`maxpool2d` for 2x2 windows at stride 2 (LeNet's, VGG's): each
    window's four values are compared in registers, where the general loop
    passes over the output row once per window position (a load and a store
    of the running maximum and its index each time); same order, same ties
    (the first maximum in row-major window order), same NaN handling."""
    cdef Py_ssize_t p, hw = <Py_ssize_t>h * w, howo = <Py_ssize_t>ho * wo
    cdef int oy, ox, at, base, take
    cdef float best, v
    cdef const float *r0
    cdef const float *r1
    cdef float *yrow
    cdef int *arow
    for p in prange(planes, num_threads=_threads_for(nthreads, planes, <double>planes * hw, HN_COPY_UNIT), schedule="static"):
        for oy in range(ho):
            r0 = px + p * hw + 2 * oy * w
            r1 = r0 + w
            yrow = py + p * howo + oy * wo
            arow = pa + p * howo + oy * wo
            base = 2 * oy * w
            for ox in range(wo):
                # selects, not branches (see maxpool2d): masks of all ones where v wins
                best = r0[2 * ox]
                at = base + 2 * ox
                v = r0[2 * ox + 1]
                take = -<int>(v > best)
                at = at ^ ((at ^ (base + 2 * ox + 1)) & take)
                best = v if v > best else best
                v = r1[2 * ox]
                take = -<int>(v > best)
                at = at ^ ((at ^ (base + w + 2 * ox)) & take)
                best = v if v > best else best
                v = r1[2 * ox + 1]
                take = -<int>(v > best)
                at = at ^ ((at ^ (base + w + 2 * ox + 1)) & take)
                best = v if v > best else best
                yrow[ox] = best
                arow[ox] = at


def maxpool2d(float[:, :, :, ::1] x, float[:, :, :, ::1] y, int[:, :, :, ::1] argmax,
              int kh, int kw, int sh, int sw, int nthreads):
    """Max over kh x kw windows (no padding); argmax is the flat index in the plane.

    Works a whole output row at a time: the row starts as the windows' first
    entries and each further window position is compared across the row.
    Ties keep the first position in row-major window order.  The comparison
    selects rather than branches: on real data its outcome is random, and a
    mispredicted branch per comparison made the loop five times slower
    (timing one input over and over hides this, as the predictor learns it).
    """
    cdef int n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef int ho = y.shape[2], wo = y.shape[3]
    cdef Py_ssize_t p, planes = <Py_ssize_t>n * c, hw = h * w, howo = ho * wo
    cdef float *px = &x[0, 0, 0, 0]
    cdef float *py = &y[0, 0, 0, 0]
    cdef int *pa = &argmax[0, 0, 0, 0]
    cdef int i, j, oy, ox, base, at
    cdef float v, cur
    cdef int take
    cdef const float *src
    cdef float *yrow
    cdef int *arow
    if planes == 0 or howo == 0:
        return
    if kh == 2 and kw == 2 and sh == 2 and sw == 2:
        _maxpool2x2(px, py, pa, planes, h, w, ho, wo, nthreads)
        return
    for p in prange(planes, nogil=True, num_threads=_threads_for(nthreads, planes, <double>planes * hw, HN_COPY_UNIT), schedule="static"):
        src = px + p * hw
        for oy in range(ho):
            yrow = py + p * howo + oy * wo
            arow = pa + p * howo + oy * wo
            base = oy * sh * w
            for ox in range(wo):
                yrow[ox] = src[base + ox * sw]
                arow[ox] = base + ox * sw
            for i in range(kh):
                for j in range(kw):
                    if i == 0 and j == 0:
                        continue
                    for ox in range(wo):
                        at = base + i * w + ox * sw + j
                        v = src[at]
                        cur = yrow[ox]
                        take = -<int>(v > cur)            # all ones where v wins
                        yrow[ox] = v if v > cur else cur
                        arow[ox] = arow[ox] ^ ((arow[ox] ^ at) & take)


def maxpool2d_backward(float[:, :, :, ::1] dy, int[:, :, :, ::1] argmax,
                       float[:, :, :, ::1] dx, int nthreads):
    """dx (overwritten) gets dy added at each window's arg-max.  Returns the
    number of arg-max entries outside their plane (skipped: never written
    out of bounds); the caller raises when it is not 0."""
    cdef int n = dx.shape[0], c = dx.shape[1], h = dx.shape[2], w = dx.shape[3]
    cdef Py_ssize_t howo = dy.shape[2] * dy.shape[3]
    cdef Py_ssize_t p, q, planes = <Py_ssize_t>n * c, hw = h * w
    cdef Py_ssize_t bad = 0
    cdef int a
    if planes == 0 or howo == 0:
        return 0
    cdef float *pdx = &dx[0, 0, 0, 0]
    cdef float *pdy = &dy[0, 0, 0, 0]
    cdef int *pa = &argmax[0, 0, 0, 0]
    for p in prange(planes, nogil=True, num_threads=_threads_for(nthreads, planes, <double>planes * hw, HN_COPY_UNIT), schedule="static"):
        memset(pdx + p * hw, 0, hw * sizeof(float))
        for q in range(howo):
            a = pa[p * howo + q]
            if a < 0 or a >= hw:
                bad += 1
            else:
                pdx[p * hw + a] += pdy[p * howo + q]
    return bad


# ---------------------------------------------------------------------------
# Fused convolution: the whole per-image pipeline in one parallel loop.
#
# Each thread unrolls one image at a time into its own (C*kh*kw, Ho*Wo) slice
# of the workspace, small enough to stay in its core's cache, and runs the
# GEMM (and the bias, activation and gradient steps) on it straight away.
# This avoids writing the im2col matrix of a whole chunk of the batch to
# memory and reading it back, which is what bounds the unfused path.
# ---------------------------------------------------------------------------

def conv2d_forward(float[:, :, :, ::1] x, float[:, ::1] w, float[::1] b,
                   float[:, :, ::1] y, float[:, ::1] ws, int kh, int kw,
                   int sh, int sw, int ph, int pw, int act, int nthreads):
    """y[n] = act(W @ im2col(x[n]) + b) for x (N, C, H, W), w (F, C*kh*kw),
    y (N, F, Ho*Wo); ``b`` may be empty; ws (nthreads, C*kh*kw*Ho*Wo)."""
    cdef int n = x.shape[0], c = x.shape[1], h = x.shape[2], wd = x.shape[3]
    cdef int f = w.shape[0], ckk = w.shape[1]
    cdef int ho = (h + 2 * ph - kh) // sh + 1, wo = (wd + 2 * pw - kw) // sw + 1
    cdef int p = ho * wo
    cdef Py_ssize_t img, q, r, hw = h * wd, kk = kh * kw
    cdef int ch, t
    cdef float *px = &x[0, 0, 0, 0]
    cdef float *pw_ = &w[0, 0]
    cdef float *py = &y[0, 0, 0]
    cdef float *pws = &ws[0, 0]
    cdef float *cols
    cdef float *out
    cdef float bias
    cdef bint has_bias = b.shape[0] > 0
    if n == 0:
        return
    for img in prange(n, nogil=True, num_threads=_threads_for(nthreads, n, <double>n * f * ckk * p, HN_CONV_UNIT),
                     schedule="static"):
        t = threadid()
        cols = pws + t * ckk * p
        for ch in range(c):
            im2col_plane(px + (img * c + ch) * hw, cols + ch * kk * p, h, wd, ho, wo,
                         kh, kw, sh, sw, ph, pw, p)
        out = py + img * f * p
        gemm_rm(False, False, f, p, ckk, 1.0, pw_, ckk, cols, p, 0.0, out, p)
        if has_bias or act != ACT_IDENTITY:
            for r in range(f):
                _bias_act_run(out + r * p, NULL, b[r] if has_bias else 0.0, p, act)


cdef inline float _sum_run(const float *x, Py_ssize_t n) noexcept nogil:
    """The sum of a contiguous run in eight interleaved partial sums: one
    running sum is a chain of dependent adds, each waiting for the last
    (the bias gradient took as long as a GEMM); eight independent ones
    fill two SIMD registers."""
    cdef float s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, s4 = 0.0, s5 = 0.0, s6 = 0.0, s7 = 0.0
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        s0 += x[i]
        s1 += x[i + 1]
        s2 += x[i + 2]
        s3 += x[i + 3]
        s4 += x[i + 4]
        s5 += x[i + 5]
        s6 += x[i + 6]
        s7 += x[i + 7]
        i += 8
    while i < n:
        s0 += x[i]
        i += 1
    return ((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7))


def conv2d_backward(float[:, :, :, ::1] x, float[:, ::1] w, float[:, :, ::1] y,
                    float[:, :, ::1] dy, float[:, ::1] dw, float[::1] db,
                    float[:, :, :, ::1] dx, float[:, ::1] ws, float[:, ::1] dw_part,
                    float[:, ::1] db_part, int kh, int kw, int sh, int sw, int ph, int pw,
                    int act, bint need_dx, int nthreads):
    """Gradients of :func:`conv2d_forward`.

    dy (N, F, Ho*Wo) is overwritten with the gradient before the activation.
    dw (F, C*kh*kw) and db (F,) (may be empty) are overwritten; dx (N, C, H, W)
    is written when ``need_dx``.  Each thread sums its images' dW and db into
    its row of dw_part / db_part; the rows are added at the end.
    """
    cdef int n = x.shape[0], c = x.shape[1], h = x.shape[2], wd = x.shape[3]
    cdef int f = w.shape[0], ckk = w.shape[1]
    cdef int ho = (h + 2 * ph - kh) // sh + 1, wo = (wd + 2 * pw - kw) // sw + 1
    cdef int p = ho * wo
    cdef Py_ssize_t img, q, r, hw = h * wd, kk = kh * kw, j
    cdef int ch, t, tt, nt
    cdef float *px = &x[0, 0, 0, 0]
    cdef float *pw_ = &w[0, 0]
    cdef float *py = &y[0, 0, 0]
    cdef float *pdy = &dy[0, 0, 0]
    cdef float *pdx = &dx[0, 0, 0, 0]
    cdef float *pws = &ws[0, 0]
    cdef float *pdwp = &dw_part[0, 0]
    cdef float *pdbp = &db_part[0, 0]
    cdef float *cols
    cdef float *g
    cdef float *yo
    cdef float acc
    cdef bint has_bias = db.shape[0] > 0
    # the weight gradient and the input gradient each take as many multiply-adds as the forward
    nt = _threads_for(nthreads, n, <double>n * f * ckk * p * (2 + need_dx), HN_CONV_UNIT)
    memset(pdwp, 0, nt * f * ckk * sizeof(float))
    memset(pdbp, 0, nt * f * sizeof(float))
    for img in prange(n, nogil=True, num_threads=nt, schedule="static"):
        t = threadid()
        cols = pws + t * ckk * p
        g = pdy + img * f * p
        yo = py + img * f * p
        _act_grad_run(yo, g, g, f * p, act)
        for r in range(f):
            pdbp[t * f + r] += _sum_run(g + r * p, p)
        for ch in range(c):
            im2col_plane(px + (img * c + ch) * hw, cols + ch * kk * p, h, wd, ho, wo,
                         kh, kw, sh, sw, ph, pw, p)
        gemm_rm(False, True, f, ckk, p, 1.0, g, p, cols, p, 1.0, pdwp + t * f * ckk, ckk)
        if need_dx:
            gemm_rm(True, False, ckk, p, f, 1.0, pw_, ckk, g, p, 0.0, cols, p)
            for ch in range(c):
                col2im_plane(cols + ch * kk * p, pdx + (img * c + ch) * hw, h, wd, ho, wo,
                             kh, kw, sh, sw, ph, pw, p)
    for j in range(f * ckk):
        acc = 0.0
        for tt in range(nt):
            acc = acc + pdwp[tt * f * ckk + j]
        dw[j // ckk, j % ckk] = acc
    if has_bias:
        for r in range(f):
            acc = 0.0
            for tt in range(nt):
                acc = acc + pdbp[tt * f + r]
            db[r] = acc
