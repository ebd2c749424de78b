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
