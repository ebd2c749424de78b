/* Fused segments: a chain of layers run for a tile of samples per work-group,
 * its activations in local memory.  One template per layer kind; the chain
 * itself arrives as build options (hetnet/devices/opencl/fused.py writes
 * them): FORWARD, BACKWARD and WGRAD are sequences of the FWD_* / BWD_* /
 * WG_* macros below with literal sizes, so every loop bound and offset is a
 * compile-time constant once the compiler inlines the templates.
 *
 * Build options:
 *   T            samples per work-group tile
 *   QMAX, KWMAX  the largest pool window (QH*QW) and conv kernel width (private arrays)
 *   RHWMAX, KKMAX the largest input patch ((QH-1)*SH+KH by (QW-1)*SW+KW) and
 *                kernel (KH*KW) of the convolutions run from register patches
 *   TWG          work-group size of fused_train / fused_eval (the per-sample templates)
 *   WG           work-group size of the others (256; dense weight-gradient tiles are 16x16)
 *   BUF_A, BUF_B per-sample floats of the two ping-pong activation buffers
 *   BUF_C        per-sample floats of the conv-output gradient buffer (>= 1)
 *   IN_SIZE      floats of one input sample;  NCLS classes (logits)
 *   LOGITS       the buffer (bufA or bufB) holding the logits after FORWARD
 *   TRAINING     1: fused_train (stashes, loss gradient, backward); 0: fused_eval
 *   USE_PTX_RED  1 on NVIDIA: gradients added with red.global.add.f32
 *
 * The stash S (global) keeps what the backward pass and the weight
 * gradients need, region by region: region r holds NMAX samples of size_r
 * floats, sample n's element j at base_r + n * size_r + j (the generator
 * passes base_r).  Pool arg-maxes are stored as float bit patterns.
 *
 * Parameters P and gradients G are one flat buffer each (hetnet.flatparams
 * layout); each template gets its W and b offsets (boff < 0: no bias).
 * Activation codes as elementwise.cl: 0 identity, 1 relu, 2 sigmoid, 3 tanh. */

#define BARRIER() barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE)

inline float f_act(const int act, const float v)
{
    switch (act) {
    case 1: return fmax(v, 0.0f);
    case 2: return 1.0f / (1.0f + exp(-v));
    case 3: return tanh(v);
    default: return v;
    }
}

/* derivative of the activation, from its output y */
inline float f_dact(const int act, const float y)
{
    switch (act) {
    case 1: return y > 0.0f ? 1.0f : 0.0f;
    case 2: return y * (1.0f - y);
    case 3: return 1.0f - y * y;
    default: return 1.0f;
    }
}

inline void grad_add(__global float *p, const float v)
{
#if USE_PTX_RED
    asm volatile("red.global.add.f32 [%0], %1;" :: "l"(p), "f"(v) : "memory");
#else
    volatile __global unsigned int *u = (volatile __global unsigned int *)p;
    unsigned int prev = *u, cur;
    do {
        cur = prev;
        prev = atomic_cmpxchg(u, cur, as_uint(as_float(cur) + v));
    } while (prev != cur);
#endif
}

/* ------------------------------------------------------------- forward */

/* Conv2D + activation + max pool (QH x QW window, stride QSH x QSW; 1x1 for
 * a convolution without pooling).  Work-item j of the group computes pooled
 * output r = j, j + TWG, ... of every sample of the tile, all its window's
 * conv outputs at once: each weight it reads serves the QH*QW window
 * positions of the T samples (QMAX >= QH*QW).  The first maximum wins on
 * ties (pool.cl). */
inline void fwd_conv(__local const float *src, __local float *dst, const int nt, const int s0,
                     __global const float *P, __global float *S,
                     const int C, const int H, const int W, const int F,
                     const int KH, const int KW, const int SH, const int SW,
                     const int PH, const int PW, const int CH, const int CW,
                     const int QH, const int QW, const int QSH, const int QSW,
                     const int HO, const int WO, const int ACT,
                     const int woff, const int boff, const int ost, const int ast,
                     const int PATCH)
{
    const int per = F * HO * WO, insz = C * H * W;
    for (int r = get_local_id(0); r < per; r += TWG) {
        const int f = r / (HO * WO), q0 = r - f * (HO * WO);
        const int py = q0 / WO, px = q0 - py * WO;
        const float bias = boff >= 0 ? P[boff + f] : 0.0f;
        __global const float *wf = P + woff + f * (C * KH * KW);
        float acc[QMAX * T];
#pragma unroll
        for (int k = 0; k < QMAX * T; ++k)
            acc[k] = bias;
        if (PATCH) {
            /* the input patch under the pool window's conv outputs,
             * RH x RW per channel, read once into registers for each sample
             * and the channel's filter held in registers: QH*QW*KH*KW
             * multiply-adds per RH*RW local reads, no bounds checks in the
             * inner loops */
            const int RH = (QH - 1) * SH + KH, RW = (QW - 1) * SW + KW;
            const int iy0 = py * QSH * SH - PH, ix0 = px * QSW * SW - PW;
            for (int c = 0; c < C; ++c) {
                float wk[KKMAX];
#pragma unroll
                for (int k = 0; k < KH * KW; ++k)
                    wk[k] = wf[c * KH * KW + k];
#pragma unroll
                for (int t = 0; t < T; ++t) {
                    float pt[RHWMAX];
                    __local const float *sc = src + t * insz + c * H * W;
#pragma unroll
                    for (int a = 0; a < RH; ++a)
#pragma unroll
                        for (int b = 0; b < RW; ++b) {
                            const int iy = iy0 + a, ix = ix0 + b;
                            pt[a * RW + b] = (iy >= 0 && iy < H && ix >= 0 && ix < W)
                                             ? sc[iy * W + ix] : 0.0f;
                        }
#pragma unroll
                    for (int q = 0; q < QH * QW; ++q) {
                        const int wy = q / QW, wx = q - wy * QW;
#pragma unroll
                        for (int ky = 0; ky < KH; ++ky)
#pragma unroll
                            for (int kx = 0; kx < KW; ++kx)
                                acc[q * T + t] += pt[(wy * SH + ky) * RW + wx * SW + kx]
                                                  * wk[ky * KW + kx];
                    }
                }
            }
        } else
        for (int c = 0; c < C; ++c)
            for (int ky = 0; ky < KH; ++ky)
                for (int kx = 0; kx < KW; ++kx) {
                    const float w = wf[(c * KH + ky) * KW + kx];
#pragma unroll
                    for (int q = 0; q < QMAX; ++q) {
                        const int wy = q / QW, wx = q - wy * QW;
                        const int iy = (py * QSH + wy) * SH + ky - PH;
                        const int ix = (px * QSW + wx) * SW + kx - PW;
                        if (q >= QH * QW || iy < 0 || iy >= H || ix < 0 || ix >= W)
                            continue;
                        const int xi = (c * H + iy) * W + ix;
#pragma unroll
                        for (int t = 0; t < T; ++t)
                            acc[q * T + t] += src[t * insz + xi] * w;
                    }
                }
        float best[T];
        int arg[T];
#pragma unroll
        for (int t = 0; t < T; ++t) {
            best[t] = -INFINITY;
            arg[t] = 0;
        }
#pragma unroll
        for (int q = 0; q < QMAX; ++q) {
            if (q >= QH * QW)
                continue;
            const int wy = q / QW, wx = q - wy * QW;
            const int pos = (py * QSH + wy) * CW + px * QSW + wx;
#pragma unroll
            for (int t = 0; t < T; ++t) {
                const float v = f_act(ACT, acc[q * T + t]);
                if (v > best[t]) {
                    best[t] = v;
                    arg[t] = pos;
                }
            }
        }
        for (int t = 0; t < nt; ++t) {
            dst[t * per + r] = best[t];
            if (TRAINING && ost >= 0)
                S[ost + (s0 + t) * per + r] = best[t];
            if (TRAINING && ast >= 0)
                S[ast + (s0 + t) * per + r] = as_float(arg[t]);
        }
    }
    BARRIER();
}

/* Standalone max pool (no convolution before it), or with AVG the mean of
 * each window (no padding: the divisor is always QH*QW, as pool.cl's
 * count-include-pad average).  Work-item j: output j, j + TWG, ... of the
 * tile. */
inline void fwd_pool(__local const float *src, __local float *dst, const int nt, const int s0,
                     __global float *S, const int C, const int H, const int W,
                     const int QH, const int QW, const int QSH, const int QSW,
                     const int HO, const int WO, const int AVG, const int ost, const int ast)
{
    const int per = C * HO * WO, insz = C * H * W;
    for (int j = get_local_id(0); j < nt * per; j += TWG) {
        const int t = j / per, r = j - t * per;
        const int c = r / (HO * WO), q = r - c * (HO * WO);
        const int py = q / WO, px = q - py * WO;
        __local const float *plane = src + t * insz + c * H * W;
        if (AVG) {
            float sum = 0.0f;
            for (int wy = 0; wy < QH; ++wy)
                for (int wx = 0; wx < QW; ++wx)
                    sum += plane[(py * QSH + wy) * W + px * QSW + wx];
            dst[j] = sum / (QH * QW);
            if (TRAINING && ost >= 0)
                S[ost + (s0 + t) * per + r] = dst[j];
            continue;
        }
        float best = -INFINITY;
        int arg = 0;
        for (int wy = 0; wy < QH; ++wy)
            for (int wx = 0; wx < QW; ++wx) {
                const int p = (py * QSH + wy) * W + px * QSW + wx;
                if (plane[p] > best) {
                    best = plane[p];
                    arg = p;
                }
            }
        dst[j] = best;
        if (TRAINING && ost >= 0)
            S[ost + (s0 + t) * per + r] = best;
        if (TRAINING && ast >= 0)
            S[ast + (s0 + t) * per + r] = as_float(arg);
    }
    BARRIER();
}

/* Dense + activation: work-item o computes output o of the tile's samples. */
inline void fwd_dense(__local const float *src, __local float *dst, const int nt, const int s0,
                      __global const float *P, __global float *S, const int I, const int O,
                      const int ACT, const int woff, const int boff, const int ost,
                      const int KSMAX)
{
    /* KS work-items share each output, each summing a slice of the I
     * inputs, when O alone would leave most of the group idle (a dense layer
     * of 120 outputs in a group of 512); their partial sums go to dst past
     * the tile's outputs (the generator's KSMAX keeps T*O*(1+KS) within the
     * buffer) and are added in slice order. */
    const int KS = min(KSMAX, max(1, TWG / O));
    const int chunk = (I + KS - 1) / KS;
    __local float *part = dst + T * O;
    /* no barrier inside a branch: with one in a (uniform) branch and an
     * early return, PoCL's work-item loops left one tile's stashed outputs
     * wrong (tests/test_fused.py, LeNet-5); KS == 1 pays one more barrier */
    for (int j = get_local_id(0); j < KS * O; j += TWG) {
        const int k = j / O, o = j - k * O;
        const int i1 = min(I, (k + 1) * chunk);
        const float bias = KS == 1 && boff >= 0 ? P[boff + o] : 0.0f;
        float acc[T];
        for (int t = 0; t < T; ++t)
            acc[t] = bias;
        __global const float *wo = P + woff + o;
        for (int i = k * chunk; i < i1; ++i) {
            const float w = wo[i * O];
            for (int t = 0; t < T; ++t)
                acc[t] += src[t * I + i] * w;
        }
        if (KS == 1) {
            for (int t = 0; t < nt; ++t) {
                const float v = f_act(ACT, acc[t]);
                dst[t * O + o] = v;
                if (TRAINING && ost >= 0)
                    S[ost + (s0 + t) * O + o] = v;
            }
        } else {
            for (int t = 0; t < T; ++t)
                part[(k * T + t) * O + o] = acc[t];
        }
    }
    BARRIER();
    for (int j = get_local_id(0); j < (KS > 1 ? nt * O : 0); j += TWG) {
        const int t = j / O, o = j - t * O;
        float v = boff >= 0 ? P[boff + o] : 0.0f;
        for (int k = 0; k < KS; ++k)
            v += part[(k * T + t) * O + o];
        v = f_act(ACT, v);
        dst[j] = v;
        if (TRAINING && ost >= 0)
            S[ost + (s0 + t) * O + o] = v;
    }
    BARRIER();
}

/* ------------------------------------------------------------ backward */

/* e = dy * act'(y) in place (y from the stash), e stashed for the weight
 * gradients when est >= 0. */
inline void bwd_act(__local float *dy, const int nt, const int s0, __global float *S,
                    const int per, const int ACT, const int yst, const int est)
{
    for (int j = get_local_id(0); j < nt * per; j += TWG) {
        const int t = j / per, r = j - t * per;
        float e = dy[j];
        if (ACT != 0)
            e *= f_dact(ACT, S[yst + (s0 + t) * per + r]);
        dy[j] = e;
        if (est >= 0)
            S[est + (s0 + t) * per + r] = e;
    }
    BARRIER();
}

inline void bwd_dense(__local float *dy, __local float *dx, const int nt, const int s0,
                      __global const float *P, __global float *S, const int I, const int O,
                      const int ACT, const int woff, const int yst, const int est,
                      const int need_dx)
{
    bwd_act(dy, nt, s0, S, O, ACT, yst, est);
    if (!need_dx)
        return;
    for (int i = get_local_id(0); i < I; i += TWG) {
        float acc[T];
        for (int t = 0; t < T; ++t)
            acc[t] = 0.0f;
        __global const float *wi = P + woff + i * O;
        for (int o = 0; o < O; ++o) {
            const float w = wi[o];
            for (int t = 0; t < T; ++t)
                acc[t] += dy[t * O + o] * w;
        }
        for (int t = 0; t < nt; ++t)
            dx[t * I + i] = acc[t];
    }
    BARRIER();
}

/* The gradient at conv output (t, f, oy, ox): the sum of e over the pool
 * windows holding it whose arg-max it is (a gather: windows may overlap);
 * ast < 0 (an average pool): the sum of e / (QH*QW) over every window
 * holding it. */
inline void route_pool(__local const float *e, __local float *dconv, const int nt,
                       const int s0, __global const float *S, const int F, const int CH,
                       const int CW, const int QH, const int QW, const int QSH,
                       const int QSW, const int HO, const int WO, const int ast)
{
    const int per = F * CH * CW, pper = F * HO * WO;
    for (int j = get_local_id(0); j < nt * per; j += TWG) {
        const int t = j / per, r = j - t * per;
        const int f = r / (CH * CW), pos = r - f * (CH * CW);
        const int oy = pos / CW, ox = pos - oy * CW;
        const int py0 = oy >= QH ? (oy - QH) / QSH + 1 : 0, px0 = ox >= QW ? (ox - QW) / QSW + 1 : 0;
        const int py1 = min(oy / QSH, HO - 1), px1 = min(ox / QSW, WO - 1);
        float g = 0.0f;
        for (int py = py0; py <= py1; ++py)
            for (int px = px0; px <= px1; ++px) {
                const int k = (f * HO + py) * WO + px;
                if (ast < 0 || as_int(S[ast + (s0 + t) * pper + k]) == pos)
                    g += e[t * pper + k];
            }
        dconv[j] = ast < 0 ? g / (QH * QW) : g;
    }
    BARRIER();
}

inline void bwd_conv(__local float *dy, __local float *dx, __local float *dconvbuf,
                     const int nt, const int s0, __global const float *P, __global float *S,
                     const int C, const int H, const int W, const int F,
                     const int KH, const int KW, const int SH, const int SW,
                     const int PH, const int PW, const int CH, const int CW,
                     const int QH, const int QW, const int QSH, const int QSW,
                     const int HO, const int WO, const int ACT,
                     const int woff, const int yst, const int ast, const int est,
                     const int need_dx)
{
    bwd_act(dy, nt, s0, S, F * HO * WO, ACT, yst, est);
    if (!need_dx)
        return;
    __local const float *dconv = dy;
    if (ast >= 0) {
        route_pool(dy, dconvbuf, nt, s0, S, F, CH, CW, QH, QW, QSH, QSW, HO, WO, ast);
        dconv = dconvbuf;
    }
    const int insz = C * H * W, osz = F * CH * CW;
    for (int r = get_local_id(0); r < insz; r += TWG) {
        const int c = r / (H * W), q = r - c * (H * W);
        const int iy = q / W, ix = q - iy * W;
        float acc[T];
        for (int t = 0; t < T; ++t)
            acc[t] = 0.0f;
        for (int ky = 0; ky < KH; ++ky) {
            const int ty = iy + PH - ky;
            if (ty < 0 || ty % SH)
                continue;
            const int oy = ty / SH;
            if (oy >= CH)
                continue;
            for (int kx = 0; kx < KW; ++kx) {
                const int tx = ix + PW - kx;
                if (tx < 0 || tx % SW)
                    continue;
                const int ox = tx / SW;
                if (ox >= CW)
                    continue;
                for (int f = 0; f < F; ++f) {
                    const float w = P[woff + ((f * C + c) * KH + ky) * KW + kx];
                    const int k = (f * CH + oy) * CW + ox;
                    for (int t = 0; t < T; ++t)
                        acc[t] += dconv[t * osz + k] * w;
                }
            }
        }
        for (int t = 0; t < nt; ++t)
            dx[t * insz + r] = acc[t];
    }
    BARRIER();
}

inline void bwd_pool(__local const float *dy, __local float *dx, const int nt, const int s0,
                     __global const float *S, const int C, const int H, const int W,
                     const int QH, const int QW, const int QSH, const int QSW,
                     const int HO, const int WO, const int ast)
{
    route_pool(dy, dx, nt, s0, S, C, H, W, QH, QW, QSH, QSW, HO, WO, ast);
}

/* ---------------------------------------------------------- chain macros */

#define FWD_CONV(src, dst, C, H, W, F, KH, KW, SH, SW, PH, PW, CH, CW, QH, QW, QSH, QSW, \
                 HO, WO, ACT, woff, boff, ost, ast, PATCH) \
    fwd_conv(src, dst, nt, s0, P, S, C, H, W, F, KH, KW, SH, SW, PH, PW, CH, CW, \
             QH, QW, QSH, QSW, HO, WO, ACT, woff, boff, ost, ast, PATCH);
#define FWD_POOL(src, dst, C, H, W, QH, QW, QSH, QSW, HO, WO, AVG, ost, ast) \
    fwd_pool(src, dst, nt, s0, S, C, H, W, QH, QW, QSH, QSW, HO, WO, AVG, ost, ast);
#define FWD_DENSE(src, dst, I, O, ACT, woff, boff, ost, KSMAX) \
    fwd_dense(src, dst, nt, s0, P, S, I, O, ACT, woff, boff, ost, KSMAX);
#define BWD_CONV(dy, dx, C, H, W, F, KH, KW, SH, SW, PH, PW, CH, CW, QH, QW, QSH, QSW, \
                 HO, WO, ACT, woff, yst, ast, est, need_dx) \
    bwd_conv(dy, dx, bufC, nt, s0, P, S, C, H, W, F, KH, KW, SH, SW, PH, PW, CH, CW, \
             QH, QW, QSH, QSW, HO, WO, ACT, woff, yst, ast, est, need_dx);
#define BWD_POOL(dy, dx, C, H, W, QH, QW, QSH, QSW, HO, WO, ast) \
    bwd_pool(dy, dx, nt, s0, S, C, H, W, QH, QW, QSH, QSW, HO, WO, ast);
#define BWD_DENSE(dy, dx, I, O, ACT, woff, yst, est, need_dx) \
    bwd_dense(dy, dx, nt, s0, P, S, I, O, ACT, woff, yst, est, need_dx);

/* ------------------------------------------------------------- kernels */

/* The epoch's shuffle without a stored order: position i of the epoch maps
 * to a row through a 4-round Feistel network on 2*hbits bits keyed by the
 * epoch's key, walked until it lands below ndata (a bijection of 0..ndata-1;
 * under 4 rounds of walking on average since 2^(2 hbits) < 4 ndata).
 * hetnet.runtime.fused.device_permutation is the same map in numpy; mix32
 * is hash.cl's (Wellons' lowbias32, hetnet.devices.base.mix32), built
 * before this file. */
inline uint feistel_row(uint i, const uint ndata, const uint hbits, const uint key)
{
    const uint mask = (1u << hbits) - 1u;
    do {
        uint l = i >> hbits, r = i & mask;
        for (uint k = 0; k < 4; ++k) {
            const uint t = r;
            r = l ^ (mix32(r ^ (key + k * 0x9e3779b9u)) & mask);
            l = t;
        }
        i = (l << hbits) | r;
    } while (i >= ndata);
    return i;
}

/* Row of the data set for epoch position p: order[p], the Feistel shuffle
 * (hbits > 0), or p itself. */
inline long data_row(__global const int *order, const int p, const int ndata,
                     const int hbits, const int key)
{
    if (order)
        return order[p];
    if (hbits > 0)
        return feistel_row((uint)p, (uint)ndata, (uint)hbits, (uint)key);
    return p;
}

/* ------------------------------------------- BatchNorm between segments
 *
 * A chain with BatchNorms in training runs as segments, one per stretch of
 * layers between them (hetnet/devices/opencl/fused.py).  A segment followed
 * by a BatchNorm (SEG_OUT) is built as fused_fwd, which writes its output
 * z (pre-BatchNorm, OUT_SIZE floats a sample) to the stash at ZOUT and ends
 * there; fused_bn_stats reduces each channel's batch mean and variance of z;
 * the next segment (BN_IN) normalises on load (bn_in_load: gamma, beta and
 * the BatchNorm's activation).  Backward in reverse: a BN_IN segment ends by
 * writing the gradient at the BatchNorm's affine output (through its
 * activation: bn_in_grad) to DYIN; fused_bn_reduce sums it per channel
 * (dbeta, and dgamma against xhat) straight into G; the segment before
 * starts its fused_bwd from dz (bn_out_dz), norm.cl's training formula.
 *
 * Build options of a BN_IN segment (the BatchNorm before it):
 *   BN_IN_C, BN_IN_S  channels and spatial size per channel (C * S = IN_SIZE)
 *   BN_IN_ACT         its activation;  BN_IN_G, BN_IN_B  gamma's, beta's offsets in P
 *   BN_IN_STAT        mean (C floats) then invstd (C floats) in S
 *   ZIN, DYIN         the stash regions of its input z and its output gradient
 * and of a SEG_OUT segment (the BatchNorm after it) the same as BN_OUT_*,
 * ZOUT, DYOUT, with OUT_SIZE floats a sample and BN_OUT_RUN, the running
 * mean (then variance) in the running-statistics buffer R. */
#if BN_IN
inline float bn_in_load(__global const float *P, __global const float *S, const int s,
                        const int k)
{
    const int c = k / BN_IN_S;
    const float a = P[BN_IN_G + c] * S[BN_IN_STAT + BN_IN_C + c];
    return f_act(BN_IN_ACT, (S[ZIN + s * IN_SIZE + k] - S[BN_IN_STAT + c]) * a
                            + P[BN_IN_B + c]);
}

/* the gradient at the input's BatchNorm output, before its activation
 * (the activation's output stashed at IN_STASH), to DYIN */
inline void bn_in_grad(__local const float *dx, const int nt, const int s0, __global float *S)
{
    for (int j = get_local_id(0); j < nt * IN_SIZE; j += TWG) {
        const int t = j / IN_SIZE, k = j - t * IN_SIZE;
        float e = dx[j];
        if (BN_IN_ACT != 0)
            e *= f_dact(BN_IN_ACT, S[IN_STASH + (s0 + t) * IN_SIZE + k]);
        S[DYIN + (s0 + t) * IN_SIZE + k] = e;
    }
    BARRIER();      /* PoCL: a kernel may not end in a loop after its barriers */
}
#endif

/* fused_train / fused_eval -- work-group: (TWG); grid: ceil(n / T) groups.
 * Group g takes samples s0 = g*T .. s0+nt-1 of the batch, the rows
 * data_row(start + s) of the resident data X (order, the device shuffle
 * keyed by key when hbits > 0, or rows start + s):
 * gathers them into local memory, runs FORWARD, then the softmax
 * cross-entropy (work-item t < nt: sample t) adding the tile's summed loss
 * and correct count into stats[0] (float) and stats[1] (int).
 * fused_train then writes dlogits = (softmax - onehot) / n in place and runs
 * BACKWARD, stashing every e that WGRAD needs.  fused_eval (has_labels 0:
 * no loss) writes the logits to out[(start + s) * NCLS ...] when out is set.
 * The per-step scalars come first: a step re-sets only those. */
#ifndef BN_IN
#define BN_IN 0
#endif
#ifndef SEG_OUT
#define SEG_OUT 0
#endif
#if TRAINING && SEG_OUT
__kernel __attribute__((reqd_work_group_size(TWG, 1, 1)))
void fused_fwd(const int start, const int n, const int key, const int hbits,
               const int ndata, __global const float *X, __global const int *order,
               __global const int *labels, __global const float *P,
               __global float *S, __global float *stats)
#elif TRAINING
__kernel __attribute__((reqd_work_group_size(TWG, 1, 1)))
void fused_train(const int start, const int n, const int key, const int hbits,
                 const int ndata, __global const float *X, __global const int *order,
                 __global const int *labels, __global const float *P,
                 __global float *S, __global float *stats)
#else
__kernel __attribute__((reqd_work_group_size(TWG, 1, 1)))
void fused_eval(const int start, const int n, const int key, const int hbits,
                const int ndata, __global const float *X, __global const int *order,
                __global const int *labels, __global const float *P,
                __global float *S, __global float *stats,
                __global float *out, const int has_labels)
#endif
{
    __local float bufA[T * BUF_A], bufB[T * BUF_B], bufC[T * BUF_C];
    __local float red[2 * T];
    const int lid = get_local_id(0);
    const int s0 = get_group_id(0) * T;
    const int nt = min(T, n - s0);
    if (nt <= 0)
        return;
    for (int j = lid; j < nt * IN_SIZE; j += TWG) {
        const int t = j / IN_SIZE, k = j - t * IN_SIZE;
#if BN_IN
        bufA[j] = bn_in_load(P, S, s0 + t, k);
#else
        const long row = data_row(order, start + s0 + t, ndata, hbits, key);
        bufA[j] = X[row * IN_SIZE + k];
#endif
#if TRAINING
        if (IN_STASH >= 0)
            S[IN_STASH + (s0 + t) * IN_SIZE + k] = bufA[j];
#endif
    }
    BARRIER();
    FORWARD
#if SEG_OUT
    /* a segment before a BatchNorm: its output (pre-BatchNorm) to the stash */
    for (int j = lid; j < nt * OUT_SIZE; j += TWG)
        S[ZOUT + s0 * OUT_SIZE + j] = LOGITS[j];
    BARRIER();      /* PoCL: a kernel may not end in a loop after its barriers */
#else
#if !TRAINING
    if (out)
        for (int j = lid; j < nt * NCLS; j += TWG)
            out[(long)(start + s0) * NCLS + j] = LOGITS[j];
    if (!has_labels)
        return;
#endif
    if (lid < nt) {
        __local float *z = LOGITS + lid * NCLS;
        const long row = data_row(order, start + s0 + lid, ndata, hbits, key);
        const int y = labels[row];
        float mx = z[0];
        int pred = 0;
        for (int k = 1; k < NCLS; ++k)
            if (z[k] > mx) {
                mx = z[k];
                pred = k;
            }
        float s = 0.0f;
        for (int k = 0; k < NCLS; ++k)
            s += exp(z[k] - mx);
        red[lid] = log(s) - (z[y] - mx);
        red[T + lid] = pred == y ? 1.0f : 0.0f;
#if TRAINING
        const float inv = 1.0f / s, invn = 1.0f / n;
        for (int k = 0; k < NCLS; ++k)
            z[k] = invn * (exp(z[k] - mx) * inv - (k == y ? 1.0f : 0.0f));
#endif
    }
    BARRIER();
    if (lid == 0) {
        float loss = 0.0f, correct = 0.0f;
        for (int t = 0; t < nt; ++t) {
            loss += red[t];
            correct += red[T + t];
        }
        grad_add(stats, loss);
        atomic_add((volatile __global int *)(stats + 1), (int)correct);
    }
#if TRAINING
    BARRIER();
    BACKWARD
#if BN_IN
    bn_in_grad(bufA, nt, s0, S);
#endif
#endif
#endif
}

#if TRAINING && SEG_OUT
/* fused_bwd -- work-group: (TWG); grid: ceil(n / T) groups.  The backward
 * of a segment before a BatchNorm: group g loads its samples' gradient at
 * the segment's output from the BatchNorm's (norm.cl's bn_bwd_dx in
 * training: dz = gamma invstd (dy - (dbeta + xhat dgamma) / M), M = n *
 * BN_OUT_S, dbeta and dgamma already in G from fused_bn_reduce), then runs
 * BACKWARD (and, after a BatchNorm of its own, bn_in_grad). */
__kernel __attribute__((reqd_work_group_size(TWG, 1, 1)))
void fused_bwd(const int n, __global const float *P, __global float *S,
               __global const float *G)
{
    __local float bufA[T * BUF_A], bufB[T * BUF_B], bufC[T * BUF_C];
    const int lid = get_local_id(0);
    const int s0 = get_group_id(0) * T;
    const int nt = min(T, n - s0);
    if (nt <= 0)
        return;
    const float invm = 1.0f / (float)(n * BN_OUT_S);
    for (int j = lid; j < nt * OUT_SIZE; j += TWG) {
        const int t = j / OUT_SIZE, k = j - t * OUT_SIZE, c = k / BN_OUT_S;
        const int at = (s0 + t) * OUT_SIZE + k;
        const float inv = S[BN_OUT_STAT + BN_OUT_C + c];
        const float xhat = (S[ZOUT + at] - S[BN_OUT_STAT + c]) * inv;
        const float d = S[DYOUT + at] - (G[BN_OUT_B + c] + xhat * G[BN_OUT_G + c]) * invm;
        LOGITS[j] = P[BN_OUT_G + c] * inv * d;
    }
    BARRIER();
    BACKWARD
#if BN_IN
    bn_in_grad(bufA, nt, s0, S);
#endif
}

/* sum of v over one work-group (WG a power of two), in every work-item */
inline float bn_group_sum(__local float *red, const float v)
{
    const int l = get_local_id(0);
    red[l] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int h = WG / 2; h > 0; h >>= 1) {
        if (l < h)
            red[l] += red[l + h];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float s = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return s;
}

/* A channel's M = n * BN_OUT_S values are split into BN_OUT_SPLIT
 * contiguous parts, one work-group each (grid: BN_OUT_C * BN_OUT_SPLIT
 * groups, channel-major), so a wide batch fills the GPU rather than one
 * work-group a channel.  With more than one part each group writes its
 * partial to the stash at BN_OUT_PART, and the last group of the launch to
 * finish (an atomic count at CNT[BN_OUT_CNT], set back to 0 by it) merges
 * every channel's partials in a fixed order (the result does not depend on
 * which group finishes last). */
#if BN_OUT_SPLIT > 1
#if USE_PTX_RED
#define BN_FENCE() asm volatile("membar.gl;" ::: "memory")
#else
#define BN_FENCE() mem_fence(CLK_GLOBAL_MEM_FENCE)
#endif
/* whether this work-group is the launch's last to finish (in every work-item) */
inline int bn_last_group(__global volatile int *cnt, __local int *flag)
{
    BN_FENCE();
    barrier(CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE);
    if (get_local_id(0) == 0) {
        BN_FENCE();
        *flag = atomic_inc(cnt + BN_OUT_CNT) == BN_OUT_C * BN_OUT_SPLIT - 1;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const int last = *flag;
    if (last)
        BN_FENCE();
    return last;
}
#endif

/* this work-group's part of its channel: values lo .. hi-1 of M */
#define BN_PART(M, part, lo, hi) \
    const int bn_chunk = ((M) + BN_OUT_SPLIT - 1) / BN_OUT_SPLIT; \
    const int lo = min((int)(part) * bn_chunk, (M)), hi = min(lo + bn_chunk, (M))

/* fused_bn_stats -- work-group: (WG); grid: BN_OUT_C * BN_OUT_SPLIT groups.
 * norm.cl's bn_stats over the segment's output z at ZOUT (n samples of
 * OUT_SIZE floats, channel c's BN_OUT_S values at c * BN_OUT_S): the mean,
 * then the mean squared deviation from it (biased; over parts, each part's
 * count, mean and squared deviations merged as Chan et al.), invstd =
 * 1/sqrt(var + eps) to BN_OUT_STAT, and the running statistics moved as the
 * layer moves them: r = (1 - momentum) r + momentum * batch, the variance
 * unbiased (M / (M - 1)). */
inline void bn_stats_out(__global float *S, __global float *R, const int c, const float mu,
                         const float var, const int M, const float momentum, const float eps)
{
    S[BN_OUT_STAT + c] = mu;
    S[BN_OUT_STAT + BN_OUT_C + c] = 1.0f / sqrt(var + eps);
    R[BN_OUT_RUN + c] = (1.0f - momentum) * R[BN_OUT_RUN + c] + momentum * mu;
    R[BN_OUT_RUN + BN_OUT_C + c] = (1.0f - momentum) * R[BN_OUT_RUN + BN_OUT_C + c]
                                   + momentum * var * ((float)M / (float)(M - 1));
}

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void fused_bn_stats(const int n, __global float *S, __global float *R, const float momentum,
                    const float eps, __global int *CNT)
{
    __local float red[WG];
    const int l = get_local_id(0), c = get_group_id(0) / BN_OUT_SPLIT;
    const int M = n * BN_OUT_S;
    BN_PART(M, get_group_id(0) % BN_OUT_SPLIT, lo, hi);
    __global const float *z = S + ZOUT + c * BN_OUT_S;
    float s = 0.0f;
    for (int i = lo + l; i < hi; i += WG)
        s += z[(i / BN_OUT_S) * OUT_SIZE + i % BN_OUT_S];
    const float cnt = (float)(hi - lo);
    const float mu = bn_group_sum(red, s) / max(cnt, 1.0f);
    s = 0.0f;
    for (int i = lo + l; i < hi; i += WG) {
        const float d = z[(i / BN_OUT_S) * OUT_SIZE + i % BN_OUT_S] - mu;
        s += d * d;
    }
    const float m2 = bn_group_sum(red, s);
#if BN_OUT_SPLIT == 1
    if (l == 0)
        bn_stats_out(S, R, c, mu, m2 / (float)M, M, momentum, eps);
#else
    __local int flag;
    if (l == 0) {
        __global float *part = S + BN_OUT_PART + 3 * get_group_id(0);
        part[0] = cnt;
        part[1] = mu;
        part[2] = m2;
    }
    if (!bn_last_group(CNT, &flag))
        return;
    for (int ch = l; ch < BN_OUT_C; ch += WG) {
        __global volatile const float *part = S + BN_OUT_PART + 3 * ch * BN_OUT_SPLIT;
        float na = 0.0f, ma = 0.0f, qa = 0.0f;
        for (int k = 0; k < BN_OUT_SPLIT; k++) {
            const float nb = part[3 * k];
            if (nb == 0.0f)
                continue;
            const float mb = part[3 * k + 1], qb = part[3 * k + 2];
            const float nt = na + nb, d = mb - ma;
            ma += d * (nb / nt);
            qa += qb + d * d * (na * nb / nt);
            na = nt;
        }
        bn_stats_out(S, R, ch, ma, qa / (float)M, M, momentum, eps);
    }
    if (l == 0)
        CNT[BN_OUT_CNT] = 0;
#endif
}

/* fused_bn_reduce -- work-group: (WG); grid: BN_OUT_C * BN_OUT_SPLIT groups.
 * norm.cl's bn_bwd_reduce (the activation already applied by bn_in_grad):
 * dbeta[c] = sum dy, dgamma[c] = sum dy * xhat over the batch (parts summed
 * in order by the last group), written into G at beta's and gamma's offsets
 * (the update clears them). */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void fused_bn_reduce(const int n, __global float *S, __global float *G, __global int *CNT)
{
    __local float red[WG];
    const int l = get_local_id(0), c = get_group_id(0) / BN_OUT_SPLIT;
    const int M = n * BN_OUT_S;
    BN_PART(M, get_group_id(0) % BN_OUT_SPLIT, lo, hi);
    const float mu = S[BN_OUT_STAT + c], inv = S[BN_OUT_STAT + BN_OUT_C + c];
    float sb = 0.0f, sg = 0.0f;
    for (int i = lo + l; i < hi; i += WG) {
        const int at = (i / BN_OUT_S) * OUT_SIZE + c * BN_OUT_S + i % BN_OUT_S;
        const float g = S[DYOUT + at];
        sb += g;
        sg += g * (S[ZOUT + at] - mu) * inv;
    }
    sb = bn_group_sum(red, sb);
    sg = bn_group_sum(red, sg);
#if BN_OUT_SPLIT == 1
    if (l == 0) {
        G[BN_OUT_B + c] = sb;
        G[BN_OUT_G + c] = sg;
    }
#else
    __local int flag;
    if (l == 0) {
        __global float *part = S + BN_OUT_PART + 2 * get_group_id(0);
        part[0] = sb;
        part[1] = sg;
    }
    if (!bn_last_group(CNT, &flag))
        return;
    for (int ch = l; ch < BN_OUT_C; ch += WG) {
        __global volatile const float *part = S + BN_OUT_PART + 2 * ch * BN_OUT_SPLIT;
        float b = 0.0f, g = 0.0f;
        for (int k = 0; k < BN_OUT_SPLIT; k++) {
            b += part[2 * k];
            g += part[2 * k + 1];
        }
        G[BN_OUT_B + ch] = b;
        G[BN_OUT_G + ch] = g;
    }
    if (l == 0)
        CNT[BN_OUT_CNT] = 0;
#endif
}
#endif

#if TRAINING
/* ---------------------------------------------------- weight gradients */

/* Dense dW = X^T E (and db = column sums of E, as the row I of an input
 * with a constant 1 appended) over samples n0 .. n1-1.  Work-group: 16x16
 * work-items own a 64x64 tile of (I + bias) x O; work-item (ly, lx) sums
 * rows ly + 16a, columns lx + 16b (a, b < 4) over 16-sample chunks staged in
 * local memory, then adds its 16 sums into G. */
inline void wg_dense(const int r, const int n, __global const float *S, __global float *G,
                     __local float *xs, __local float *es,
                     const int I, const int O, const int HASB, const int NTO,
                     const int NSPLIT, const int CHUNK, const int xst, const int est,
                     const int woff, const int boff)
{
    const int split = r % NSPLIT, tile = r / NSPLIT;
    const int i0 = (tile / NTO) * 64, o0 = (tile % NTO) * 64;
    const int n0 = split * CHUNK, n1 = min(n0 + CHUNK, n);
    const int lid = get_local_id(0), lx = lid % 16, ly = lid / 16;
    const int rows = I + HASB;
    float acc[4][4];
    for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b)
            acc[a][b] = 0.0f;
    for (int nb = n0; nb < n1; nb += 16) {
        for (int j = lid; j < 16 * 64; j += WG) {
            const int k = j / 64, c = j - k * 64, s = nb + k;
            const int i = i0 + c, o = o0 + c;
            float xv = 0.0f, ev = 0.0f;
            if (s < n1) {
                if (i < I)
                    xv = S[xst + s * I + i];
                else if (i < rows)
                    xv = 1.0f;
                if (o < O)
                    ev = S[est + s * O + o];
            }
            xs[j] = xv;
            es[j] = ev;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int k = 0; k < 16; ++k) {
            float xa[4], eb[4];
            for (int a = 0; a < 4; ++a)
                xa[a] = xs[k * 64 + ly + 16 * a];
            for (int b = 0; b < 4; ++b)
                eb[b] = es[k * 64 + lx + 16 * b];
            for (int a = 0; a < 4; ++a)
                for (int b = 0; b < 4; ++b)
                    acc[a][b] += xa[a] * eb[b];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (n0 >= n1)
        return;
    for (int a = 0; a < 4; ++a) {
        const int i = i0 + ly + 16 * a;
        for (int b = 0; b < 4; ++b) {
            const int o = o0 + lx + 16 * b;
            if (o >= O || i >= rows)
                continue;
            grad_add(i < I ? G + woff + i * O + o : G + boff + o, acc[a][b]);
        }
    }
}

/* Conv dW[f, c, ky, kx] = sum over samples and pool windows of e times the
 * input under the window's arg-max (no pool: every output position), and
 * db[f] = sum of e.  Work-item unit u = tile*WG + lid owns weight row
 * (f, c, ky) = u / QS -- its KW weights, KWMAX >= KW accumulators -- over
 * windows q = u % QS, + QS, ... of samples n0 .. n1-1 (rows past
 * F*C*KH: the biases), and adds its sums into G. */
inline void wg_conv(const int r, const int n, __global const float *S, __global float *G,
                    const int C, const int H, const int W, const int F,
                    const int KH, const int KW, const int SH, const int SW,
                    const int PH, const int PW, const int CW, const int HO, const int WO,
                    const int HASB, const int QS, const int NSPLIT, const int CHUNK,
                    const int xst, const int ast, const int est,
                    const int woff, const int boff)
{
    const int split = r % NSPLIT, tile = r / NSPLIT;
    const int u = tile * WG + get_local_id(0), row = u / QS, sl = u - row * QS;
    const int rows = F * C * KH, pw = HO * WO, per = F * pw, insz = C * H * W;
    const int n0 = split * CHUNK, n1 = min(n0 + CHUNK, n);
    if (n0 >= n1 || row >= rows + (HASB ? F : 0))
        return;
    if (row >= rows) {
        const int f = row - rows;
        float acc = 0.0f;
        for (int s = n0; s < n1; ++s)
            for (int q = sl; q < pw; q += QS)
                acc += S[est + s * per + f * pw + q];
        grad_add(G + boff + f, acc);
        return;
    }
    const int f = row / (C * KH), rem = row - f * (C * KH);
    const int c = rem / KH, ky = rem - c * KH;
    float acc[KWMAX];
#pragma unroll
    for (int kx = 0; kx < KWMAX; ++kx)
        acc[kx] = 0.0f;
    for (int s = n0; s < n1; ++s) {
        __global const float *x = S + xst + s * insz + c * H * W;
        __global const float *e = S + est + s * per + f * pw;
        __global const float *am = S + ast + s * per + f * pw;
        for (int q = sl; q < pw; q += QS) {
            const int pos = ast >= 0 ? as_int(am[q]) : q;
            const int oy = pos / CW, ox = pos - oy * CW;
            const int iy = oy * SH + ky - PH;
            if (iy < 0 || iy >= H)
                continue;
            const float ev = e[q];
            __global const float *xr = x + iy * W;
            const int ix0 = ox * SW - PW;
#pragma unroll
            for (int kx = 0; kx < KWMAX; ++kx) {
                const int ix = ix0 + kx;
                if (kx < KW && ix >= 0 && ix < W)
                    acc[kx] += ev * xr[ix];
            }
        }
    }
#pragma unroll
    for (int kx = 0; kx < KWMAX; ++kx)
        if (kx < KW)
            grad_add(G + woff + row * KW + kx, acc[kx]);
}

#define WG_DENSE(g0, ng, I, O, HASB, NTO, NSPLIT, CHUNK, xst, est, woff, boff) \
    if (g >= g0 && g < g0 + ng) { \
        wg_dense(g - g0, n, S, G, xs, es, I, O, HASB, NTO, NSPLIT, CHUNK, xst, est, woff, boff); \
        return; \
    }
#define WG_CONV(g0, ng, C, H, W, F, KH, KW, SH, SW, PH, PW, CW, HO, WO, HASB, QS, NSPLIT, \
                CHUNK, xst, ast, est, woff, boff) \
    if (g >= g0 && g < g0 + ng) { \
        wg_conv(g - g0, n, S, G, C, H, W, F, KH, KW, SH, SW, PH, PW, CW, HO, WO, HASB, QS, \
                NSPLIT, CHUNK, xst, ast, est, woff, boff); \
        return; \
    }

/* fused_wgrad -- work-group: (WG); grid: the groups of every parameter
 * layer, in WGRAD's ranges.  G must hold zeros (the update clears it). */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void fused_wgrad(const int n, __global const float *S, __global float *G)
{
    __local float xs[16 * 64], es[16 * 64];
    const int g = get_group_id(0);
    WGRAD
}

/* ----------------------------------------------------------- updates */

/* fused_sgd / fused_adam / fused_rmsprop -- work-group: (WG); 1-D grid over the flat
 * buffer.  optim.cl's sgd_step / adam_step (scale 1: no clipping), the
 * per-step values first, then g[i] = 0 so that the next step's weight
 * gradients can be added into it.
 *   sgd:  g' = g + wd w;  v = momentum v + g';  w -= lr (nesterov ? g' + momentum v : v)
 *   adam: w' = decay w;  g' = g + l2 w';  m = b1 m + (1 - b1) g';
 *         v = b2 v + (1 - b2) g'^2;  w = w' - step m / (sqrt(v) inv_c2s + eps) */
__kernel void fused_sgd(const float lr, const float momentum, const int n, __global float *w,
                        __global float *g, __global float *v, const float wd,
                        const int nesterov)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    const float wi = w[i];
    const float gi = g[i] + wd * wi;
    float step = gi;
    if (momentum != 0.0f) {
        const float vi = momentum * v[i] + gi;
        v[i] = vi;
        step = nesterov ? gi + momentum * vi : vi;
    }
    w[i] = wi - lr * step;
    g[i] = 0.0f;
}

__kernel void fused_adam(const float step, const float inv_c2s, const float decay,
                         const float b1, const int n, __global float *w, __global float *g,
                         __global float *m, __global float *v, const float b2,
                         const float eps, const float l2)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    const float wi = decay * w[i];
    const float gi = g[i] + l2 * wi;
    const float mi = b1 * m[i] + (1.0f - b1) * gi;
    const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    w[i] = wi - step * mi / (sqrt(vi) * inv_c2s + eps);
    g[i] = 0.0f;
}

/* fused_rmsprop -- optim.cl's rmsprop_step (scale 1):
 *   g' = g + wd w;  s = alpha s + (1 - alpha) g'^2;  d = g' / (sqrt(s) + eps);
 *   with momentum b = momentum b + d, w -= lr b; else w -= lr d.
 * b is not touched when momentum == 0. */
__kernel void fused_rmsprop(const float lr, const float momentum, const int n,
                            __global float *w, __global float *g, __global float *sq,
                            __global float *b, const float alpha, const float eps,
                            const float wd)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    const float wi = w[i];
    const float gi = g[i] + wd * wi;
    const float si = alpha * sq[i] + (1.0f - alpha) * gi * gi;
    sq[i] = si;
    float d = gi / (sqrt(si) + eps);
    if (momentum != 0.0f) {
        d = momentum * b[i] + d;
        b[i] = d;
    }
    w[i] = wi - lr * d;
    g[i] = 0.0f;
}
#endif
