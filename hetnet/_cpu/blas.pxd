cdef void gemm_rm(bint ta, bint tb, int m, int n, int k, float alpha,
                  const float *a, int lda, const float *b, int ldb,
                  float beta, float *c, int ldc) noexcept nogil
