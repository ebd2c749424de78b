# Shared by every kernel module: OpenMP when the build has it, serial stubs otherwise.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define HN_OPENMP 1
    #else
    #define HN_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    static int omp_get_thread_num(void) { return 0; }
    #endif
    """
    int HN_OPENMP
    int omp_get_max_threads() nogil
    int omp_get_thread_num() nogil


from libc.math cimport sqrt as _hn_sqrt

# The work one woken thread costs (see hn_threads), by kind of loop: multiply-adds
# of a GEMM or a fused convolution; elements of a memory-bound loop, of one
# spending tens of cycles an element (exp, log), of an im2col/col2im/pooling copy.
# Chosen with benchmarks/bench_cpu_threads.py so that all threads train no slower
# than one on a small host and about as fast on a many-core one, where waking every
# thread for small loops had made steps several times slower (docs/performance.md,
# "CPU threads").
cdef double HN_GEMM_UNIT = 1 << 22
cdef double HN_CONV_UNIT = 1 << 20
cdef double HN_ELEMENT_UNIT = 1 << 16
cdef double HN_HEAVY_UNIT = 1 << 10
cdef double HN_COPY_UNIT = 1 << 14


cdef inline int hn_threads(int nthreads, double work, double unit) noexcept nogil:
    """Threads worth waking for a parallel loop of ``work`` (multiply-adds,
    elements...), at most ``nthreads``.

    Every woken thread costs a wake-up and a share of the barrier, about
    ``unit`` of work's time: ``work / t + unit * t`` is least at
    ``t = sqrt(work / unit)``, so threads grow with the square root of the
    work, not in proportion.  On a many-core virtual machine these costs
    reach tens of microseconds, enough to make a small step several times
    slower with every thread than with one (docs/performance.md, "CPU threads")."""
    cdef double t = _hn_sqrt(work / unit) + 0.5
    if t >= nthreads:
        return nthreads if nthreads > 1 else 1
    return 1 if t < 2.0 else <int>t
