"""GEMM for the CPU device through the BLAS that SciPy ships.

The ``sgemm`` function pointer is taken at import time from
``scipy.linalg.cython_blas`` (so the build needs no SciPy headers) and called
without the GIL.  Parallelism is ours: batched products run one BLAS call per
batch entry across OpenMP threads, a single product is split into row or column
blocks, one per thread; the BLAS itself is kept to one thread by the device.
All arrays are row-major; the Fortran BLAS sees them as their transposes.
"""

from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_GetName
from cython.parallel cimport prange

include "_openmp.pxi"

ctypedef void (*sgemm_t)(char *transa, char *transb, int *m, int *n, int *k,
                         float *alpha, float *a, int *lda, float *b, int *ldb,
                         float *beta, float *c, int *ldc) noexcept nogil

cdef sgemm_t _sgemm = NULL


def _load_blas():
    global _sgemm
    from scipy.linalg import cython_blas
    cap = cython_blas.__pyx_capi__["sgemm"]
    _sgemm = <sgemm_t>PyCapsule_GetPointer(cap, PyCapsule_GetName(cap))


_load_blas()


cdef void gemm_rm(bint ta, bint tb, int m, int n, int k, float alpha,
                  const float *a, int lda, const float *b, int ldb,
                  float beta, float *c, int ldc) noexcept nogil:
    """Row-major ``C (m,n) = alpha op(A) op(B) + beta C``.

    Column-major BLAS computes ``C^T = op(B)^T op(A)^T``: the first operand is
    B's memory, the second A's.
    """
    cdef char tra = b'T' if tb else b'N'
    cdef char trb = b'T' if ta else b'N'
    if m == 0 or n == 0:
        return
    _sgemm(&tra, &trb, &n, &m, &k, &alpha, <float *>b, &ldb, <float *>a, &lda,
           &beta, c, &ldc)


def gemm(float[:, :, ::1] a, float[:, :, ::1] b, float[:, :, ::1] c,
         bint trans_a, bint trans_b, float alpha, float beta, int nthreads):
    """``c[i] = alpha op(a[i]) op(b[i]) + beta c[i]`` over the batch.

    a : (Ba, M, K) or (Ba, K, M) when trans_a; Ba is 1 (shared) or B.
    b : (Bb, K, N) or (Bb, N, K) when trans_b; Bb is 1 (shared) or B.
    c : (B, M, N).

    Returns the number of contiguous row blocks of ``c`` the threads wrote,
    one per thread (1: the calling thread wrote all of it), or 0 when the
    threads split it otherwise (by batch entry or by column).
    """
    cdef int nb = c.shape[0], m = c.shape[1], n = c.shape[2]
    cdef int k = a.shape[1] if trans_a else a.shape[2]
    cdef int lda = a.shape[2], ldb = b.shape[2]
    cdef Py_ssize_t sa = 0 if a.shape[0] == 1 else a.shape[1] * a.shape[2]
    cdef Py_ssize_t sb = 0 if b.shape[0] == 1 else b.shape[1] * b.shape[2]
    cdef Py_ssize_t sc = m * n
    cdef float *pa = &a[0, 0, 0]
    cdef float *pb = &b[0, 0, 0]
    cdef float *pc = &c[0, 0, 0]
    cdef int i, t, lo, hi, blk
    if nb == 0 or m == 0 or n == 0:
        return 0
    # threads by the work (multiply-adds): see hn_threads
    nthreads = min(hn_threads(nthreads, <double>nb * m * n * k, HN_GEMM_UNIT), nb if nb > 1 else nthreads)
    if nb > 1 and nthreads > 1:
        for i in prange(nb, nogil=True, num_threads=nthreads, schedule="static"):
            gemm_rm(trans_a, trans_b, m, n, k, alpha, pa + i * sa, lda,
                    pb + i * sb, ldb, beta, pc + i * sc, n)
        return 0
    if nb > 1 or nthreads == 1:
        with nogil:
            for i in range(nb):
                gemm_rm(trans_a, trans_b, m, n, k, alpha, pa + i * sa, lda,
                        pb + i * sb, ldb, beta, pc + i * sc, n)
        return 1
    # One product, several threads: split the longer side of C into blocks.
    if m >= n:
        blk = (m + nthreads - 1) // nthreads
        for t in prange(nthreads, nogil=True, num_threads=nthreads, schedule="static", chunksize=1):
            lo = t * blk
            hi = min(m, lo + blk)
            if hi > lo:
                gemm_rm(trans_a, trans_b, hi - lo, n, k, alpha,
                        pa + (lo if trans_a else lo * lda), lda, pb, ldb,
                        beta, pc + lo * n, n)
        return nthreads
    else:
        blk = (n + nthreads - 1) // nthreads
        for t in prange(nthreads, nogil=True, num_threads=nthreads, schedule="static", chunksize=1):
            lo = t * blk
            hi = min(n, lo + blk)
            if hi > lo:
                gemm_rm(trans_a, trans_b, m, hi - lo, k, alpha, pa, lda,
                        pb + (lo * ldb if trans_b else lo), ldb,
                        beta, pc + lo, n)
        return 0


def gemm_batch_sum(float[:, :, ::1] a, float[:, :, ::1] b, float[:, ::1] c,
                   float[:, :, ::1] partial, bint trans_a, bint trans_b,
                   float alpha, float beta, int nthreads):
    """``c = alpha * sum_i op(a[i]) op(b[i]) + beta c``.

    Each thread sums its share of the batch into its own slice of
    ``partial (nthreads, M, N)``; the slices are then added into ``c``.
    """
    cdef int nb = max(a.shape[0], b.shape[0]), m = c.shape[0], n = c.shape[1]
    cdef int k = a.shape[1] if trans_a else a.shape[2]
    cdef int lda = a.shape[2], ldb = b.shape[2]
    cdef Py_ssize_t sa = 0 if a.shape[0] == 1 else a.shape[1] * a.shape[2]
    cdef Py_ssize_t sb = 0 if b.shape[0] == 1 else b.shape[1] * b.shape[2]
    cdef float *pa = &a[0, 0, 0]
    cdef float *pb = &b[0, 0, 0]
    cdef float *pc = &c[0, 0]
    cdef float *pp = &partial[0, 0, 0]
    cdef int nt = min(hn_threads(nthreads, <double>nb * m * n * k, HN_GEMM_UNIT), nb), t, i, lo, hi, blk
    cdef Py_ssize_t j, mn = m * n
    cdef float acc
    if m == 0 or n == 0:
        return
    if nb == 0:
        for j in range(mn):
            pc[j] = beta * pc[j]
        return
    if nt <= 1:
        with nogil:
            for i in range(nb):
                gemm_rm(trans_a, trans_b, m, n, k, alpha, pa + i * sa, lda,
                        pb + i * sb, ldb, beta if i == 0 else 1.0, pc, n)
        return
    blk = (nb + nt - 1) // nt
    for t in prange(nt, nogil=True, num_threads=nt, schedule="static", chunksize=1):
        lo = t * blk
        hi = min(nb, lo + blk)
        for i in range(lo, hi):
            gemm_rm(trans_a, trans_b, m, n, k, alpha, pa + i * sa, lda,
                    pb + i * sb, ldb, 0.0 if i == lo else 1.0, pp + t * mn, n)
    for j in prange(mn, nogil=True, num_threads=hn_threads(nthreads, <double>mn * nt, HN_ELEMENT_UNIT),
                    schedule="static"):
        acc = beta * pc[j] if beta != 0.0 else 0.0
        for t in range(nt):
            if t * blk < nb:
                acc = acc + pp[t * mn + j]
        pc[j] = acc


cdef extern from "<dlfcn.h>" nogil:
    ctypedef struct Dl_info:
        const char *dli_fname
        void *dli_fbase
        const char *dli_sname
        void *dli_saddr
    int dladdr(const void *addr, Dl_info *info)


def blas_library_path():
    """File of the shared library whose ``sgemm`` we call (None if unknown)."""
    cdef Dl_info info
    if dladdr(<const void *>_sgemm, &info) and info.dli_fname != NULL:
        return info.dli_fname.decode()
    return None


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(HN_OPENMP)


def work_units():
    """The work one woken thread costs, by kind of loop (see ``hn_threads``
    in ``_openmp.pxi``): ``{"gemm", "conv", "element", "heavy", "copy"}``."""
    return {"gemm": HN_GEMM_UNIT, "conv": HN_CONV_UNIT, "element": HN_ELEMENT_UNIT,
            "heavy": HN_HEAVY_UNIT, "copy": HN_COPY_UNIT}


def threads_for(int nthreads, double work, double unit):
    """Threads a loop of ``work`` wakes out of ``nthreads`` (``hn_threads``)."""
    return hn_threads(nthreads, work, unit)


def openmp_max_threads():
    """OpenMP's default thread count (1 without OpenMP)."""
    return omp_get_max_threads()
