/* General matrix multiply C = alpha * op(A) @ op(B) + beta * C, float32.
 *
 * Five kernels of increasing quality, kept side by side so that tests and
 * benchmarks can compare them (the first four follow the four kernels of the
 * source thesis):
 *
 *   gemm_v1    one work-group; each work-item computes outputs idx, idx+WG, ...
 *   gemm_v2    v1 with local memory: the one work-group walks the output tile
 *              by tile, staging TS x TS tiles of op(A) and op(B) in local memory
 *   gemm_v3    a grid of TS x TS work-groups, one work-item per output, no
 *              local memory
 *   gemm_v4    v3 with TS x TS local-memory tiles of op(A) and op(B)
 *   gemm_main  production: BM x BN block tile per work-group, TM x TN outputs
 *              per work-item (register blocking), float4 global and local
 *              loads, padded and double-buffered local memory, any M, N, K,
 *              every transpose combination, batched (grid dim 2), and summed
 *              over batch entries (the batch-summed product of Device.gemm).
 *              Built with -DUSE_TF32_MMA (NVIDIA, by choice) its multiply runs
 *              on tensor cores through inline PTX mma.sync m16n8k8 TF32.
 *
 * op(A) is M x K and op(B) is K x N.  ``ta``/``tb`` say whether the stored
 * matrix is the transpose: op(A)[m, k] = ta ? A[k*lda + m] : A[m*lda + k].
 * Leading dimensions (lda, ldb, ldc) and offsets are in elements; offsets let
 * every kernel read views that start inside a buffer.  When beta == 0, C is
 * not read (it may hold garbage or NaN).
 *
 * Tile sizes come in as -D defines (V1_WG, V2_TS, V3_TS, V4_TS for the
 * teaching kernels; BM, BN, BK, TM, TN for gemm_main).
 */

#ifndef V1_WG
#define V1_WG 256
#endif
#ifndef V2_TS
#define V2_TS 16
#endif
#ifndef V3_TS
#define V3_TS 16
#endif
#ifndef V4_TS
#define V4_TS 16
#endif

#define OPA(m, k) (ta ? A[(k) * lda + (m)] : A[(m) * lda + (k)])
#define OPB(k, n) (tb ? B[(n) * ldb + (k)] : B[(k) * ldb + (n)])

inline void store_c(__global float *C, const int i, const float acc,
                    const float alpha, const float beta)
{
    C[i] = (beta == 0.0f) ? alpha * acc : alpha * acc + beta * C[i];
}

/* gemm_v1 -- work-group: (V1_WG), exactly one group.
 * Work-item l computes outputs l, l + V1_WG, l + 2*V1_WG, ... of the M*N
 * outputs (row-major order, so neighbouring items write neighbouring columns),
 * each as a dot product read straight from global memory. */
__kernel __attribute__((reqd_work_group_size(V1_WG, 1, 1)))
void gemm_v1(const int M, const int N, const int K,
             __global const float *A, const int offA, const int lda, const int ta,
             __global const float *B, const int offB, const int ldb, const int tb,
             __global float *C, const int offC, const int ldc,
             const float alpha, const float beta)
{
    A += offA; B += offB; C += offC;
    for (int idx = get_local_id(0); idx < M * N; idx += V1_WG) {
        const int m = idx / N, n = idx % N;
        float acc = 0.0f;
        for (int k = 0; k < K; ++k)
            acc += OPA(m, k) * OPB(k, n);
        store_c(C, m * ldc + n, acc, alpha, beta);
    }
}

/* gemm_v2 -- work-group: (V2_TS, V2_TS), exactly one group.
 * The group walks the output in V2_TS x V2_TS tiles; for each tile item
 * (lx, ly) computes output (row ly, column lx) of the tile, with the K loop
 * staged through local-memory tiles of op(A) and op(B). */
__kernel __attribute__((reqd_work_group_size(V2_TS, V2_TS, 1)))
void gemm_v2(const int M, const int N, const int K,
             __global const float *A, const int offA, const int lda, const int ta,
             __global const float *B, const int offB, const int ldb, const int tb,
             __global float *C, const int offC, const int ldc,
             const float alpha, const float beta)
{
    __local float As[V2_TS][V2_TS + 1];
    __local float Bs[V2_TS][V2_TS + 1];
    A += offA; B += offB; C += offC;
    const int lx = get_local_id(0), ly = get_local_id(1);
    const int tiles_n = (N + V2_TS - 1) / V2_TS;
    const int tiles = ((M + V2_TS - 1) / V2_TS) * tiles_n;
    for (int t = 0; t < tiles; ++t) {
        const int row = (t / tiles_n) * V2_TS + ly;
        const int col = (t % tiles_n) * V2_TS + lx;
        float acc = 0.0f;
        for (int k0 = 0; k0 < K; k0 += V2_TS) {
            As[ly][lx] = (row < M && k0 + lx < K) ? OPA(row, k0 + lx) : 0.0f;
            Bs[ly][lx] = (k0 + ly < K && col < N) ? OPB(k0 + ly, col) : 0.0f;
            barrier(CLK_LOCAL_MEM_FENCE);
            for (int k = 0; k < V2_TS; ++k)
                acc += As[ly][k] * Bs[k][lx];
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        if (row < M && col < N)
            store_c(C, row * ldc + col, acc, alpha, beta);
    }
}

/* gemm_v3 -- work-group: (V3_TS, V3_TS); grid covers N x M (dim 0 = column).
 * Work-item (x, y) computes C[y, x] as a dot product from global memory. */
__kernel __attribute__((reqd_work_group_size(V3_TS, V3_TS, 1)))
void gemm_v3(const int M, const int N, const int K,
             __global const float *A, const int offA, const int lda, const int ta,
             __global const float *B, const int offB, const int ldb, const int tb,
             __global float *C, const int offC, const int ldc,
             const float alpha, const float beta)
{
    A += offA; B += offB; C += offC;
    const int n = get_global_id(0), m = get_global_id(1);
    if (m >= M || n >= N)
        return;
    float acc = 0.0f;
    for (int k = 0; k < K; ++k)
        acc += OPA(m, k) * OPB(k, n);
    store_c(C, m * ldc + n, acc, alpha, beta);
}

/* gemm_v4 -- work-group: (V4_TS, V4_TS); grid covers N x M (dim 0 = column).
 * Work-item (x, y) computes C[y, x]; the group stages V4_TS x V4_TS tiles of
 * op(A) and op(B) in local memory, each item loading one element of each. */
__kernel __attribute__((reqd_work_group_size(V4_TS, V4_TS, 1)))
void gemm_v4(const int M, const int N, const int K,
             __global const float *A, const int offA, const int lda, const int ta,
             __global const float *B, const int offB, const int ldb, const int tb,
             __global float *C, const int offC, const int ldc,
             const float alpha, const float beta)
{
    __local float As[V4_TS][V4_TS + 1];
    __local float Bs[V4_TS][V4_TS + 1];
    A += offA; B += offB; C += offC;
    const int lx = get_local_id(0), ly = get_local_id(1);
    const int col = get_group_id(0) * V4_TS + lx;
    const int row = get_group_id(1) * V4_TS + ly;
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += V4_TS) {
        As[ly][lx] = (row < M && k0 + lx < K) ? OPA(row, k0 + lx) : 0.0f;
        Bs[ly][lx] = (k0 + ly < K && col < N) ? OPB(k0 + ly, col) : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int k = 0; k < V4_TS; ++k)
            acc += As[ly][k] * Bs[k][lx];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (row < M && col < N)
        store_c(C, row * ldc + col, acc, alpha, beta);
}

/* ------------------------------------------------------------------------ */
/* Production kernel.                                                        */
/* ------------------------------------------------------------------------ */
#ifndef BM
#define BM 128
#endif
#ifndef BN
#define BN 128
#endif
#ifndef BK
#define BK 16
#endif
#ifndef TM
#define TM 8
#endif
#ifndef TN
#define TN 8
#endif
#define WGM (BM / TM)               /* work-items along M (local dim 1) */
#define WGN (BN / TN)               /* work-items along N (local dim 0) */
#define NT (WGM * WGN)              /* work-items per group */
#define PAD 4                       /* keeps rows float4-aligned, spreads banks */
#define LDA_S (BM + PAD)
#define LDB_S (BN + PAD)
#define A4 (BM * BK / 4 / NT)       /* float4 loads of the A tile per item */
#define B4 (BN * BK / 4 / NT)

#if (BM * BK) % (4 * NT) != 0 || (BN * BK) % (4 * NT) != 0 || TM % 4 != 0 || TN % 4 != 0 || BK % 4 != 0
#error "gemm_main: tile sizes must satisfy BM*BK and BN*BK divisible by 4*NT, TM, TN, BK multiples of 4"
#endif

/* Load the A tile rows m0.., columns k0.. of op(A) into registers ra.
 * Item t's q-th float4 covers op(A)[r, c..c+3] (ta = 0: along k) or
 * op(A)[r..r+3, c] (ta = 1: along m); the same (r, c) mapping is used by the
 * vector and scalar paths, so the local store is shared. */
inline void load_a(__global const float *A, const int lda, const int ta,
                   const int M, const int K, const int m0, const int k0,
                   const int vec, const int t, float4 *ra)
{
    #pragma unroll
    for (int q = 0; q < A4; ++q) {
        const int idx = t + q * NT;
        if (!ta) {
            const int r = idx / (BK / 4), c = (idx % (BK / 4)) * 4;
            const int m = m0 + r, k = k0 + c;
            __global const float *p = A + (long)m * lda + k;
            if (vec) {
                ra[q] = *(__global const float4 *)p;
            } else {
                const int okm = m < M;
                ra[q] = (float4)(okm && k < K ? p[0] : 0.0f,
                                 okm && k + 1 < K ? p[1] : 0.0f,
                                 okm && k + 2 < K ? p[2] : 0.0f,
                                 okm && k + 3 < K ? p[3] : 0.0f);
            }
        } else {
            const int r = idx / (BM / 4), c = (idx % (BM / 4)) * 4;
            const int k = k0 + r, m = m0 + c;
            __global const float *p = A + (long)k * lda + m;
            if (vec) {
                ra[q] = *(__global const float4 *)p;
            } else {
                const int okk = k < K;
                ra[q] = (float4)(okk && m < M ? p[0] : 0.0f,
                                 okk && m + 1 < M ? p[1] : 0.0f,
                                 okk && m + 2 < M ? p[2] : 0.0f,
                                 okk && m + 3 < M ? p[3] : 0.0f);
            }
        }
    }
}

/* Store the registers of load_a into As[k][m] (k-major). */
inline void store_a(__local float *As, const int ta, const int t, const float4 *ra)
{
    #pragma unroll
    for (int q = 0; q < A4; ++q) {
        const int idx = t + q * NT;
        if (!ta) {
            const int r = idx / (BK / 4), c = (idx % (BK / 4)) * 4;
            As[(c + 0) * LDA_S + r] = ra[q].x;
            As[(c + 1) * LDA_S + r] = ra[q].y;
            As[(c + 2) * LDA_S + r] = ra[q].z;
            As[(c + 3) * LDA_S + r] = ra[q].w;
        } else {
            const int r = idx / (BM / 4), c = (idx % (BM / 4)) * 4;
            *(__local float4 *)(As + r * LDA_S + c) = ra[q];
        }
    }
}

/* Load the B tile rows k0.., columns n0.. of op(B) into registers rb:
 * tb = 0: float4 along n of B[k, n]; tb = 1: float4 along k of B[n, k]. */
inline void load_b(__global const float *B, const int ldb, const int tb,
                   const int N, const int K, const int n0, const int k0,
                   const int vec, const int t, float4 *rb)
{
    #pragma unroll
    for (int q = 0; q < B4; ++q) {
        const int idx = t + q * NT;
        if (!tb) {
            const int r = idx / (BN / 4), c = (idx % (BN / 4)) * 4;
            const int k = k0 + r, n = n0 + c;
            __global const float *p = B + (long)k * ldb + n;
            if (vec) {
                rb[q] = *(__global const float4 *)p;
            } else {
                const int okk = k < K;
                rb[q] = (float4)(okk && n < N ? p[0] : 0.0f,
                                 okk && n + 1 < N ? p[1] : 0.0f,
                                 okk && n + 2 < N ? p[2] : 0.0f,
                                 okk && n + 3 < N ? p[3] : 0.0f);
            }
        } else {
            const int r = idx / (BK / 4), c = (idx % (BK / 4)) * 4;
            const int n = n0 + r, k = k0 + c;
            __global const float *p = B + (long)n * ldb + k;
            if (vec) {
                rb[q] = *(__global const float4 *)p;
            } else {
                const int okn = n < N;
                rb[q] = (float4)(okn && k < K ? p[0] : 0.0f,
                                 okn && k + 1 < K ? p[1] : 0.0f,
                                 okn && k + 2 < K ? p[2] : 0.0f,
                                 okn && k + 3 < K ? p[3] : 0.0f);
            }
        }
    }
}

/* Store the registers of load_b into Bs[k][n] (k-major). */
inline void store_b(__local float *Bs, const int tb, const int t, const float4 *rb)
{
    #pragma unroll
    for (int q = 0; q < B4; ++q) {
        const int idx = t + q * NT;
        if (!tb) {
            const int r = idx / (BN / 4), c = (idx % (BN / 4)) * 4;
            *(__local float4 *)(Bs + r * LDB_S + c) = rb[q];
        } else {
            const int r = idx / (BK / 4), c = (idx % (BK / 4)) * 4;
            Bs[(c + 0) * LDB_S + r] = rb[q].x;
            Bs[(c + 1) * LDB_S + r] = rb[q].y;
            Bs[(c + 2) * LDB_S + r] = rb[q].z;
            Bs[(c + 3) * LDB_S + r] = rb[q].w;
        }
    }
}

#ifdef USE_TF32_MMA
/* TF32 tensor-core path (NVIDIA only, sm_80+; chosen by the host only when
 * the user allows TF32).  The same tiles and local-memory staging as the
 * float32 path; the multiply is done by warps instead of work-items: the
 * NT/32 warps form a WARPS_M x WARPS_N grid, each computing a WTM x WTN
 * sub-tile as MT16 x NT8 tiles of mma.sync.m16n8k8 (float32 accumulate). */
#define WARPS_N 4
#define WARPS_M (NT / 32 / WARPS_N)
#define WTM (BM / WARPS_M)
#define WTN (BN / WARPS_N)
#define MT16 (WTM / 16)
#define NT8 (WTN / 8)
#if NT % (32 * WARPS_N) != 0 || WTM % 16 != 0 || WTN % 8 != 0 || BK % 8 != 0
#error "gemm_main TF32: tile shape does not split into m16n8k8 warp tiles"
#endif

inline unsigned int to_tf32(const float x)
{
    unsigned int r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}

/* d += a (16x8, row) * b (8x8, col) for one warp; fragment layouts as in
 * the PTX ISA for m16n8k8 .tf32: lane = 4*gid + tig. */
inline void mma_tf32(float *d, const unsigned int *a, const unsigned int *b)
{
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

/* gemm_main -- work-group: (BN/TN, BM/TM), NT = (BM/TM)*(BN/TN) items;
 * grid: (ceil(N/BN) * BN/TN, ceil(M/BM) * BM/TM, groups along the batch).
 *
 * Group (gx, gy, z) computes the BM x BN block of C at (gy*BM, gx*BN) of
 * batch entry z.  Item (tx, ty) holds TM x TN accumulators: rows
 * ty*4 + (i/4)*(WGM*4) + i%4 and columns tx*4 + (j/4)*(WGN*4) + j%4, i.e.
 * 4 x 4 sub-blocks spread over the tile so that its local reads are float4
 * and a warp's reads of Bs hit consecutive addresses.
 *
 * The K loop runs over the tiles of op(A) and op(B) for batch entries
 * e = z*nsum ... min((z+1)*nsum, nbatch) - 1, summing all of them: nsum = 1
 * gives the ordinary batched product, nsum = nbatch (one group along z) the
 * batch-summed product.  strideA/B/C are the element strides between batch
 * entries (0 for an operand shared by every entry).  The next tile is read
 * into registers while the current one is multiplied from local memory
 * (double buffering, one barrier per tile).  ``vec_a``/``vec_b``/``vec_c``
 * say that the operand's rows, offset and batch stride are multiples of 4
 * elements, so full tiles may use float4 global accesses. */
__kernel __attribute__((reqd_work_group_size(WGN, WGM, 1)))
void gemm_main(const int M, const int N, const int K,
               __global const float *restrict A, const int offA, const int lda,
               const int ta, const int strideA, const int vec_a,
               __global const float *restrict B, const int offB, const int ldb,
               const int tb, const int strideB, const int vec_b,
               __global float *C, const int offC, const int ldc,
               const int strideC, const int vec_c,
               const float alpha, const float beta,
               const int nsum, const int nbatch)
{
    __local float As[2][BK * LDA_S] __attribute__((aligned(16)));
    __local float Bs[2][BK * LDB_S] __attribute__((aligned(16)));

    const int tx = get_local_id(0), ty = get_local_id(1);
    const int t = ty * WGN + tx;
    const int m0 = get_group_id(1) * BM, n0 = get_group_id(0) * BN;
    const int z = get_group_id(2);
    const int e0 = z * nsum;
    const int e1 = min(e0 + nsum, nbatch);
    const int ktiles = (K + BK - 1) / BK;
    const int ntiles = (e1 - e0) * ktiles;
    const int fullA_m = m0 + BM <= M, fullB_n = n0 + BN <= N;

    A += offA; B += offB;
    C += offC + (long)z * strideC;

#ifdef USE_TF32_MMA
    const int warp = t >> 5, lane = t & 31;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;
    const int gid = lane >> 2, tig = lane & 3;
    float acc[MT16 * NT8][4];
    #pragma unroll
    for (int i = 0; i < MT16 * NT8; ++i)
        acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;
#else
    float acc[TM][TN];
    #pragma unroll
    for (int i = 0; i < TM; ++i)
        #pragma unroll
        for (int j = 0; j < TN; ++j)
            acc[i][j] = 0.0f;
#endif

    float4 ra[A4], rb[B4];
    if (ntiles > 0) {
        const int k0 = 0;
        __global const float *Ae = A + (long)e0 * strideA;
        __global const float *Be = B + (long)e0 * strideB;
        const int fk = k0 + BK <= K;
        load_a(Ae, lda, ta, M, K, m0, k0, vec_a && fullA_m && fk, t, ra);
        load_b(Be, ldb, tb, N, K, n0, k0, vec_b && fullB_n && fk, t, rb);
        store_a(As[0], ta, t, ra);
        store_b(Bs[0], tb, t, rb);
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    int cur = 0;
    for (int tile = 0; tile < ntiles; ++tile) {
        const int more = tile + 1 < ntiles;
        if (more) {
            const int e = e0 + (tile + 1) / ktiles;
            const int k0 = ((tile + 1) % ktiles) * BK;
            __global const float *Ae = A + (long)e * strideA;
            __global const float *Be = B + (long)e * strideB;
            const int fk = k0 + BK <= K;
            load_a(Ae, lda, ta, M, K, m0, k0, vec_a && fullA_m && fk, t, ra);
            load_b(Be, ldb, tb, N, K, n0, k0, vec_b && fullB_n && fk, t, rb);
        }
        __local const float *as = As[cur];
        __local const float *bs = Bs[cur];
#ifdef USE_TF32_MMA
        #pragma unroll
        for (int kk = 0; kk < BK; kk += 8) {
            unsigned int af[MT16][4], bf[NT8][2];
            #pragma unroll
            for (int i = 0; i < MT16; ++i) {
                const int mr = wm * WTM + i * 16 + gid;
                af[i][0] = to_tf32(as[(kk + tig) * LDA_S + mr]);
                af[i][1] = to_tf32(as[(kk + tig) * LDA_S + mr + 8]);
                af[i][2] = to_tf32(as[(kk + tig + 4) * LDA_S + mr]);
                af[i][3] = to_tf32(as[(kk + tig + 4) * LDA_S + mr + 8]);
            }
            #pragma unroll
            for (int j = 0; j < NT8; ++j) {
                const int nc = wn * WTN + j * 8 + gid;
                bf[j][0] = to_tf32(bs[(kk + tig) * LDB_S + nc]);
                bf[j][1] = to_tf32(bs[(kk + tig + 4) * LDB_S + nc]);
            }
            #pragma unroll
            for (int i = 0; i < MT16; ++i)
                #pragma unroll
                for (int j = 0; j < NT8; ++j)
                    mma_tf32(acc[i * NT8 + j], af[i], bf[j]);
        }
#else
        #pragma unroll
        for (int k = 0; k < BK; ++k) {
            float a[TM], b[TN];
            #pragma unroll
            for (int i = 0; i < TM / 4; ++i) {
                const float4 v = *(__local const float4 *)(as + k * LDA_S + i * (WGM * 4) + ty * 4);
                a[4 * i + 0] = v.x; a[4 * i + 1] = v.y; a[4 * i + 2] = v.z; a[4 * i + 3] = v.w;
            }
            #pragma unroll
            for (int j = 0; j < TN / 4; ++j) {
                const float4 v = *(__local const float4 *)(bs + k * LDB_S + j * (WGN * 4) + tx * 4);
                b[4 * j + 0] = v.x; b[4 * j + 1] = v.y; b[4 * j + 2] = v.z; b[4 * j + 3] = v.w;
            }
            #pragma unroll
            for (int i = 0; i < TM; ++i)
                #pragma unroll
                for (int j = 0; j < TN; ++j)
                    acc[i][j] = fma(a[i], b[j], acc[i][j]);
        }
#endif
        if (more) {
            store_a(As[cur ^ 1], ta, t, ra);
            store_b(Bs[cur ^ 1], tb, t, rb);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        cur ^= 1;
    }

#ifdef USE_TF32_MMA
    /* Write back: lane (gid, tig) holds rows gid and gid + 8, columns
     * 2*tig and 2*tig + 1 of each 16 x 8 tile. */
    #pragma unroll
    for (int i = 0; i < MT16; ++i)
        #pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int m = m0 + wm * WTM + i * 16 + gid + 8 * h;
            if (m >= M)
                continue;
            #pragma unroll
            for (int j = 0; j < NT8; ++j) {
                const int n = n0 + wn * WTN + j * 8 + 2 * tig;
                __global float *p = C + (long)m * ldc + n;
                const float r0 = acc[i * NT8 + j][2 * h], r1 = acc[i * NT8 + j][2 * h + 1];
                if (n < N)
                    p[0] = (beta == 0.0f) ? alpha * r0 : alpha * r0 + beta * p[0];
                if (n + 1 < N)
                    p[1] = (beta == 0.0f) ? alpha * r1 : alpha * r1 + beta * p[1];
            }
        }
#else
    /* Write back: each row of a 4 x 4 sub-block is one float4 when C allows. */
    #pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + (i / 4) * (WGM * 4) + ty * 4 + (i % 4);
        if (m >= M)
            continue;
        #pragma unroll
        for (int j4 = 0; j4 < TN / 4; ++j4) {
            const int n = n0 + j4 * (WGN * 4) + tx * 4;
            __global float *p = C + (long)m * ldc + n;
            const float4 r = (float4)(acc[i][4 * j4 + 0], acc[i][4 * j4 + 1],
                                      acc[i][4 * j4 + 2], acc[i][4 * j4 + 3]);
            if (vec_c && n + 3 < N) {
                __global float4 *p4 = (__global float4 *)p;
                *p4 = (beta == 0.0f) ? alpha * r : alpha * r + beta * *p4;
            } else {
                const float rr[4] = {r.x, r.y, r.z, r.w};
                #pragma unroll
                for (int j = 0; j < 4; ++j)
                    if (n + j < N)
                        p[j] = (beta == 0.0f) ? alpha * rr[j] : alpha * rr[j] + beta * p[j];
            }
        }
    }
#endif
}

/* gemm_sum_partials -- work-group: (256); one work-item per element of C.
 * Finishes a split batch-summed product: C[i] = alpha * sum_s P[s*MN + i]
 * + beta * C[i], for P (S, M, N) contiguous and C with leading dimension ldc. */
__kernel void gemm_sum_partials(const int M, const int N, const int S,
                                __global const float *P,
                                __global float *C, const int offC, const int ldc,
                                const float alpha, const float beta)
{
    const int i = get_global_id(0);
    if (i >= M * N)
        return;
    float s = 0.0f;
    for (int q = 0; q < S; ++q)
        s += P[(long)q * M * N + i];
    store_c(C + offC, (i / N) * ldc + i % N, s, alpha, beta);
}
