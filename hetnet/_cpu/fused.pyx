"""A whole chain's training step per tile of samples, for the CPU device.

The layer-by-layer CPU step runs each layer over the whole batch: every
activation, unrolled patch matrix and gradient of the batch is written to
memory and read back by the next layer.  Here one OpenMP thread takes a
tile of ``T`` samples and runs every unit's forward, the softmax
cross-entropy and every unit's backward on it, its activations and patch
matrices in its own workspace (sized by the caller to stay in its core's
L2), adding the parameter gradients into a flat buffer of its own; the
threads' buffers are summed at the end.  The GEMMs are single-threaded
BLAS calls from several threads at once (as :func:`hetnet._cpu.blas.gemm`'s
batched products).

The chain comes as rows of ints (:data:`D` per unit, fields named below),
built from :func:`hetnet.runtime.fused.describe_chain`'s units by
:mod:`hetnet.runtime.fused_cpu`; nothing here knows a network.

Layouts inside a tile: a convolution's or pool's activations are
channel-major, ``(C, nt, H*W)`` (so one GEMM covers the tile: ``W (F, C*KH*KW)``
times the tile's patch matrix ``(C*KH*KW, nt*HO*WO)``), a dense unit's are
rows ``(nt, features)``; a dense unit after a spatial one transposes its
input (Flatten's NCHW order) and its input gradient back.
"""

from cython.parallel cimport prange
from libc.string cimport memset, memcpy
from libc.math cimport expf, logf

from hetnet._cpu.blas cimport gemm_rm

import numpy as np

include "_openmp.pxi"
include "_act.pxi"

# unit kinds
cdef enum:
    K_CONV = 0
    K_POOL = 1
    K_DENSE = 2

# fields of a unit's descriptor row
cdef enum:
    F_KIND = 0
    F_C = 1          # input channels (dense: input features)
    F_H = 2
    F_W = 3
    F_F = 4          # output channels (pool: C; dense: output features)
    F_KH = 5
    F_KW = 6
    F_SH = 7
    F_SW = 8
    F_PH = 9
    F_PW = 10
    F_CH = 11        # the convolution's output before the pool (pool: H)
    F_CW = 12
    F_QH = 13        # pool window and stride (1 when none)
    F_QW = 14
    F_QSH = 15
    F_QSW = 16
    F_HO = 17        # output after the pool
    F_WO = 18
    F_ACT = 19
    F_POOLED = 20    # a pool follows (conv: merged max pool; pool: 1)
    F_AVG = 21       # the pool averages
    F_WOFF = 22      # the weight's offset in the flat parameters
    F_BOFF = 23      # the bias's, -1 without one
    F_TRANS = 24     # dense after a spatial unit: its input is transposed in
    F_PREV_C = 25    # ... from the previous unit's (PREV_C, nt, in / PREV_C)
    F_IN = 26        # workspace offsets (floats, per thread) of: the input,
    F_OUT = 27       # the output,
    F_COLS = 28      # the patch matrix,
    F_Y = 29         # the convolution's activated output before its pool,
    F_GOUT = 30      # the gradient at the output,
    F_GIN = 31       # the gradient at the input (-1: none, the first unit),
    F_ARG = 32       # the pool's arg-max offsets (int workspace)
    F_PREV_OUT = 33  # the previous unit's output and gradient (F_TRANS)
    F_PREV_GOUT = 34
    F_DCOLS = 35     # scratch: the patch matrix's gradient,
    F_DY = 36        # the convolution's gradient before its pool
    D = 40

#: floats a descriptor row holds
UNIT_FIELDS = D
FIELDS = {"kind": F_KIND, "C": F_C, "H": F_H, "W": F_W, "F": F_F, "KH": F_KH, "KW": F_KW,
          "SH": F_SH, "SW": F_SW, "PH": F_PH, "PW": F_PW, "CH": F_CH, "CW": F_CW,
          "QH": F_QH, "QW": F_QW, "QSH": F_QSH, "QSW": F_QSW, "HO": F_HO, "WO": F_WO,
          "ACT": F_ACT, "pooled": F_POOLED, "avg": F_AVG, "w_off": F_WOFF, "b_off": F_BOFF,
          "trans": F_TRANS, "prev_c": F_PREV_C, "in": F_IN, "out": F_OUT, "cols": F_COLS,
          "y": F_Y, "gout": F_GOUT, "gin": F_GIN, "arg": F_ARG, "prev_out": F_PREV_OUT,
          "prev_gout": F_PREV_GOUT, "dcols": F_DCOLS, "dy": F_DY}
KINDS = {"conv": K_CONV, "pool": K_POOL, "dense": K_DENSE}


cdef extern from *:
    """
    /* d[j] += x[j] over distinct memory: restrict lets the loop vectorise */
    static inline void hn_add_run(float *restrict d, const float *restrict x, Py_ssize_t n) {
        for (Py_ssize_t j = 0; j < n; j++) d[j] += x[j];
    }
    /* d[j] = x[j]: the short runs of a patch row, where a memcpy call costs
       more than the copy */
    static inline void hn_copy_run(float *restrict d, const float *restrict x, Py_ssize_t n) {
        for (Py_ssize_t j = 0; j < n; j++) d[j] = x[j];
    }
    /* im2col / col2im over a tile: x (C, nt, H*W) <-> cols (C*KH*KW, nt*CH*CW).
       A patch row's run is short (10 floats for LeNet's second convolution,
       28 for its first), so a loop over it is mostly loop control.  Where the
       CPU has AVX-512 the versions below take stride-1 rows (col2im: rows of
       at most 16 floats); these plain loops take the rest. */
    #define HN_IM2COL_ARGS const float *restrict x, float *restrict cols, int nt, int C,  \
        int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int CH, int CW
    #define HN_COL2IM_ARGS const float *restrict cols, float *restrict dx, int nt, int C, \
        int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int CH, int CW
    static void hn_im2col_plain(HN_IM2COL_ARGS)
    {
        const ptrdiff_t P = (ptrdiff_t)CH * CW, ntP = (ptrdiff_t)nt * P;
        for (int c = 0; c < C; c++)
        for (int kh = 0; kh < KH; kh++)
        for (int kw = 0; kw < KW; kw++)
        for (int s = 0; s < nt; s++) {
            const float *src = x + ((ptrdiff_t)c * nt + s) * H * W;
            float *dst = cols + (((ptrdiff_t)c * KH + kh) * KW + kw) * ntP + s * P;
            /* the columns ow with 0 <= ow*SW - PW + kw < W */
            int lo = 0, hi = CW;
            if (SW == 1) {
                lo = PW - kw > 0 ? PW - kw : 0;
                hi = W + PW - kw < CW ? W + PW - kw : CW;
                if (hi < lo) hi = lo;
            }
            for (int oh = 0; oh < CH; oh++) {
                const int ih = oh * SH - PH + kh;
                float *d = dst + (ptrdiff_t)oh * CW;
                if (ih < 0 || ih >= H) {
                    for (int ow = 0; ow < CW; ow++) d[ow] = 0.0f;
                    continue;
                }
                const float *r = src + (ptrdiff_t)ih * W;
                if (SW == 1) {
                    for (int ow = 0; ow < lo; ow++) d[ow] = 0.0f;
                    if (hi > lo) hn_copy_run(d + lo, r + lo - PW + kw, hi - lo);
                    for (int ow = hi; ow < CW; ow++) d[ow] = 0.0f;
                    continue;
                }
                for (int ow = 0; ow < CW; ow++) {
                    const int iw = ow * SW - PW + kw;
                    d[ow] = (iw >= 0 && iw < W) ? r[iw] : 0.0f;
                }
            }
        }
    }
    static void hn_col2im_plain(HN_COL2IM_ARGS)
    {
        const ptrdiff_t P = (ptrdiff_t)CH * CW, ntP = (ptrdiff_t)nt * P;
        memset(dx, 0, (size_t)C * nt * H * W * sizeof(float));
        for (int c = 0; c < C; c++)
        for (int kh = 0; kh < KH; kh++)
        for (int kw = 0; kw < KW; kw++)
        for (int s = 0; s < nt; s++) {
            float *dst = dx + ((ptrdiff_t)c * nt + s) * H * W;
            const float *src = cols + (((ptrdiff_t)c * KH + kh) * KW + kw) * ntP + s * P;
            const int lo = PW - kw > 0 ? PW - kw : 0;
            const int hi = W + PW - kw < CW ? W + PW - kw : CW;
            for (int oh = 0; oh < CH; oh++) {
                const int ih = oh * SH - PH + kh;
                if (ih < 0 || ih >= H) continue;
                if (SW == 1) {
                    if (hi > lo)
                        hn_add_run(dst + (ptrdiff_t)ih * W - PW + kw + lo, src + oh * CW + lo,
                                   hi - lo);
                    continue;
                }
                for (int ow = 0; ow < CW; ow++) {
                    const int iw = ow * SW - PW + kw;
                    if (iw >= 0 && iw < W) dst[(ptrdiff_t)ih * W + iw] += src[oh * CW + ow];
                }
            }
        }
    }
    #if defined(__GNUC__) && defined(__x86_64__)
    #include <immintrin.h>
    #define HN_RUN512 1
    #define HN_MASK(r) ((r) >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (r)) - 1u))
    /* With AVX-512 and stride 1 along the rows: im2col makes each patch row
       16 columns at a time with one masked load (the lanes off the image
       read as 0) and one masked store; for rows of at most 16 floats,
       col2im makes each input row in a register, adding the KH*KW patch
       rows that land on it (masked loads shifted into place), and stores it
       once: no zeroing pass and no read-modify-write of the gradient. */
    __attribute__((target("avx512f"))) static void hn_im2col_512(HN_IM2COL_ARGS)
    {
        const ptrdiff_t P = (ptrdiff_t)CH * CW, ntP = (ptrdiff_t)nt * P;
        for (int c = 0; c < C; c++)
        for (int kh = 0; kh < KH; kh++)
        for (int kw = 0; kw < KW; kw++) {
            /* lanes ow with 0 <= ow - PW + kw < W */
            const int lo = PW - kw > 0 ? PW - kw : 0;
            const int hi = W + PW - kw < CW ? W + PW - kw : CW;
            for (int j0 = 0; j0 < CW; j0 += 16) {      /* 16 columns at a time */
                const int a = lo - j0 > 0 ? lo - j0 : 0, b = hi - j0 > 0 ? hi - j0 : 0;
                const __mmask16 valid = b > a ? (__mmask16)(HN_MASK(b) & ~HN_MASK(a)) : 0;
                const __mmask16 out = HN_MASK(CW - j0);
                for (int s = 0; s < nt; s++) {
                    const float *src = x + ((ptrdiff_t)c * nt + s) * H * W - PW + kw + j0;
                    float *dst = cols + (((ptrdiff_t)c * KH + kh) * KW + kw) * ntP + s * P + j0;
                    for (int oh = 0; oh < CH; oh++) {
                        const int ih = oh * SH - PH + kh;
                        const __m512 v = (ih < 0 || ih >= H) ? _mm512_setzero_ps()
                            : _mm512_maskz_loadu_ps(valid, src + (ptrdiff_t)ih * W);
                        _mm512_mask_storeu_ps(dst + (ptrdiff_t)oh * CW, out, v);
                    }
                }
            }
        }
    }
    __attribute__((target("avx512f"))) static void hn_col2im_512(HN_COL2IM_ARGS)
    {
        const ptrdiff_t P = (ptrdiff_t)CH * CW, ntP = (ptrdiff_t)nt * P;
        const __mmask16 row = HN_MASK(W);
        for (int c = 0; c < C; c++)
        for (int s = 0; s < nt; s++) {
            float *dst = dx + ((ptrdiff_t)c * nt + s) * H * W;
            for (int ih = 0; ih < H; ih++) {
                __m512 acc = _mm512_setzero_ps();
                for (int kh = 0; kh < KH; kh++) {
                    const int t = ih + PH - kh;         /* = oh * SH */
                    if (t < 0 || t % SH) continue;
                    const int oh = t / SH;
                    if (oh >= CH) continue;
                    for (int kw = 0; kw < KW; kw++) {
                        /* lane iw takes patch column ow = iw + PW - kw, 0 <= ow < CW */
                        const int lo = kw - PW > 0 ? kw - PW : 0;
                        const int hi = kw - PW + CW < W ? kw - PW + CW : W;
                        if (hi <= lo) continue;
                        const __mmask16 m = (__mmask16)(HN_MASK(hi) & ~HN_MASK(lo));
                        const float *src = cols + (((ptrdiff_t)c * KH + kh) * KW + kw) * ntP
                                           + s * P + (ptrdiff_t)oh * CW + PW - kw;
                        acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, src));
                    }
                }
                _mm512_mask_storeu_ps(dst + (ptrdiff_t)ih * W, row, acc);
            }
        }
    }
    static int hn_plain_only = 0;   /* set by use_avx512(False): the tests' other path */
    static int hn_avx512(void) {
        static int has = -1;
        if (has < 0) {
            __builtin_cpu_init();
            has = __builtin_cpu_supports("avx512f") != 0;
        }
        return has && !hn_plain_only;
    }
    static int hn_set_avx512(int on) {
        const int before = hn_avx512();
        hn_plain_only = !on;
        return before;
    }
    #else
    #define HN_RUN512 0
    static int hn_set_avx512(int on) { (void)on; return 0; }
    #endif
    static void hn_im2col(HN_IM2COL_ARGS) {
    #if HN_RUN512
        if (SW == 1 && hn_avx512()) {
            hn_im2col_512(x, cols, nt, C, H, W, KH, KW, SH, SW, PH, PW, CH, CW);
            return;
        }
    #endif
        hn_im2col_plain(x, cols, nt, C, H, W, KH, KW, SH, SW, PH, PW, CH, CW);
    }
    static void hn_col2im(HN_COL2IM_ARGS) {
    #if HN_RUN512
        if (SW == 1 && W <= 16 && CW <= 16 && hn_avx512()) {
            hn_col2im_512(cols, dx, nt, C, H, W, KH, KW, SH, SW, PH, PW, CH, CW);
            return;
        }
    #endif
        hn_col2im_plain(cols, dx, nt, C, H, W, KH, KW, SH, SW, PH, PW, CH, CW);
    }
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define HN_FUSED_CLONES __attribute__((target_clones("avx2", "default")))
    #else
    #define HN_FUSED_CLONES
    #endif
    /* 2x2 max pool at stride 2 of planes (H, W) -> (HO, WO): selects, not
       branches (a branch on the data is mispredicted half the time), so the
       compiler vectorises each output row (stride-2 loads as permutes; AVX2
       where the CPU has it).  The first maximum in row-major window order
       wins, a NaN first value stays, as the general loop.  arg (the
       arg-max's flat offset in its plane) is skipped when NULL: inference
       and population passes have no backward. */
    HN_FUSED_CLONES static void hn_max2x2_plain(const float *restrict x, float *restrict y,
            int *restrict arg, ptrdiff_t planes, int H, int W, int HO, int WO)
    {
        for (ptrdiff_t p = 0; p < planes; p++)
            for (int oh = 0; oh < HO; oh++) {
                const float *r0 = x + (p * H + 2 * oh) * W, *r1 = r0 + W;
                float *yr = y + (p * HO + oh) * WO;
                if (arg == NULL) {
                    for (int ow = 0; ow < WO; ow++) {
                        float m = r0[2 * ow], v;
                        v = r0[2 * ow + 1]; m = v > m ? v : m;
                        v = r1[2 * ow]; m = v > m ? v : m;
                        v = r1[2 * ow + 1]; m = v > m ? v : m;
                        yr[ow] = m;
                    }
                    continue;
                }
                int *ar = arg + (p * HO + oh) * WO;
                const int base = 2 * oh * W;
                for (int ow = 0; ow < WO; ow++) {
                    float m = r0[2 * ow], v;
                    int at = base + 2 * ow;
                    v = r0[2 * ow + 1]; at = v > m ? base + 2 * ow + 1 : at; m = v > m ? v : m;
                    v = r1[2 * ow]; at = v > m ? base + W + 2 * ow : at; m = v > m ? v : m;
                    v = r1[2 * ow + 1]; at = v > m ? base + W + 2 * ow + 1 : at;
                    m = v > m ? v : m;
                    yr[ow] = m;
                    ar[ow] = at;
                }
            }
    }
    #if HN_RUN512
    /* The same with AVX-512, 16 outputs of a row at a time: the row pair's
       32 inputs loaded (masked) and split into even and odd columns by
       permutes, then the same compares in the same order (ordered >, so a
       NaN first value stays), the arg-max offsets blended alongside. */
    __attribute__((target("avx512f"))) static void hn_max2x2_512(const float *x, float *y,
            int *arg, ptrdiff_t planes, int H, int W, int HO, int WO)
    {
        const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,
                                               26, 28, 30);
        const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
        for (ptrdiff_t p = 0; p < planes; p++)
            for (int oh = 0; oh < HO; oh++) {
                const float *r0 = x + (p * H + 2 * oh) * W, *r1 = r0 + W;
                float *yr = y + (p * HO + oh) * WO;
                const int base = 2 * oh * W;
                for (int o = 0; o < WO; o += 16) {
                    const int n = WO - o < 16 ? WO - o : 16;
                    const __mmask16 lo = HN_MASK(2 * n < 16 ? 2 * n : 16);
                    const __mmask16 hi = HN_MASK(2 * n > 16 ? 2 * n - 16 : 0);
                    const __m512 a0 = _mm512_maskz_loadu_ps(lo, r0 + 2 * o);
                    const __m512 a1 = _mm512_maskz_loadu_ps(hi, r0 + 2 * o + 16);
                    const __m512 b0 = _mm512_maskz_loadu_ps(lo, r1 + 2 * o);
                    const __m512 b1 = _mm512_maskz_loadu_ps(hi, r1 + 2 * o + 16);
                    const __m512 v1 = _mm512_permutex2var_ps(a0, odd, a1);
                    const __m512 v2 = _mm512_permutex2var_ps(b0, even, b1);
                    const __m512 v3 = _mm512_permutex2var_ps(b0, odd, b1);
                    __m512 m = _mm512_permutex2var_ps(a0, even, a1);
                    const __mmask16 t1 = _mm512_cmp_ps_mask(v1, m, _CMP_GT_OQ);
                    m = _mm512_mask_mov_ps(m, t1, v1);
                    const __mmask16 t2 = _mm512_cmp_ps_mask(v2, m, _CMP_GT_OQ);
                    m = _mm512_mask_mov_ps(m, t2, v2);
                    const __mmask16 t3 = _mm512_cmp_ps_mask(v3, m, _CMP_GT_OQ);
                    m = _mm512_mask_mov_ps(m, t3, v3);
                    _mm512_mask_storeu_ps(yr + o, HN_MASK(n), m);
                    if (arg != NULL) {
                        const __m512i col = _mm512_add_epi32(_mm512_set1_epi32(base + 2 * o),
                                                             even);
                        __m512i at = col;
                        at = _mm512_mask_add_epi32(at, t1, col, _mm512_set1_epi32(1));
                        at = _mm512_mask_add_epi32(at, t2, col, _mm512_set1_epi32(W));
                        at = _mm512_mask_add_epi32(at, t3, col, _mm512_set1_epi32(W + 1));
                        _mm512_mask_storeu_epi32(arg + (p * HO + oh) * WO + o, HN_MASK(n), at);
                    }
                }
            }
    }
    /* A convolution's weight gradient C (M, L) += A (M, N) B (L, N)^T (the
       output gradient times the patch matrix, transposed), all row-major,
       as dot products along N in 4x4 blocks of accumulators.  N (the
       tile's output positions) is a few hundred for LeNet's second
       convolution, so reducing each block's 16 accumulators to 16 sums is a
       large share of the work: hn_sum16 does the 16 at once (45 shuffles
       and adds, not 16 reductions of 8 steps each), where BLAS's general
       kernel packs B first.  Blocks past M or L re-read the last row and
       are not stored. */
    __attribute__((target("avx512f"))) static inline __m512 hn_sum16(const __m512 *v)
    {
        /* lane q of the result: the sum of v[q]'s lanes */
        __m512 t[8], u[4];
        for (int i = 0; i < 8; i++)     /* 128-bit block: pair sums of v[2i], v[2i+1] */
            t[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                                 _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
        for (int j = 0; j < 4; j++)     /* 128-bit block: v[4j .. 4j+3]'s block sums */
            u[j] = _mm512_add_ps(
                _mm512_shuffle_ps(t[2 * j], t[2 * j + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                _mm512_shuffle_ps(t[2 * j], t[2 * j + 1], _MM_SHUFFLE(3, 2, 3, 2)));
        const __m512 x0 = _mm512_add_ps(
            _mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(1, 0, 1, 0)),
            _mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(3, 2, 3, 2)));
        const __m512 x1 = _mm512_add_ps(
            _mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(1, 0, 1, 0)),
            _mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(3, 2, 3, 2)));
        return _mm512_add_ps(_mm512_shuffle_f32x4(x0, x1, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(x0, x1, _MM_SHUFFLE(3, 1, 3, 1)));
    }
    __attribute__((target("avx512f,fma"))) static void hn_wgrad_512(int M, int L, int N,
            const float *A, ptrdiff_t lda, const float *B, ptrdiff_t ldb, float *C,
            ptrdiff_t ldc)
    {
        for (int l0 = 0; l0 < L; l0 += 4) {      /* B's 4 rows stay in L1 over A's rows */
            const float *b[4];
            for (int j = 0; j < 4; j++)
                b[j] = B + (ptrdiff_t)(l0 + j < L ? l0 + j : L - 1) * ldb;
            const int nl = L - l0 < 4 ? L - l0 : 4;
            const __mmask16 cm = (__mmask16)((1u << nl) - 1u);
            for (int m0 = 0; m0 < M; m0 += 4) {
                const float *a[4];
                for (int i = 0; i < 4; i++)
                    a[i] = A + (ptrdiff_t)(m0 + i < M ? m0 + i : M - 1) * lda;
                __m512 acc[16];
                for (int q = 0; q < 16; q++) acc[q] = _mm512_setzero_ps();
                for (int n0 = 0; n0 < N; n0 += 16) {
                    const __mmask16 mk = HN_MASK(N - n0);
                    __m512 bv[4];
                    for (int j = 0; j < 4; j++) bv[j] = _mm512_maskz_loadu_ps(mk, b[j] + n0);
                    for (int i = 0; i < 4; i++) {
                        const __m512 av = _mm512_maskz_loadu_ps(mk, a[i] + n0);
                        for (int j = 0; j < 4; j++)
                            acc[4 * i + j] = _mm512_fmadd_ps(av, bv[j], acc[4 * i + j]);
                    }
                }
                const __m512 sums = hn_sum16(acc);      /* lane 4i+j: C (m0+i, l0+j) */
                for (int i = 0; i < 4 && m0 + i < M; i++) {
                    float *c = C + (ptrdiff_t)(m0 + i) * ldc + l0;
                    const __m512 si = _mm512_maskz_compress_ps((__mmask16)(0xFu << (4 * i)),
                                                               sums);
                    _mm512_mask_storeu_ps(c, cm, _mm512_add_ps(_mm512_maskz_loadu_ps(cm, c),
                                                               si));
                }
            }
        }
    }
    /* Direct convolution at stride 1, without a patch matrix: the tile's
       input rows are read shifted into place (masked loads, the lanes off
       the image read as 0), each one used by 6 filters' accumulators, two
       output rows of up to 32 columns at a time (24 accumulators).  For a
       first convolution over a narrow input (LeNet's: 1 channel, 5x5 taps,
       28x28 outputs) the patch matrix costs as much to write and read as
       the product itself.  hn_conv_masks: lane masks per (kw, 16-column
       chunk q) of an output row: vm the lanes ow with 0 <= ow - PW + kw < W
       and ow < CW, om those with ow < CW. */
    #define HN_DIRECT_KW 16
    #define HN_DIRECT_Q 8       /* 16-column chunks: CW <= 128 */
    static void hn_conv_masks(int W, int KW, int PW, int CW,
                              __mmask16 vm[HN_DIRECT_KW][HN_DIRECT_Q], __mmask16 om[HN_DIRECT_Q])
    {
        for (int q = 0; q < HN_DIRECT_Q; q++) {
            const int j0 = 16 * q;
            om[q] = CW > j0 ? HN_MASK(CW - j0) : 0;
            for (int kw = 0; kw < KW; kw++) {
                const int lo = PW - kw > 0 ? PW - kw : 0;
                const int hi = W + PW - kw < CW ? W + PW - kw : CW;
                const int a = lo - j0 > 0 ? lo - j0 : 0, b = hi - j0 > 0 ? hi - j0 : 0;
                vm[kw][q] = b > a ? (__mmask16)(HN_MASK(b) & ~HN_MASK(a)) : 0;
            }
        }
    }
    /* y (F, nt, CH*CW) = act(conv(x (C, nt, H*W), w (F, C*KH*KW)) + bias), act
       ReLU when relu else identity; filters past F in the last block of 6
       are computed from the last one and not stored, a row past CH or off
       the image is read from zeros.  The 24 accumulators are named, not an
       array, so that they stay in registers (GCC spilled the array's to
       the stack on every tap). */
    #define HN_CF_ALL(X) X(0) X(1) X(2) X(3) X(4) X(5)
    #define HN_CF_DECL(i) __m512 a##i##00 = bv[i], a##i##01 = bv[i], a##i##10 = bv[i], \
                                 a##i##11 = bv[i];
    #define HN_CF_FMA(i) { const __m512 wv = _mm512_set1_ps(wk[i]);                        \
                           a##i##00 = _mm512_fmadd_ps(wv, v00, a##i##00);                 \
                           a##i##01 = _mm512_fmadd_ps(wv, v01, a##i##01);                 \
                           a##i##10 = _mm512_fmadd_ps(wv, v10, a##i##10);                 \
                           a##i##11 = _mm512_fmadd_ps(wv, v11, a##i##11); }
    #define HN_CF_STORE(i) if (f0 + i < F) {                                              \
            float *yr = y + ((ptrdiff_t)(f0 + i) * nt + s) * P + (ptrdiff_t)oh0 * CW + 32 * pq; \
            _mm512_mask_storeu_ps(yr, om0, relu ? _mm512_max_ps(a##i##00, zero) : a##i##00); \
            _mm512_mask_storeu_ps(yr + 16, om1, relu ? _mm512_max_ps(a##i##01, zero) : a##i##01); \
            if (nr == 2) {                                                                \
                _mm512_mask_storeu_ps(yr + CW, om0, relu ? _mm512_max_ps(a##i##10, zero) : a##i##10); \
                _mm512_mask_storeu_ps(yr + CW + 16, om1,                                  \
                                      relu ? _mm512_max_ps(a##i##11, zero) : a##i##11);   \
            } }
    __attribute__((target("avx512f,fma"))) static void hn_conv_fwd_512(
            const float *x, const float *w, const float *bias, float *y, int nt, int C, int H,
            int W, int F, int KH, int KW, int PH, int PW, int CH, int CW, int relu)
    {
        const ptrdiff_t P = (ptrdiff_t)CH * CW, HW = (ptrdiff_t)H * W;
        const int CKK = C * KH * KW, npair = (CW + 31) / 32;
        __mmask16 vm[HN_DIRECT_KW][HN_DIRECT_Q], om[HN_DIRECT_Q];
        hn_conv_masks(W, KW, PW, CW, vm, om);
        const __m512 zero = _mm512_setzero_ps();
        float zrow[64] = {0.0f};
        float wt[128 * 6];      /* wt[6t + i]: tap t of filter f0 + i */
        for (int f0 = 0; f0 < F; f0 += 6) {
            __m512 bv[6];
            for (int i = 0; i < 6; i++) {
                const int fi = f0 + i < F ? f0 + i : F - 1;
                bv[i] = _mm512_set1_ps(bias != NULL ? bias[fi] : 0.0f);
                for (int t = 0; t < CKK; t++) wt[6 * t + i] = w[(ptrdiff_t)fi * CKK + t];
            }
            for (int s = 0; s < nt; s++)
            for (int oh0 = 0; oh0 < CH; oh0 += 2) {
                const int nr = CH - oh0 < 2 ? 1 : 2;
                for (int pq = 0; pq < npair; pq++) {
                    const __mmask16 om0 = om[2 * pq], om1 = om[2 * pq + 1];
                    HN_CF_ALL(HN_CF_DECL)
                    for (int c = 0; c < C; c++) {
                        const float *xc = x + ((ptrdiff_t)c * nt + s) * HW - PW + 32 * pq;
                        for (int kh = 0; kh < KH; kh++) {
                            const int ih0 = oh0 - PH + kh, ih1 = ih0 + 1;
                            const float *r0 = ih0 >= 0 && ih0 < H ? xc + (ptrdiff_t)ih0 * W
                                                                  : zrow;
                            const float *r1 = nr == 2 && ih1 >= 0 && ih1 < H
                                              ? xc + (ptrdiff_t)ih1 * W : zrow;
                            const float *wk = wt + 6 * (c * KH + kh) * KW;
                            for (int kw = 0; kw < KW; kw++, wk += 6) {
                                const __mmask16 k0 = vm[kw][2 * pq], k1 = vm[kw][2 * pq + 1];
                                const __m512 v00 = _mm512_maskz_loadu_ps(k0, r0 + kw),
                                             v01 = _mm512_maskz_loadu_ps(k1, r0 + kw + 16),
                                             v10 = _mm512_maskz_loadu_ps(k0, r1 + kw),
                                             v11 = _mm512_maskz_loadu_ps(k1, r1 + kw + 16);
                                HN_CF_ALL(HN_CF_FMA)
                            }
                        }
                    }
                    HN_CF_ALL(HN_CF_STORE)
                }
            }
        }
    }
    /* The same convolution's weight gradient: dw (F, C*KH*KW) += the tile's
       g (F, nt, CH*CW) times x's shifted rows, as dot products over the
       output positions in blocks of 3 filters x 5 taps of one input row
       (c, kh) (15 accumulators, reduced together by hn_sum16), over the
       output rows whose input row is on the image, one 16-column chunk at
       a time so that its lane masks stay in mask registers; taps past the
       row and filters past F are computed from the last ones and not
       stored. */
    __attribute__((target("avx512f,fma"))) static void hn_conv_wgrad_512(
            const float *x, const float *g, float *dw, int nt, int C, int H, int W, int F,
            int KH, int KW, int PH, int PW, int CH, int CW)
    {
        const ptrdiff_t P = (ptrdiff_t)CH * CW, HW = (ptrdiff_t)H * W;
        const int CKK = C * KH * KW, nq = (CW + 15) / 16;
        __mmask16 vm[HN_DIRECT_KW][HN_DIRECT_Q], om[HN_DIRECT_Q];
        hn_conv_masks(W, KW, PW, CW, vm, om);
        for (int f0 = 0; f0 < F; f0 += 3) {
            const float *g0 = g + (ptrdiff_t)f0 * nt * P;
            const float *g1 = g + (ptrdiff_t)(f0 + 1 < F ? f0 + 1 : F - 1) * nt * P;
            const float *g2 = g + (ptrdiff_t)(f0 + 2 < F ? f0 + 2 : F - 1) * nt * P;
            for (int c = 0; c < C; c++)
            for (int kh = 0; kh < KH; kh++) {
                const int lo = PH - kh > 0 ? PH - kh : 0;       /* oh with ih on the image */
                const int hi = H + PH - kh < CH ? H + PH - kh : CH;
                for (int kw0 = 0; kw0 < KW; kw0 += 5) {
                    int kw[5];
                    for (int j = 0; j < 5; j++) kw[j] = kw0 + j < KW ? kw0 + j : KW - 1;
                    __m512 acc[16];
                    for (int j = 0; j < 16; j++) acc[j] = _mm512_setzero_ps();
                    for (int q = 0; q < nq; q++) {
                        const __mmask16 mo = om[q], m0 = vm[kw[0]][q], m1 = vm[kw[1]][q],
                                        m2 = vm[kw[2]][q], m3 = vm[kw[3]][q], m4 = vm[kw[4]][q];
                        /* LD(m, p): the lanes of m from p; a chunk whose lanes are all
                           on the image and the output loads without masks (GCC reloads
                           mask registers from the stack on every use) */
                        #define HN_CW_LOOP(LD)                                                   \
                        for (int s = 0; s < nt; s++) {                                           \
                            const float *xs = x + ((ptrdiff_t)c * nt + s) * HW                   \
                                              + (ptrdiff_t)(kh - PH) * W - PW + 16 * q;          \
                            const ptrdiff_t gs = s * P + 16 * q;                                 \
                            for (int oh = lo; oh < hi; oh++) {                                   \
                                const ptrdiff_t go = gs + (ptrdiff_t)oh * CW;                    \
                                const __m512 gv0 = LD(mo, g0 + go), gv1 = LD(mo, g1 + go),       \
                                             gv2 = LD(mo, g2 + go);                              \
                                const float *xr = xs + (ptrdiff_t)oh * W;                        \
                                HN_CW_TAP(LD, 0, m0) HN_CW_TAP(LD, 1, m1) HN_CW_TAP(LD, 2, m2)   \
                                HN_CW_TAP(LD, 3, m3) HN_CW_TAP(LD, 4, m4)                        \
                            }                                                                    \
                        }
                        #define HN_CW_TAP(LD, j, m) {                                            \
                            const __m512 xv = LD(m, xr + kw[j]);                                 \
                            acc[j] = _mm512_fmadd_ps(gv0, xv, acc[j]);                           \
                            acc[5 + j] = _mm512_fmadd_ps(gv1, xv, acc[5 + j]);                   \
                            acc[10 + j] = _mm512_fmadd_ps(gv2, xv, acc[10 + j]); }
                        #define HN_CW_MASKED(m, p) _mm512_maskz_loadu_ps(m, p)
                        #define HN_CW_FULL(m, p) _mm512_loadu_ps(p)
                        if ((mo & m0 & m1 & m2 & m3 & m4) == 0xFFFF) {
                            HN_CW_LOOP(HN_CW_FULL)
                        } else {
                            HN_CW_LOOP(HN_CW_MASKED)
                        }
                        #undef HN_CW_LOOP
                        #undef HN_CW_TAP
                        #undef HN_CW_MASKED
                        #undef HN_CW_FULL
                    }
                    const __m512 sums = hn_sum16(acc);  /* lane 5i+j: dw (f0+i, tap kw0+j) */
                    const int nj = KW - kw0 < 5 ? KW - kw0 : 5;
                    const __mmask16 cm = (__mmask16)((1u << nj) - 1u);
                    for (int i = 0; i < 3 && f0 + i < F; i++) {
                        float *d = dw + (ptrdiff_t)(f0 + i) * CKK + (c * KH + kh) * KW + kw0;
                        const __m512 si = _mm512_maskz_compress_ps((__mmask16)(0x1Fu << (5 * i)),
                                                                   sums);
                        _mm512_mask_storeu_ps(d, cm, _mm512_add_ps(_mm512_maskz_loadu_ps(cm, d),
                                                                   si));
                    }
                }
            }
        }
    }
    #endif
    static void hn_max2x2(const float *x, float *y, int *arg, ptrdiff_t planes, int H, int W,
                          int HO, int WO)
    {
    #if HN_RUN512
        if (hn_avx512()) { hn_max2x2_512(x, y, arg, planes, H, W, HO, WO); return; }
    #endif
        hn_max2x2_plain(x, y, arg, planes, H, W, HO, WO);
    }
    /* C (M, L) += A (M, N) B (L, N)^T by hn_wgrad_512 where the CPU has
       AVX-512, N's stride-1 rows are short enough that BLAS's packing
       costs (N < 2048) and the 4x4 blocks waste at most a tenth of their
       work on rows past M or L; returns 0 (nothing done) otherwise. */
    static int hn_wgrad(int M, int L, int N, const float *A, ptrdiff_t lda, const float *B,
                        ptrdiff_t ldb, float *C, ptrdiff_t ldc)
    {
    #if HN_RUN512
        const double covered = (double)((M + 3) / 4 * 4) * ((L + 3) / 4 * 4);
        if (hn_avx512() && N < 2048 && covered <= 1.1 * M * L) {
            hn_wgrad_512(M, L, N, A, lda, B, ldb, C, ldc);
            return 1;
        }
    #else
        (void)M; (void)L; (void)N; (void)A; (void)lda; (void)B; (void)ldb; (void)C; (void)ldc;
    #endif
        return 0;
    }
    /* Whether a convolution runs directly (hn_conv_fwd_512 / hn_conv_wgrad_512)
       rather than through its patch matrix: AVX-512, stride 1, at most 16
       taps a row and 128 columns, at most 128 taps in all (the first
       convolutions of small nets, where the patch matrix costs as much as
       the product), and rows that fill at least 3/4 of the 32-lane pairs. */
    static int hn_no_direct = 0;    /* set by use_direct(False) */
    static int hn_set_direct(int on)
    {
        const int before = !hn_no_direct;
        hn_no_direct = !on;
        return before;
    }
    static int hn_direct(int C, int KH, int KW, int SH, int SW, int CW)
    {
    #if HN_RUN512
        return !hn_no_direct && hn_avx512() && SH == 1 && SW == 1 && KW <= HN_DIRECT_KW && CW <= 16 * HN_DIRECT_Q
               && C * KH * KW <= 128 && 4 * CW >= 3 * 32 * ((CW + 31) / 32);
    #else
        (void)C; (void)KH; (void)KW; (void)SH; (void)SW; (void)CW;
        return 0;
    #endif
    }
    static void hn_conv_fwd(const float *x, const float *w, const float *bias, float *y, int nt,
                            int C, int H, int W, int F, int KH, int KW, int PH, int PW, int CH,
                            int CW, int relu)
    {
    #if HN_RUN512
        hn_conv_fwd_512(x, w, bias, y, nt, C, H, W, F, KH, KW, PH, PW, CH, CW, relu);
    #else
        (void)x; (void)w; (void)bias; (void)y; (void)nt; (void)C; (void)H; (void)W; (void)F;
        (void)KH; (void)KW; (void)PH; (void)PW; (void)CH; (void)CW; (void)relu;
    #endif
    }
    static void hn_conv_wgrad(const float *x, const float *g, float *dw, int nt, int C, int H,
                              int W, int F, int KH, int KW, int PH, int PW, int CH, int CW)
    {
    #if HN_RUN512
        hn_conv_wgrad_512(x, g, dw, nt, C, H, W, F, KH, KW, PH, PW, CH, CW);
    #else
        (void)x; (void)g; (void)dw; (void)nt; (void)C; (void)H; (void)W; (void)F; (void)KH;
        (void)KW; (void)PH; (void)PW; (void)CH; (void)CW;
    #endif
    }
    """
    void _max2x2 "hn_max2x2"(const float *x, float *y, int *arg, Py_ssize_t planes, int H,
                             int W, int HO, int WO) noexcept nogil
    int _set_avx512 "hn_set_avx512"(int on) noexcept nogil
    int _direct "hn_direct"(int C, int KH, int KW, int SH, int SW, int CW) noexcept nogil
    int _set_direct "hn_set_direct"(int on) noexcept nogil
    void _conv_fwd "hn_conv_fwd"(const float *x, const float *w, const float *bias, float *y,
                                 int nt, int C, int H, int W, int F, int KH, int KW, int PH,
                                 int PW, int CH, int CW, int relu) noexcept nogil
    void _conv_wgrad "hn_conv_wgrad"(const float *x, const float *g, float *dw, int nt, int C,
                                     int H, int W, int F, int KH, int KW, int PH, int PW,
                                     int CH, int CW) noexcept nogil
    int _wgrad "hn_wgrad"(int M, int L, int N, const float *A, Py_ssize_t lda, const float *B,
                          Py_ssize_t ldb, float *C, Py_ssize_t ldc) noexcept nogil
    void _im2col "hn_im2col"(const float *x, float *cols, int nt, int C, int H, int W, int KH,
                             int KW, int SH, int SW, int PH, int PW, int CH,
                             int CW) noexcept nogil
    void _col2im "hn_col2im"(const float *cols, float *dx, int nt, int C, int H, int W, int KH,
                             int KW, int SH, int SW, int PH, int PW, int CH,
                             int CW) noexcept nogil


cdef inline float _sum(const float *x, Py_ssize_t n) noexcept nogil:
    """The sum of a run, in eight partial sums (a vectorisable loop; one
    running float sum is a chain of dependent adds)."""
    cdef float acc[8]
    cdef Py_ssize_t i, j, m = n - n % 8
    cdef float total = 0.0
    for j in range(8):
        acc[j] = 0.0
    for i in range(0, m, 8):
        for j in range(8):
            acc[j] += x[i + j]
    for i in range(m, n):
        total += x[i]
    for j in range(8):
        total += acc[j]
    return total


cdef void _pool(const float *x, float *y, int *arg, Py_ssize_t planes, int H, int W,
                int QH, int QW, int QSH, int QSW, int HO, int WO, bint avg) noexcept nogil:
    """Max (the arg-max offsets into ``arg``, unless NULL) or average pool
    of ``planes`` planes ``(H, W)`` -> ``(HO, WO)``."""
    cdef Py_ssize_t p
    cdef int oh, ow, a, b, at, best_at
    cdef float best, v, inv = 1.0 / (QH * QW)
    cdef const float *src
    cdef const float *r0
    cdef const float *r1
    if not avg and QH == 2 and QW == 2 and QSH == 2 and QSW == 2 and H >= 2 * HO \
            and W >= 2 * WO:
        _max2x2(x, y, arg, planes, H, W, HO, WO)
        return
    for p in range(planes):
        src = x + p * H * W
        for oh in range(HO):
            for ow in range(WO):
                if avg:
                    v = 0.0
                    for a in range(QH):
                        for b in range(QW):
                            v = v + src[(oh * QSH + a) * W + ow * QSW + b]
                    y[(p * HO + oh) * WO + ow] = v * inv
                else:
                    best_at = oh * QSH * W + ow * QSW
                    best = src[best_at]
                    for a in range(QH):
                        for b in range(QW):
                            at = (oh * QSH + a) * W + ow * QSW + b
                            if src[at] > best:
                                best, best_at = src[at], at
                    y[(p * HO + oh) * WO + ow] = best
                    if arg != NULL:
                        arg[(p * HO + oh) * WO + ow] = best_at


cdef void _pool_back(const float *dy, float *dx, const int *arg, Py_ssize_t planes, int H,
                     int W, int QH, int QW, int QSH, int QSW, int HO, int WO,
                     bint avg) noexcept nogil:
    """``dx (planes, H, W)`` = the pool's gradient from ``dy (planes, HO, WO)``."""
    cdef Py_ssize_t p
    cdef int oh, ow, a, b
    cdef float g, inv = 1.0 / (QH * QW)
    cdef float *dst
    memset(dx, 0, planes * H * W * sizeof(float))
    for p in range(planes):
        dst = dx + p * H * W
        for oh in range(HO):
            for ow in range(WO):
                g = dy[(p * HO + oh) * WO + ow]
                if avg:
                    for a in range(QH):
                        for b in range(QW):
                            dst[(oh * QSH + a) * W + ow * QSW + b] += g * inv
                else:
                    dst[arg[(p * HO + oh) * WO + ow]] += g


cdef void _to_rows(const float *x, float *r, int nt, int C, int S) noexcept nogil:
    """``(C, nt, S)`` -> ``(nt, C*S)`` (Flatten's order)."""
    cdef int c, s
    for s in range(nt):
        for c in range(C):
            memcpy(r + (<Py_ssize_t>s * C + c) * S, x + (<Py_ssize_t>c * nt + s) * S,
                   S * sizeof(float))


cdef void _from_rows(const float *r, float *x, int nt, int C, int S) noexcept nogil:
    """``(nt, C*S)`` -> ``(C, nt, S)``."""
    cdef int c, s
    for s in range(nt):
        for c in range(C):
            memcpy(x + (<Py_ssize_t>c * nt + s) * S, r + (<Py_ssize_t>s * C + c) * S,
                   S * sizeof(float))


cdef void _tile(const int *d, int nu, const float *w, float *gw, const float *X,
                int in_size, const int *rows, int r0, int nt, const int *labels,
                float inv_n, float *ws, int *iws, double *stats, float *logits,
                bint train, bint reuse) noexcept nogil:
    """Forward, loss and (``train``) backward of positions ``r0 .. r0+nt-1``
    of ``rows``; parameter gradients added into ``gw``, loss sum and correct
    count into ``stats``, logits (when not NULL) written at ``logits + (r0 - 0) * K``
    by the caller's offset.  ``reuse``: the workspace holds this tile's
    input, and a first convolution's patch matrix, from the call before
    (another weight vector on the same samples): neither is made again."""
    cdef const int *u
    cdef int i, s, c, j, k, K, best, lab, HW
    cdef Py_ssize_t row, ntP, CKK, P, f
    cdef float *x
    cdef float *y
    cdef float *g
    cdef float *gb
    cdef const float *gs
    cdef const float *b
    cdef float m, sm, acc
    # the tile's input, in the first unit's layout
    u = d
    x = ws + u[F_IN]
    if reuse:
        pass                # in place from the call before
    elif u[F_KIND] == K_DENSE:
        for s in range(nt):
            memcpy(x + <Py_ssize_t>s * in_size, X + <Py_ssize_t>rows[r0 + s] * in_size,
                   in_size * sizeof(float))
    else:
        HW = u[F_H] * u[F_W]
        for s in range(nt):
            row = rows[r0 + s]
            for c in range(u[F_C]):
                memcpy(x + (<Py_ssize_t>c * nt + s) * HW, X + row * in_size + c * HW,
                       HW * sizeof(float))
    # forward
    for i in range(nu):
        u = d + i * D
        x = ws + u[F_IN]
        b = w + u[F_BOFF] if u[F_BOFF] >= 0 else NULL
        if u[F_KIND] == K_DENSE:
            if u[F_TRANS]:
                _to_rows(ws + u[F_PREV_OUT], x, nt, u[F_PREV_C], u[F_C] // u[F_PREV_C])
            y = ws + u[F_OUT]
            gemm_rm(False, False, nt, u[F_F], u[F_C], 1.0, x, u[F_C], w + u[F_WOFF], u[F_F],
                    0.0, y, u[F_F])
            for s in range(nt):
                _bias_act_run(y + <Py_ssize_t>s * u[F_F], b, 0.0, u[F_F], u[F_ACT])
        elif u[F_KIND] == K_CONV:
            P = u[F_CH] * u[F_CW]
            ntP = nt * P
            CKK = u[F_C] * u[F_KH] * u[F_KW]
            y = ws + u[F_Y]
            if _direct(u[F_C], u[F_KH], u[F_KW], u[F_SH], u[F_SW], u[F_CW]):
                _conv_fwd(x, w + u[F_WOFF], b, y, nt, u[F_C], u[F_H], u[F_W], u[F_F], u[F_KH],
                          u[F_KW], u[F_PH], u[F_PW], u[F_CH], u[F_CW], u[F_ACT] == ACT_RELU)
                if u[F_ACT] != ACT_RELU and u[F_ACT] != ACT_IDENTITY:
                    for f in range(u[F_F]):
                        _bias_act_run(y + f * ntP, NULL, 0.0, ntP, u[F_ACT])
            else:
                if i > 0 or not reuse:
                    _im2col(x, ws + u[F_COLS], nt, u[F_C], u[F_H], u[F_W], u[F_KH], u[F_KW],
                            u[F_SH], u[F_SW], u[F_PH], u[F_PW], u[F_CH], u[F_CW])
                gemm_rm(False, False, u[F_F], ntP, CKK, 1.0, w + u[F_WOFF], CKK,
                        ws + u[F_COLS], ntP, 0.0, y, ntP)
                for f in range(u[F_F]):
                    _bias_act_run(y + f * ntP, NULL, b[f] if b != NULL else 0.0, ntP,
                                  u[F_ACT])
            if u[F_POOLED]:
                _pool(y, ws + u[F_OUT], iws + u[F_ARG] if train else NULL,
                      <Py_ssize_t>u[F_F] * nt, u[F_CH],
                      u[F_CW], u[F_QH], u[F_QW], u[F_QSH], u[F_QSW], u[F_HO], u[F_WO], False)
        else:
            _pool(x, ws + u[F_OUT], iws + u[F_ARG] if train else NULL,
                  <Py_ssize_t>u[F_C] * nt, u[F_H], u[F_W],
                  u[F_QH], u[F_QW], u[F_QSH], u[F_QSW], u[F_HO], u[F_WO], u[F_AVG])
    # softmax cross-entropy on the last (dense) unit's rows
    u = d + (nu - 1) * D
    K = u[F_F]
    y = ws + u[F_OUT]
    g = ws + u[F_GOUT]
    for s in range(nt):
        if logits != NULL:
            memcpy(logits + <Py_ssize_t>s * K, y + <Py_ssize_t>s * K, K * sizeof(float))
        if labels == NULL:
            continue
        lab = labels[rows[r0 + s]]
        m = y[s * K]
        best = 0
        for j in range(1, K):
            if y[s * K + j] > m:
                m = y[s * K + j]
                best = j
        stats[1] += best == lab
        sm = 0.0
        for j in range(K):
            g[s * K + j] = expf(y[s * K + j] - m)
            sm = sm + g[s * K + j]
        stats[0] += <double>logf(sm) + <double>(m - y[s * K + lab])
        for j in range(K):
            g[s * K + j] = g[s * K + j] / sm * inv_n
        g[s * K + lab] -= inv_n
    if not train:
        return
    # backward
    for i in range(nu - 1, -1, -1):
        u = d + i * D
        x = ws + u[F_IN]
        if u[F_KIND] == K_DENSE:
            g = ws + u[F_GOUT]
            _act_grad_inplace(ws + u[F_OUT], g, <Py_ssize_t>nt * u[F_F], u[F_ACT])
            gemm_rm(True, False, u[F_C], u[F_F], nt, 1.0, x, u[F_C], g, u[F_F], 1.0,
                    gw + u[F_WOFF], u[F_F])
            if u[F_BOFF] >= 0:
                # through locals: with u[] read in the loop (the stores may alias it
                # as far as the compiler knows) it is one add at a time through memory
                gb = gw + u[F_BOFF]
                k = u[F_F]
                for s in range(nt):
                    gs = g + s * k
                    for j in range(k):
                        gb[j] += gs[j]
            if u[F_GIN] >= 0:
                gemm_rm(False, True, nt, u[F_C], u[F_F], 1.0, g, u[F_F], w + u[F_WOFF], u[F_F],
                        0.0, ws + u[F_GIN], u[F_C])
                if u[F_TRANS]:
                    _from_rows(ws + u[F_GIN], ws + u[F_PREV_GOUT], nt, u[F_PREV_C],
                               u[F_C] // u[F_PREV_C])
        elif u[F_KIND] == K_CONV:
            P = u[F_CH] * u[F_CW]
            ntP = nt * P
            CKK = u[F_C] * u[F_KH] * u[F_KW]
            if u[F_POOLED]:
                g = ws + u[F_DY]
                _pool_back(ws + u[F_GOUT], g, iws + u[F_ARG], <Py_ssize_t>u[F_F] * nt,
                           u[F_CH], u[F_CW], u[F_QH], u[F_QW], u[F_QSH], u[F_QSW], u[F_HO],
                           u[F_WO], False)
            else:
                g = ws + u[F_GOUT]
            _act_grad_inplace(ws + u[F_Y], g, u[F_F] * ntP, u[F_ACT])
            if _direct(u[F_C], u[F_KH], u[F_KW], u[F_SH], u[F_SW], u[F_CW]):
                _conv_wgrad(x, g, gw + u[F_WOFF], nt, u[F_C], u[F_H], u[F_W], u[F_F],
                            u[F_KH], u[F_KW], u[F_PH], u[F_PW], u[F_CH], u[F_CW])
            elif not _wgrad(u[F_F], CKK, ntP, g, ntP, ws + u[F_COLS], ntP, gw + u[F_WOFF],
                            CKK):
                gemm_rm(False, True, u[F_F], CKK, ntP, 1.0, g, ntP, ws + u[F_COLS], ntP, 1.0,
                        gw + u[F_WOFF], CKK)
            if u[F_BOFF] >= 0:
                for f in range(u[F_F]):
                    gw[u[F_BOFF] + f] += _sum(g + f * ntP, ntP)
            if u[F_GIN] >= 0:
                gemm_rm(True, False, CKK, ntP, u[F_F], 1.0, w + u[F_WOFF], CKK, g, ntP, 0.0,
                        ws + u[F_DCOLS], ntP)
                _col2im(ws + u[F_DCOLS], ws + u[F_GIN], nt, u[F_C], u[F_H], u[F_W], u[F_KH],
                        u[F_KW], u[F_SH], u[F_SW], u[F_PH], u[F_PW], u[F_CH], u[F_CW])
        elif u[F_GIN] >= 0:
            _pool_back(ws + u[F_GOUT], ws + u[F_GIN], iws + u[F_ARG], <Py_ssize_t>u[F_C] * nt,
                       u[F_H], u[F_W], u[F_QH], u[F_QW], u[F_QSH], u[F_QSW], u[F_HO], u[F_WO],
                       u[F_AVG])


def run(const int[:, ::1] desc, const float[::1] w, float[::1] grad, float[:, ::1] partial,
        const float[:, ::1] X, const int[::1] rows, int start, int n, const int[::1] labels,
        float[:, ::1] logits, float[:, ::1] ws, int[:, ::1] iws, int tile, int nthreads,
        bint train, double[:, ::1] stats):
    """One pass of the chain ``desc`` over positions ``start .. start+n-1``
    of ``rows`` (row indices into ``X (N, input floats)``), ``tile`` samples
    at a time, over at most ``nthreads`` OpenMP threads.

    ``labels`` (int32, per row of ``X``; empty: no loss) gives the loss
    (mean over the ``n`` samples, as the layer path's softmax cross-entropy)
    and, with ``train``, ``grad`` (the flat parameter layout of ``w``) is
    overwritten with the batch's gradient.  ``logits (n, K)`` (empty: not
    kept) receives the last unit's output.  ``partial (threads, size)``,
    ``ws (threads, floats)``, ``iws (threads, ints)`` and ``stats
    (threads, 2)`` are the threads' own buffers, ``threads >= nthreads``.

    Returns ``(loss sum, correct count)`` over the ``n`` samples.
    """
    cdef int nu = desc.shape[0]
    cdef int ntiles = (n + tile - 1) // tile if tile > 0 else 0
    cdef int nth, t, tid, r0, nt
    cdef Py_ssize_t size = w.shape[0], j
    cdef int in_size = X.shape[1]
    cdef float inv_n = 1.0 / n if n > 0 else 0.0
    cdef bint has_labels = labels.shape[0] > 0, keep = logits.shape[0] > 0
    cdef float acc
    if nu == 0 or desc.shape[1] != D:
        raise ValueError(f"desc must be (units >= 1, {D}), got ({desc.shape[0]}, {desc.shape[1]})")
    if tile < 1 or nthreads < 1:
        raise ValueError(f"tile and nthreads must be at least 1, got {tile}, {nthreads}")
    if start < 0 or start + n > rows.shape[0]:
        raise ValueError(f"positions {start}..{start + n} outside the {rows.shape[0]} rows")
    nth = min(nthreads, max(ntiles, 1))
    if ws.shape[0] < nth or iws.shape[0] < nth or stats.shape[0] < nth:
        raise ValueError(f"the threads' buffers must have at least {nth} rows")
    if train and (grad.shape[0] != size or partial.shape[0] < nth or partial.shape[1] != size):
        raise ValueError("grad and partial must have the parameters' size")
    if train and not has_labels:
        raise ValueError("training needs labels")
    if keep and (logits.shape[0] != n or logits.shape[1] != desc[nu - 1, F_F]):
        raise ValueError(f"logits must be ({n}, {desc[nu - 1, F_F]})")
    for j in range(start, start + n):
        if rows[j] < 0 or rows[j] >= X.shape[0]:
            raise IndexError(f"row {rows[j]} outside X's {X.shape[0]} rows")
        if has_labels and rows[j] >= labels.shape[0]:
            raise IndexError(f"row {rows[j]} has no label ({labels.shape[0]} labels)")
    if n == 0:
        if train:
            grad[:] = 0
        return 0.0, 0
    for t in prange(nth, nogil=True, num_threads=nth, schedule="static", chunksize=1):
        stats[t, 0] = 0.0
        stats[t, 1] = 0.0
        if train:
            memset(&partial[t, 0], 0, size * sizeof(float))
    for t in prange(ntiles, nogil=True, num_threads=nth, schedule="static", chunksize=1):
        tid = omp_get_thread_num()
        r0 = start + t * tile
        nt = min(tile, start + n - r0)
        _tile(&desc[0, 0], nu, &w[0], &partial[tid, 0] if train else NULL, &X[0, 0], in_size,
              &rows[0], r0, nt, &labels[0] if has_labels else NULL, inv_n, &ws[tid, 0],
              &iws[tid, 0], &stats[tid, 0],
              &logits[t * tile, 0] if keep else NULL, train, False)
    if train:
        for j in prange(size, nogil=True, num_threads=hn_threads(nth, <double>size * nth,
                                                                 HN_ELEMENT_UNIT),
                        schedule="static"):
            acc = 0.0
            for t in range(nth):
                acc = acc + partial[t, j]
            grad[j] = acc
    loss, correct = 0.0, 0.0
    for t in range(nth):
        loss += stats[t, 0]
        correct += stats[t, 1]
    return loss, int(correct)


def run_population(const int[:, ::1] desc, const float[:, ::1] W, const float[:, ::1] X,
                   const int[::1] labels, float[:, ::1] ws, int[:, ::1] iws, int tile,
                   int nthreads, double[:, ::1] stats):
    """The loss sum over every row of ``X`` of each weight vector ``W[p]``
    (the flat parameter layout of :func:`run`), forward only: one OpenMP
    thread a tile of samples, every vector in turn on it while the tile is
    in its cache, the input gathered and a first convolution's patch matrix
    made once for all of them.

    ``ws``, ``iws`` as :func:`run`'s; ``stats (threads, 2 * P)`` the
    threads' sums.  Returns ``(loss sums (P,), correct counts (P,))``,
    float64 arrays.
    """
    cdef int nu = desc.shape[0], P = W.shape[0], n = X.shape[0]
    cdef int ntiles = (n + tile - 1) // tile if tile > 0 else 0
    cdef int nth, t, tid, r0, nt, p
    cdef int in_size = X.shape[1]
    cdef Py_ssize_t j
    if nu == 0 or desc.shape[1] != D:
        raise ValueError(f"desc must be (units >= 1, {D}), got ({desc.shape[0]}, {desc.shape[1]})")
    if tile < 1 or nthreads < 1:
        raise ValueError(f"tile and nthreads must be at least 1, got {tile}, {nthreads}")
    if labels.shape[0] != n:
        raise ValueError(f"{n} rows of X but {labels.shape[0]} labels")
    for j in range(n):
        if labels[j] < 0 or labels[j] >= desc[nu - 1, F_F]:
            raise ValueError(f"label {labels[j]} outside [0, {desc[nu - 1, F_F]})")
    nth = min(nthreads, max(ntiles, 1))
    if ws.shape[0] < nth or iws.shape[0] < nth or stats.shape[0] < nth \
            or stats.shape[1] != 2 * P:
        raise ValueError(f"the threads' buffers must have at least {nth} rows (stats: "
                         f"{2 * P} columns)")
    cdef int[::1] order = np.arange(n, dtype=np.int32)
    stats[:, :] = 0.0
    losses = np.zeros(P, dtype=np.float64)
    correct = np.zeros(P, dtype=np.float64)
    if n == 0 or P == 0:
        return losses, correct
    for t in prange(ntiles, nogil=True, num_threads=nth, schedule="static", chunksize=1):
        tid = omp_get_thread_num()
        r0 = t * tile
        nt = min(tile, n - r0)
        for p in range(P):
            _tile(&desc[0, 0], nu, &W[p, 0], NULL, &X[0, 0], in_size, &order[0], r0, nt,
                  &labels[0], 0.0, &ws[tid, 0], &iws[tid, 0], &stats[tid, 2 * p], NULL,
                  False, p > 0)
    for t in range(nth):
        for p in range(P):
            losses[p] += stats[t, 2 * p]
            correct[p] += stats[t, 2 * p + 1]
    return losses, correct


def takes_direct(int C, int KH, int KW, int SH, int SW, int CW):
    """Whether a convolution of ``C`` input channels, ``KH x KW`` taps, strides
    ``SH, SW`` and ``CW`` output columns runs directly (no patch matrix) in
    this process, as the kernel decides it."""
    return bool(_direct(C, KH, KW, SH, SW, CW))


def use_direct(bint on):
    """Let convolutions that qualify run directly (``True``, the default) or
    always through their patch matrix (``False``, for testing and timing one
    against the other).  Returns the setting before the call."""
    return bool(_set_direct(on))


def use_avx512(bint on):
    """Let the patch-matrix loops take their AVX-512 versions where the CPU
    has AVX-512 (``True``, the default) or only the plain loops (``False``,
    for testing one against the other).  Returns whether they were taken
    before the call."""
    return bool(_set_avx512(on))
