# The optimiser updates' inner loops, in C: one contiguous block of each flat
# buffer, run by one thread (elementwise.pyx splits the buffers).  They are
# plain loops that the compiler vectorises (sqrt included: the package builds
# with -fno-math-errno, without which each sqrtf is a scalar call guarded for
# errno); with GCC on x86-64 Linux each is also built for AVX2 and the
# loader picks that version where the CPU has it (target_clones): Adam's and
# RMSProp's square root and division a element are what their updates cost
# beyond SGD's, and AVX2 does them eight at a time instead of SSE2's four.
#
# Optimizer states whose gradient stays 0 (a dead ReLU unit) decay
# geometrically into subnormals, and arithmetic on them is up to 100x slower
# on Intel CPUs (a batch-1 MLP's update took 0.5 ms a step on the 16-core
# Xeon host instead of microseconds), so states below a floor (``*floor``,
# from ``_state_floor``) are set to 0.
cdef extern from *:
    """
    #include <math.h>
    #include <stddef.h>
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define HN_CLONES __attribute__((target_clones("avx2", "default")))
    #else
    #define HN_CLONES
    #endif

    HN_CLONES static void hn_sgd_run(float *restrict w, const float *restrict g,
            float *restrict v, ptrdiff_t n, float lr, float mom, float wd, int nesterov,
            float scale, float floor)
    {
        ptrdiff_t i;
        if (v == NULL) {
            for (i = 0; i < n; ++i)
                w[i] = w[i] - lr * (scale * g[i] + wd * w[i]);
        } else if (nesterov) {
            for (i = 0; i < n; ++i) {
                const float gi = scale * g[i] + wd * w[i];
                float vi = mom * v[i] + gi;
                vi = fabsf(vi) >= floor ? vi : 0.0f;
                v[i] = vi;
                w[i] = w[i] - lr * (gi + mom * vi);
            }
        } else {
            for (i = 0; i < n; ++i) {
                const float gi = scale * g[i] + wd * w[i];
                float vi = mom * v[i] + gi;
                vi = fabsf(vi) >= floor ? vi : 0.0f;
                v[i] = vi;
                w[i] = w[i] - lr * vi;
            }
        }
    }

    /* w' = decay w; g' = scale g + l2 w'; m = b1 m + (1 - b1) g';
     * v = b2 v + (1 - b2) g'^2; w = w' - step m / (sqrt(v) inv_c2s + eps) */
    HN_CLONES static void hn_adam_run(float *restrict w, const float *restrict g,
            float *restrict m, float *restrict v, ptrdiff_t n, float b1, float b2,
            float step, float inv_c2s, float eps, float l2, float decay, float scale,
            float mfloor, float vfloor)
    {
        const float a1 = 1.0f - b1, a2 = 1.0f - b2;
        for (ptrdiff_t i = 0; i < n; ++i) {
            const float wi = w[i] * decay;
            const float gi = scale * g[i] + l2 * wi;
            float mi = b1 * m[i] + a1 * gi;
            float vi = b2 * v[i] + a2 * gi * gi;
            mi = fabsf(mi) >= mfloor ? mi : 0.0f;
            vi = vi >= vfloor ? vi : 0.0f;
            m[i] = mi;
            v[i] = vi;
            w[i] = wi - step * mi / (sqrtf(vi) * inv_c2s + eps);
        }
    }

    /* g' = scale g + wd w; s = alpha s + (1 - alpha) g'^2; d = g' / (sqrt(s) + eps);
     * with buf: buf = mom buf + d, w -= lr buf; else w -= lr d */
    HN_CLONES static void hn_rmsprop_run(float *restrict w, const float *restrict g,
            float *restrict sq, float *restrict buf, ptrdiff_t n, float lr, float alpha,
            float eps, float mom, float wd, float scale, float sfloor, float bfloor)
    {
        const float a1 = 1.0f - alpha;
        ptrdiff_t i;
        if (buf == NULL) {
            for (i = 0; i < n; ++i) {
                const float gi = scale * g[i] + wd * w[i];
                float si = alpha * sq[i] + a1 * gi * gi;
                si = si >= sfloor ? si : 0.0f;
                sq[i] = si;
                w[i] = w[i] - lr * gi / (sqrtf(si) + eps);
            }
        } else {
            for (i = 0; i < n; ++i) {
                const float gi = scale * g[i] + wd * w[i];
                float si = alpha * sq[i] + a1 * gi * gi;
                si = si >= sfloor ? si : 0.0f;
                sq[i] = si;
                float bi = mom * buf[i] + gi / (sqrtf(si) + eps);
                bi = fabsf(bi) >= bfloor ? bi : 0.0f;
                buf[i] = bi;
                w[i] = w[i] - lr * bi;
            }
        }
    }
    """
    void hn_sgd_run(float *w, const float *g, float *v, Py_ssize_t n, float lr, float mom,
                    float wd, int nesterov, float scale, float floor) nogil
    void hn_adam_run(float *w, const float *g, float *m, float *v, Py_ssize_t n, float b1,
                     float b2, float step, float inv_c2s, float eps, float l2, float decay,
                     float scale, float mfloor, float vfloor) nogil
    void hn_rmsprop_run(float *w, const float *g, float *sq, float *buf, Py_ssize_t n,
                        float lr, float alpha, float eps, float mom, float wd, float scale,
                        float sfloor, float bfloor) nogil
