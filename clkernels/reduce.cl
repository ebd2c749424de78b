/* Reductions: sum, row-wise arg-max, bias gradient, float32.
 * Offsets are in elements, so every kernel reads views into larger buffers.
 * loss.cl is built together with this file and uses group_sum. */

#ifndef RED_WG
#define RED_WG 256
#endif

/* Sum of v over the RED_WG work-items of the group (tree in local memory
 * red[RED_WG]); the result is valid in work-item 0. */
inline float group_sum(__local float *red, const float v)
{
    const int l = get_local_id(0);
    red[l] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int h = RED_WG / 2; h > 0; h >>= 1) {
        if (l < h)
            red[l] += red[l + h];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    return red[0];
}

/* sum_partial -- work-group: (RED_WG); grid: G groups.
 * Work-item l of group g adds x[i] for i = g*RED_WG + l, + G*RED_WG, ...;
 * the group reduces in local memory and writes out[offo + g] = scale * sum.
 * One group gives the whole sum; G > 1 leaves G partials for a second pass. */
__kernel __attribute__((reqd_work_group_size(RED_WG, 1, 1)))
void sum_partial(__global const float *x, const int offx, const int n,
                 __global float *out, const int offo, const float scale)
{
    __local float red[RED_WG];
    float s = 0.0f;
    for (int i = get_global_id(0); i < n; i += get_global_size(0))
        s += x[offx + i];
    s = group_sum(red, s);
    if (get_local_id(0) == 0)
        out[offo + get_group_id(0)] = scale * s;
}

/* sumsq_partial -- work-group: (RED_WG); grid: G groups.
 * As sum_partial, of x[i]^2 (square = 1) or of x[i] (square = 0: a second
 * pass over partials); the group's sum is written to out[offo + g], or added
 * to what it holds when accumulate = 1. */
__kernel __attribute__((reqd_work_group_size(RED_WG, 1, 1)))
void sumsq_partial(__global const float *x, const int offx, const int n,
                   __global float *out, const int offo, const int square,
                   const int accumulate)
{
    __local float red[RED_WG];
    float s = 0.0f;
    for (int i = get_global_id(0); i < n; i += get_global_size(0)) {
        const float xi = x[offx + i];
        s += square ? xi * xi : xi;
    }
    s = group_sum(red, s);
    if (get_local_id(0) == 0)
        out[offo + get_group_id(0)] = (accumulate ? out[offo + get_group_id(0)] : 0.0f) + s;
}

/* argmax_rows -- work-group: (64), 1-D grid over the N rows of x (N, K).
 * Work-item r writes the index of the first maximum of row r. */
__kernel void argmax_rows(__global const float *x, const int offx,
                          __global int *out, const int offo,
                          const int N, const int K)
{
    const int r = get_global_id(0);
    if (r >= N)
        return;
    __global const float *xr = x + offx + (long)r * K;
    float best = xr[0];
    int bi = 0;
    for (int k = 1; k < K; ++k)
        if (xr[k] > best) {
            best = xr[k];
            bi = k;
        }
    out[offo + r] = bi;
}

/* Index in an (N, F, S) array of the i-th of feature f's N*S elements
 * (i = n*S + s): consecutive i, consecutive s. */
inline long feature_element(const int i, const int f, const int F, const int S)
{
    return ((long)(i / S) * F + f) * S + i % S;
}

/* bias_grad -- work-group: (RED_WG); grid: F groups, one per feature.
 * For dy (N, F, S): group f sums dy[n, f, s] over n and s; work-item l takes
 * elements l, l + RED_WG, ... of its feature (feature_element), then the
 * group reduces in local memory and writes db[f]. */
__kernel __attribute__((reqd_work_group_size(RED_WG, 1, 1)))
void bias_grad(__global const float *dy, const int offdy,
               __global float *db, const int offdb,
               const int N, const int F, const int S)
{
    __local float red[RED_WG];
    const int l = get_local_id(0);
    const int f = get_group_id(0);
    float s = 0.0f;
    for (int i = l; i < N * S; i += RED_WG)
        s += dy[offdy + feature_element(i, f, F, S)];
    s = group_sum(red, s);
    if (l == 0)
        db[offdb + f] = s;
}
