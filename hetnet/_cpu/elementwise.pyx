"""Elementwise, loss, optimiser and reduction kernels for the CPU device.

Loops run over flat float32 buffers; OpenMP splits them only when they are
large enough for a parallel region to pay (``_MIN_PARALLEL`` elements).
Shapes follow :mod:`hetnet.devices.base`.
"""

import numpy as np

from cython.parallel cimport prange
from libc.math cimport expf, logf, log1pf, fabsf, sqrt, pow
from libc.string cimport memcpy, memset
from libc.stdlib cimport malloc, free
from libc.float cimport FLT_MIN

include "_openmp.pxi"

include "_act.pxi"


cdef inline int _nt(Py_ssize_t size, int nthreads) noexcept nogil:
    """Threads for a loop over ``size`` elements (see hn_threads)."""
    return hn_threads(nthreads, <double>size, HN_ELEMENT_UNIT)


cdef inline int _nt_heavy(Py_ssize_t size, int nthreads) noexcept nogil:
    return hn_threads(nthreads, <double>size, HN_HEAVY_UNIT)


def bias_act(float[:, :, ::1] y, float[::1] b, int code, int nthreads):
    """In place ``y[n, f, p] = act(y[n, f, p] + b[f])`` for y (N, F, P).

    ``b`` may be empty (no bias).  Covers bias_add (code 0) and the fused
    bias + activation of a conv (P = Ho*Wo) or dense (P = 1) layer.
    """
    cdef Py_ssize_t n = y.shape[0], f = y.shape[1], p = y.shape[2], r, i
    cdef float *py = &y[0, 0, 0]
    cdef bint has_bias = b.shape[0] > 0
    cdef float *pb = &b[0] if has_bias else NULL
    if n * f * p == 0:
        return
    if p == 1:      # dense rows: the bias runs along the row
        for i in prange(n, nogil=True, num_threads=_nt(n * f, nthreads), schedule="static"):
            _bias_act_run(py + i * f, pb, 0.0, f, code)
        return
    for r in prange(n * f, nogil=True, num_threads=_nt(n * f * p, nthreads), schedule="static"):
        _bias_act_run(py + r * p, NULL, pb[r % f] if has_bias else 0.0, p, code)


def act_forward(float[::1] x, float[::1] y, int code, int nthreads):
    """y = act(x) over flat buffers (y may alias x)."""
    cdef Py_ssize_t i, n = x.shape[0]
    for i in prange(n, nogil=True, num_threads=_nt(n, nthreads), schedule="static"):
        y[i] = _act(code, x[i])


def act_backward(float[::1] y, float[::1] dy, float[::1] dx, int code, int nthreads):
    """dx = dy * act'(from output y) over flat buffers (dx may alias dy)."""
    cdef Py_ssize_t n = y.shape[0], chunk, t, lo
    cdef int nt = _nt(n, nthreads)
    if n == 0:
        return
    chunk = (n + nt - 1) // nt
    for t in prange(nt, nogil=True, num_threads=nt, schedule="static", chunksize=1):
        lo = t * chunk
        if lo < n:
            _act_grad_run(&y[lo], &dy[lo], &dx[lo], min(chunk, n - lo), code)


cdef void _grad_colsum_rows(const float *y, float *dy, double *acc, float *blk,
                            Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t f, int code) noexcept nogil:
    """Rows [lo, hi) of (N, F) ``dy``: ``dy *= act'(y)`` (skipped for
    identity) and their column sums added to ``acc`` (F,).  Sums run in float
    over blocks of 64 rows (vectorised), then in double across blocks."""
    cdef Py_ssize_t i0, i, k
    cdef float *row
    i0 = lo
    while i0 < hi:
        memset(blk, 0, f * sizeof(float))
        for i in range(i0, min(hi, i0 + 64)):
            row = dy + i * f
            if code != ACT_IDENTITY:
                _act_grad_inplace(y + i * f, row, f, code)
            for k in range(f):
                blk[k] = blk[k] + row[k]
        for k in range(f):
            acc[k] = acc[k] + blk[k]
        i0 = i0 + 64


cdef int _act_grad_colsum(const float *y, float *dy, float *db, Py_ssize_t n, Py_ssize_t f,
                          int code, int nthreads) noexcept nogil:
    """(N, F) rows: ``dy *= act'(from y)`` in place (not for identity, when
    ``y`` is not read) and ``db[f] = sum_n dy[n, f]``, rows split over
    threads.  Returns -1 when out of memory, else 0."""
    cdef int nt = <int>min(<Py_ssize_t>_nt(n * f, nthreads), n), t
    cdef Py_ssize_t k, lo, chunk
    cdef double s
    cdef double *acc
    cdef float *blk
    if f == 0:
        return 0
    if n == 0:
        memset(db, 0, f * sizeof(float))
        return 0
    chunk = (n + nt - 1) // nt
    acc = <double *>malloc(nt * f * sizeof(double))
    blk = <float *>malloc(nt * f * sizeof(float))
    if acc == NULL or blk == NULL:
        free(acc)
        free(blk)
        return -1
    memset(acc, 0, nt * f * sizeof(double))
    for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
        lo = t * chunk
        _grad_colsum_rows(y, dy, acc + t * f, blk + t * f, lo, min(n, lo + chunk), f, code)
    for k in range(f):
        s = 0.0
        for t in range(nt):
            s = s + acc[t * f + k]
        db[k] = <float>s
    free(acc)
    free(blk)
    return 0


def act_backward_bias_grad(const float[:, ::1] y, float[:, ::1] dy, float[::1] db,
                           int code, int nthreads):
    """Dense rows (N, F), one pass: ``dy *= act'(from y)`` in place and
    ``db[f] = sum_n dy[n, f]`` (y is not read for identity)."""
    cdef Py_ssize_t n = dy.shape[0], f = dy.shape[1]
    cdef const float *py = &y[0, 0] if code != ACT_IDENTITY and n * f else NULL
    cdef float *pd = &dy[0, 0] if n * f else NULL
    cdef int rc
    with nogil:
        rc = _act_grad_colsum(py, pd, &db[0] if f else NULL, n, f, code, nthreads)
    if rc:
        raise MemoryError()


def bias_grad(float[:, :, ::1] dy, float[::1] db, int nthreads):
    """db[f] = sum over n, p of dy[n, f, p] (float64 accumulation; dense
    rows, P = 1, add blocks of 64 rows in float first, as above)."""
    cdef Py_ssize_t n = dy.shape[0], f = dy.shape[1], p = dy.shape[2], i, k, j
    cdef double acc
    cdef float *pd = &dy[0, 0, 0] if n * f * p else NULL
    cdef int rc
    if p == 1:
        with nogil:
            rc = _act_grad_colsum(NULL, pd, &db[0] if f else NULL, n, f, ACT_IDENTITY, nthreads)
        if rc:
            raise MemoryError()
        return
    for k in prange(f, nogil=True, num_threads=_nt(n * f * p, nthreads), schedule="static"):
        acc = 0.0
        for i in range(n):
            for j in range(p):
                acc = acc + pd[(i * f + k) * p + j]
        db[k] = <float>acc


def softmax_rows(float[:, ::1] x, float[:, ::1] y, int nthreads):
    """Row-wise stable softmax, y may alias x."""
    cdef Py_ssize_t n = x.shape[0], k = x.shape[1], i, j
    cdef float m, s
    for i in prange(n, nogil=True, num_threads=_nt_heavy(n * k, nthreads), schedule="static"):
        m = x[i, 0]
        for j in range(1, k):
            if x[i, j] > m:
                m = x[i, j]
        s = 0.0
        for j in range(k):
            y[i, j] = expf(x[i, j] - m)
            s = s + y[i, j]
        for j in range(k):
            y[i, j] = y[i, j] / s


def softmax_backward(float[:, ::1] y, float[:, ::1] dy, float[:, ::1] dx, int nthreads):
    """dx = y * (dy - sum(dy * y)) per row."""
    cdef Py_ssize_t n = y.shape[0], k = y.shape[1], i, j
    cdef float s
    for i in prange(n, nogil=True, num_threads=_nt(n * k, nthreads), schedule="static"):
        s = 0.0
        for j in range(k):
            s = s + dy[i, j] * y[i, j]
        for j in range(k):
            dx[i, j] = y[i, j] * (dy[i, j] - s)


def softmax_cross_entropy(float[:, ::1] z, int[::1] labels, float[::1] weights,
                          float[:, ::1] grad, int nthreads):
    """Fused softmax + cross-entropy; returns the loss, fills grad (N, K).

    ``weights`` may be empty (all ones).  Loss and gradient are divided by N.
    """
    cdef Py_ssize_t n = z.shape[0], k = z.shape[1], i, j
    cdef float m, s, wi, inv_n = 1.0 / n if n > 0 else 0.0
    cdef double loss = 0.0
    cdef bint has_w = weights.shape[0] > 0
    for i in prange(n, nogil=True, num_threads=_nt_heavy(n * k, nthreads), schedule="static"):
        wi = weights[i] if has_w else 1.0
        m = z[i, 0]
        for j in range(1, k):
            if z[i, j] > m:
                m = z[i, j]
        s = 0.0
        for j in range(k):
            grad[i, j] = expf(z[i, j] - m)
            s = s + grad[i, j]
        # (m - z) first: for large logits m + log(s) rounds the log-sum away in float32
        loss += wi * (<double>logf(s) + <double>(m - z[i, labels[i]]))
        for j in range(k):
            grad[i, j] = grad[i, j] / s * wi * inv_n
        grad[i, labels[i]] -= wi * inv_n
    return loss * inv_n


def sigmoid_bce(float[:, ::1] z, float[:, ::1] t, float[::1] weights,
                float[:, ::1] grad, int nthreads):
    """Fused sigmoid + binary cross-entropy (sum over outputs, mean over rows)."""
    cdef Py_ssize_t n = z.shape[0], k = z.shape[1], i, j
    cdef float v, wi, inv_n = 1.0 / n if n > 0 else 0.0
    cdef double loss = 0.0
    cdef bint has_w = weights.shape[0] > 0
    for i in prange(n, nogil=True, num_threads=_nt_heavy(n * k, nthreads), schedule="static"):
        wi = weights[i] if has_w else 1.0
        for j in range(k):
            v = z[i, j]
            loss += wi * (log1pf(expf(-fabsf(v))) + (v if v > 0 else 0.0) - v * t[i, j])
            grad[i, j] = (_act(ACT_SIGMOID, v) - t[i, j]) * wi * inv_n
    return loss * inv_n


cdef double _regression_loss(float[:, ::1] p, float[:, ::1] t, float[::1] weights,
                             float[:, ::1] grad, int nthreads, bint absolute):
    """Squared (or, ``absolute``, absolute) error over all N*K entries,
    weighted per row and divided by N*K; fills grad with ``2 w_i (p - t) /
    (N K)`` (or ``w_i sign(p - t) / (N K)``, 0 where they are equal)."""
    cdef Py_ssize_t n = p.shape[0], k = p.shape[1], i, j
    cdef float d, wi, inv = 1.0 / (n * k) if n * k > 0 else 0.0
    cdef double loss = 0.0
    cdef bint has_w = weights.shape[0] > 0
    for i in prange(n, nogil=True, num_threads=_nt(n * k, nthreads), schedule="static"):
        wi = weights[i] if has_w else 1.0
        for j in range(k):
            d = p[i, j] - t[i, j]
            if absolute:
                loss += wi * fabsf(d)
                grad[i, j] = wi * inv if d > 0 else (-wi * inv if d < 0 else 0.0)
            else:
                loss += wi * d * d
                grad[i, j] = 2.0 * d * wi * inv
    return loss * inv


def mse(float[:, ::1] p, float[:, ::1] t, float[::1] weights, float[:, ::1] grad, int nthreads):
    """Mean squared error over all N*K entries; fills grad."""
    return _regression_loss(p, t, weights, grad, nthreads, False)


def mae(float[:, ::1] p, float[:, ::1] t, float[::1] weights, float[:, ::1] grad, int nthreads):
    """Mean absolute error over all N*K entries; fills grad."""
    return _regression_loss(p, t, weights, grad, nthreads, True)


# ---------------------------------------------------------------- optimisers
# Each update runs over flat buffers in one parallel region: thread t takes
# the t-th contiguous block (as the GEMM that wrote the gradient split its
# rows, see CPUDevice._update_threads) and runs the C loop of
# _update_loops.pxi over it.

include "_update_loops.pxi"


cdef inline float _state_floor(float a, float b) noexcept nogil:
    """The least optimizer state worth keeping when the next update multiplies
    it by ``a`` and by ``b``: below it a product would be subnormal.  Flushing
    at the smallest normal float alone leaves states the products take into
    subnormals (a velocity of 2e-38 times a learning rate of 1e-3): a
    batch-1 MLP's 784x120 update took 45 us on such states here, 21 on
    ordinary ones."""
    cdef float least = 1.0
    if 0.0 < a < least:
        least = a
    if 0.0 < b < least:
        least = b
    return FLT_MIN / least


cdef inline int _update_nt(Py_ssize_t n, int nthreads, bint exact) noexcept nogil:
    cdef int nt = nthreads if exact else _nt(n, nthreads)
    if nt < 1:
        nt = 1
    return <int>min(<Py_ssize_t>nt, n) if n > 0 else 1


def sgd_update(float[::1] w, float[::1] g, float[::1] v, float lr, float momentum,
               float weight_decay, bint nesterov, int nthreads, bint exact_threads=False,
               float scale=1.0):
    """In-place SGD with momentum / Nesterov / weight decay (PyTorch's form),
    the gradient read as ``scale * g``.

    ``v`` may be empty when momentum is 0.  Velocities so small that the next
    update's products with them would be subnormal are set to 0 (see
    ``_state_floor``): a change below 1e-35 of a weight.
    """
    cdef Py_ssize_t n = w.shape[0], chunk, lo
    cdef int nt = _update_nt(n, nthreads, exact_threads), t
    cdef bint use_v = momentum != 0.0
    cdef float floor = _state_floor(momentum, lr)
    if n == 0:
        return
    chunk = (n + nt - 1) // nt
    for t in prange(nt, nogil=True, num_threads=nt, schedule="static", chunksize=1):
        lo = t * chunk
        if lo < n:
            hn_sgd_run(&w[lo], &g[lo], &v[lo] if use_v else NULL, min(chunk, n - lo), lr,
                     momentum, weight_decay, nesterov, scale, floor)


def adam_update(float[::1] w, float[::1] g, float[::1] m, float[::1] v, float lr,
                float beta1, float beta2, float eps, int t, float weight_decay,
                int nthreads, bint exact_threads=False, bint decoupled=False,
                float scale=1.0):
    """In-place Adam (or, ``decoupled``, AdamW) step with bias correction
    (t counts from 1), PyTorch's form: ``w -= lr / c1 * m / (sqrt(v) /
    sqrt(c2) + eps)``, the corrections computed once here, not per element."""
    cdef Py_ssize_t n = w.shape[0], chunk, lo
    cdef int nt = _update_nt(n, nthreads, exact_threads), k
    cdef double c1 = 1.0 - pow(beta1, t), c2 = 1.0 - pow(beta2, t)
    cdef float step = <float>(lr / c1), inv_c2s = <float>(1.0 / sqrt(c2))
    cdef float l2 = 0.0 if decoupled else weight_decay
    cdef float decay = <float>(1.0 - <double>lr * weight_decay) if decoupled else 1.0
    cdef float mfloor = _state_floor(beta1, 1.0), vfloor = _state_floor(beta2, 1.0)
    if n == 0:
        return
    chunk = (n + nt - 1) // nt
    for k in prange(nt, nogil=True, num_threads=nt, schedule="static", chunksize=1):
        lo = k * chunk
        if lo < n:
            hn_adam_run(&w[lo], &g[lo], &m[lo], &v[lo], min(chunk, n - lo), beta1, beta2,
                      step, inv_c2s, eps, l2, decay, scale, mfloor, vfloor)


def rmsprop_update(float[::1] w, float[::1] g, float[::1] sq, float[::1] buf, float lr,
                   float alpha, float eps, float momentum, float weight_decay, int nthreads,
                   bint exact_threads=False, float scale=1.0):
    """In-place RMSProp step (PyTorch's, not centred); ``buf`` may be empty
    when momentum is 0."""
    cdef Py_ssize_t n = w.shape[0], chunk, lo
    cdef int nt = _update_nt(n, nthreads, exact_threads), k
    cdef bint use_b = momentum != 0.0
    cdef float sfloor = _state_floor(alpha, 1.0), bfloor = _state_floor(momentum, lr)
    if n == 0:
        return
    chunk = (n + nt - 1) // nt
    for k in prange(nt, nogil=True, num_threads=nt, schedule="static", chunksize=1):
        lo = k * chunk
        if lo < n:
            hn_rmsprop_run(&w[lo], &g[lo], &sq[lo], &buf[lo] if use_b else NULL,
                         min(chunk, n - lo), lr, alpha, eps, momentum, weight_decay, scale,
                         sfloor, bfloor)


def sum_squares(float[::1] x, int nthreads):
    """Sum of the squares of a flat buffer (float64 accumulation)."""
    cdef Py_ssize_t i, n = x.shape[0]
    cdef double acc = 0.0
    for i in prange(n, nogil=True, num_threads=_nt(n, nthreads), schedule="static"):
        acc += <double>x[i] * x[i]
    return acc


def total(float[::1] x, int nthreads):
    """Sum of a flat buffer (float64 accumulation)."""
    cdef Py_ssize_t i, n = x.shape[0]
    cdef double acc = 0.0
    for i in prange(n, nogil=True, num_threads=_nt(n, nthreads), schedule="static"):
        acc += x[i]
    return acc


def argmax_rows(float[:, ::1] x, int[::1] out, int nthreads):
    """out[i] = first index of the row maximum."""
    cdef Py_ssize_t n = x.shape[0], k = x.shape[1], i, j
    cdef float m
    cdef int best
    for i in prange(n, nogil=True, num_threads=_nt(n * k, nthreads), schedule="static"):
        best = 0
        m = x[i, 0]
        for j in range(1, k):
            if x[i, j] > m:
                m = x[i, j]
                best = j
        out[i] = best


def axpy(float alpha, float[::1] x, float[::1] y, int nthreads):
    """y += alpha * x."""
    cdef Py_ssize_t i, n = x.shape[0]
    for i in prange(n, nogil=True, num_threads=_nt(n, nthreads), schedule="static"):
        y[i] = y[i] + alpha * x[i]


def scale(float alpha, float[::1] x, int nthreads):
    """x *= alpha."""
    cdef Py_ssize_t i, n = x.shape[0]
    for i in prange(n, nogil=True, num_threads=_nt(n, nthreads), schedule="static"):
        x[i] = x[i] * alpha


def gather_rows(const float[:, ::1] x, const long[::1] idx, float[:, ::1] out, int nthreads):
    """out[i] = x[idx[i]]: the rows of a mini-batch, copied in parallel
    (a random gather from a large array is bound by memory latency, which
    more threads hide).  Negative indices count from the end, as in numpy;
    returns the position of the first index out of range (rows from there
    on are left unwritten), or -1 when all were in range."""
    cdef Py_ssize_t n = idx.shape[0], d = x.shape[1], rows = x.shape[0], i, r
    cdef Py_ssize_t bad = n
    cdef const float *px = &x[0, 0] if rows and d else NULL
    cdef float *po = &out[0, 0] if n and d else NULL
    for i in range(n):      # a pass over the indices only: cheap next to the copy
        if idx[i] >= rows or idx[i] < -rows:
            bad = i
            break
    if d:
        for i in prange(bad, nogil=True, num_threads=_nt(bad * d, nthreads), schedule="static"):
            r = idx[i]
            if r < 0:
                r = r + rows
            memcpy(po + i * d, px + r * d, d * sizeof(float))
    return -1 if bad == n else bad


# ------------------------------------------------------- gradient averaging
# The shared-memory transport of hetnet.distributed (shm.py): each rank packs
# its weighted gradient into its slot, then sums the K slots in rank order.
# Both are memory-bound passes over ~250 KB that one thread does at the speed
# one core reaches another core's cache; T threads each take a contiguous
# chunk.  The sums are plain float adds in rank order and the scaling a plain
# float product, so the bits do not depend on T or the chunks (nothing is
# reassociated: no -ffast-math, and no product meets a sum to be fused).

cdef extern from *:
    """
    #include <string.h>

    /* dst[i] = src[i] * w, a copy when w == 1; src may be dst (a slot scaled
     * in place after a device download).  HN_CLONES: _update_loops.pxi. */
    HN_CLONES static void hn_scale_run(const float *src, float *dst, ptrdiff_t n, float w)
    {
        ptrdiff_t i;
        if (w == 1.0f) {
            if (src != dst)
                memcpy(dst, src, (size_t)n * sizeof(float));
        } else if (src == dst) {
            for (i = 0; i < n; ++i)
                dst[i] = dst[i] * w;
        } else {
            for (i = 0; i < n; ++i)
                dst[i] = src[i] * w;
        }
    }

    /* out[i] = ((rows[0][i] + rows[1][i]) + rows[2][i]) + ..., K rows
     * `stride` floats apart; in blocks of HN_SUM_BLOCK floats, so that `out`
     * stays in L1 while rows beyond the second are added. */
    #define HN_SUM_BLOCK 2048
    HN_CLONES static void hn_sum_rows_run(const float *rows, ptrdiff_t stride, ptrdiff_t k,
                                          float *restrict out, ptrdiff_t n)
    {
        ptrdiff_t b, i, q;
        if (k == 1) {
            memcpy(out, rows, (size_t)n * sizeof(float));
            return;
        }
        for (b = 0; b < n; b += HN_SUM_BLOCK) {
            const ptrdiff_t m = n - b < HN_SUM_BLOCK ? n - b : HN_SUM_BLOCK;
            const float *restrict r0 = rows + b;
            const float *restrict r1 = rows + stride + b;
            float *restrict o = out + b;
            for (i = 0; i < m; ++i)
                o[i] = r0[i] + r1[i];
            for (q = 2; q < k; ++q) {
                const float *restrict rq = rows + q * stride + b;
                for (i = 0; i < m; ++i)
                    o[i] = o[i] + rq[i];
            }
        }
    }
    """
    void hn_scale_run(const float *src, float *dst, Py_ssize_t n, float w) nogil
    void hn_sum_rows_run(const float *rows, Py_ssize_t stride, Py_ssize_t k, float *out,
                         Py_ssize_t n) nogil

# least floats a thread takes in the averaging's passes: below it waking one
# costs more than its share of the copy saves (16 KB, a few µs of traffic)
cdef Py_ssize_t _MIN_CHUNK = 4096
AVERAGE_MIN_CHUNK = _MIN_CHUNK
# floats per 64-byte cache line
cdef Py_ssize_t _LINE = 16


cdef inline int _average_nt(Py_ssize_t n, int nthreads) noexcept nogil:
    cdef Py_ssize_t most = n // _MIN_CHUNK
    if nthreads < 2 or most < 2:
        return 1
    return nthreads if nthreads < most else <int>most


cdef inline Py_ssize_t _chunk_start(const float *dst, Py_ssize_t n, int nt, Py_ssize_t chunk,
                                    int t) noexcept nogil:
    """Where thread ``t``'s chunk of an ``n``-float pass writing ``dst``
    starts: chunk boundaries fall on ``dst``'s cache lines (no two threads
    write one line); thread 0 also takes the floats before the first line."""
    cdef Py_ssize_t lead = (_LINE - ((<size_t>dst >> 2) & (_LINE - 1))) & (_LINE - 1)
    if t == 0:
        return 0
    if t == nt:
        return n
    return min(n, lead + t * chunk)


cdef inline Py_ssize_t _line_chunk(Py_ssize_t n, int nt) noexcept nogil:
    """Floats a thread takes of ``n`` over ``nt``: a whole number of lines."""
    cdef Py_ssize_t chunk = (n + nt - 1) // nt
    return (chunk + _LINE - 1) // _LINE * _LINE


cdef inline void _average_chunk(bint is_sum, const float *src, Py_ssize_t stride,
                                Py_ssize_t k, float w, float *dst,
                                Py_ssize_t n) noexcept nogil:
    if is_sum:
        hn_sum_rows_run(src, stride, k, dst, n)
    else:
        hn_scale_run(src, dst, n, w)


cdef void _average_pass(bint is_sum, const float *src, Py_ssize_t stride, Py_ssize_t k,
                        float w, float *dst, Py_ssize_t n, int nthreads) noexcept nogil:
    """One of the averaging's passes over ``n`` floats, on one thread or
    split into chunks on ``dst``'s cache lines: the sum of ``k`` rows
    ``stride`` apart from ``src`` (``is_sum``), else ``dst = src * w``."""
    cdef int nt = _average_nt(n, nthreads), t
    cdef Py_ssize_t chunk, lo, hi
    if nt == 1:
        _average_chunk(is_sum, src, stride, k, w, dst, n)
        return
    chunk = _line_chunk(n, nt)
    for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
        lo = _chunk_start(dst, n, nt, chunk, t)
        hi = _chunk_start(dst, n, nt, chunk, t + 1)
        if hi > lo:
            _average_chunk(is_sum, src + lo, stride, k, w, dst + lo, hi - lo)


def scale_into(const float[::1] src, float[::1] dst, float w, int nthreads):
    """``dst = src * w`` (float32 products; a copy when ``w == 1``), split
    over up to ``nthreads`` threads in contiguous chunks on ``dst``'s cache
    lines.  ``src`` may be ``dst`` (scaled in place).  Shapes: (n,), (n,)."""
    cdef Py_ssize_t n = src.shape[0]
    if dst.shape[0] != n:
        raise ValueError(f"scale_into: src has {n} floats, dst {dst.shape[0]}")
    if n == 0:
        return
    cdef const float *ps = &src[0]
    cdef float *pd = &dst[0]
    with nogil:
        _average_pass(False, ps, 0, 1, w, pd, n, nthreads)


def sum_rows(const float[:, ::1] rows, Py_ssize_t start, Py_ssize_t stop, float[::1] out,
             int nthreads):
    """``out = ((rows[0] + rows[1]) + rows[2]) + ...`` over columns
    ``[start, stop)`` (float32 adds in row order: the bits numpy's
    ``np.add`` chain gives), split over up to ``nthreads`` threads in
    contiguous chunks on ``out``'s cache lines.  Shapes: rows (K, N),
    out (stop - start,); ``out`` must not overlap ``rows``."""
    cdef Py_ssize_t k = rows.shape[0], n = stop - start
    if not (0 <= start <= stop <= rows.shape[1]) or out.shape[0] != n or k < 1:
        raise ValueError(f"sum_rows: columns [{start}, {stop}) of {k} rows of "
                         f"{rows.shape[1]} into {out.shape[0]} floats")
    if n == 0:
        return
    cdef const float *pr = &rows[0, start]
    cdef float *po = &out[0]
    with nogil:
        _average_pass(True, pr, rows.shape[1], k, 1.0, po, n, nthreads)
