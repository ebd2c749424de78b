/* Batch normalisation over axis 1 of x (N, C, S), float32, with a fused
 * activation.  Built together with elementwise.cl (act_fwd, act_bwd) and
 * reduce.cl (group_sum, feature_element, RED_WG).  Offsets are in elements. */

/* bn_stats -- work-group: (RED_WG); grid: C groups, one per channel.
 * Group c reduces its channel's M = N*S values twice (the mean, then the
 * squared deviations from it: no cancellation), work-item l taking elements
 * l, l + RED_WG, ... (feature_element); work-item 0 writes mean[c],
 * invstd[c] = 1/sqrt(var + eps) (var biased) and moves the running
 * statistics: r = (1 - momentum) r + momentum * batch, the variance unbiased. */
__kernel __attribute__((reqd_work_group_size(RED_WG, 1, 1)))
void bn_stats(__global const float *x, const int offx,
              __global float *mean, const int offm,
              __global float *invstd, const int offi,
              __global float *rm, const int offrm,
              __global float *rv, const int offrv,
              const int N, const int C, const int S,
              const float momentum, const float eps)
{
    __local float red[RED_WG];
    const int l = get_local_id(0);
    const int c = get_group_id(0);
    const int M = N * S;
    float s = 0.0f;
    for (int i = l; i < M; i += RED_WG)
        s += x[offx + feature_element(i, c, C, S)];
    const float mu = group_sum(red, s) / (float)M;
    barrier(CLK_LOCAL_MEM_FENCE);      /* red[0] is read by all before it is reused */
    s = 0.0f;
    for (int i = l; i < M; i += RED_WG) {
        const float d = x[offx + feature_element(i, c, C, S)] - mu;
        s += d * d;
    }
    const float var = group_sum(red, s) / (float)M;
    if (l == 0) {
        mean[offm + c] = mu;
        invstd[offi + c] = 1.0f / sqrt(var + eps);
        rm[offrm + c] = (1.0f - momentum) * rm[offrm + c] + momentum * mu;
        rv[offrv + c] = (1.0f - momentum) * rv[offrv + c]
                        + momentum * var * ((float)M / (float)(M - 1));
    }
}

/* bn_apply -- work-group: (256), 1-D grid over the n = N*C*S elements.
 * Work-item g computes y[g] = act(gamma[c] * (x[g] - mean[c]) * invstd[c]
 * + beta[c]), c = (g / S) % C.  In inference (training = 0) the statistics
 * are the running ones, and work-items g < C also write mean[g] and
 * invstd[g] from them (for the backward pass). */
__kernel void bn_apply(__global const float *x, const int offx,
                       __global float *y, const int offy,
                       __global const float *gamma, const int offg,
                       __global const float *beta, const int offb,
                       __global float *mean, const int offm,
                       __global float *invstd, const int offi,
                       __global const float *rm, const int offrm,
                       __global const float *rv, const int offrv,
                       const int n, const int C, const int S,
                       const float eps, const int training, const int act)
{
    const int g = get_global_id(0);
    float mu, inv;
    if (!training && g < C) {
        mean[offm + g] = rm[offrm + g];
        invstd[offi + g] = 1.0f / sqrt(rv[offrv + g] + eps);
    }
    if (g >= n)
        return;
    const int c = (g / S) % C;
    if (training) {
        mu = mean[offm + c];
        inv = invstd[offi + c];
    } else {
        mu = rm[offrm + c];
        inv = 1.0f / sqrt(rv[offrv + c] + eps);
    }
    const float a = gamma[offg + c] * inv;
    y[offy + g] = act_fwd(act, (x[offx + g] - mu) * a + beta[offb + c]);
}

/* bn_bwd_reduce -- work-group: (RED_WG); grid: C groups, one per channel.
 * Group c replaces dy by g = the gradient through the activation (from the
 * output y) over its channel's elements and reduces dbeta[c] = sum g and
 * dgamma[c] = sum g * (x - mean[c]) * invstd[c].  Each element belongs to one
 * group, so the in-place write is safe. */
__kernel __attribute__((reqd_work_group_size(RED_WG, 1, 1)))
void bn_bwd_reduce(__global const float *x, const int offx,
                   __global const float *y, const int offy,
                   __global float *dy, const int offdy,
                   __global const float *mean, const int offm,
                   __global const float *invstd, const int offi,
                   __global float *dgamma, const int offdg,
                   __global float *dbeta, const int offdb,
                   const int N, const int C, const int S, const int act)
{
    __local float red[RED_WG];
    const int l = get_local_id(0);
    const int c = get_group_id(0);
    const float mu = mean[offm + c], inv = invstd[offi + c];
    float sb = 0.0f, sg = 0.0f;
    for (int i = l; i < N * S; i += RED_WG) {
        const long k = feature_element(i, c, C, S);
        const float g = act_bwd(act, y[offy + k], dy[offdy + k]);
        dy[offdy + k] = g;
        sb += g;
        sg += g * (x[offx + k] - mu) * inv;
    }
    sb = group_sum(red, sb);
    if (l == 0)
        dbeta[offdb + c] = sb;
    barrier(CLK_LOCAL_MEM_FENCE);
    sg = group_sum(red, sg);
    if (l == 0)
        dgamma[offdg + c] = sg;
}

/* bn_bwd_dx -- work-group: (256), 1-D grid over the n = N*C*S elements.
 * Work-item g computes dx[g] from g = dy[g] (already through the
 * activation): gamma invstd (g - (dbeta + xhat dgamma) / M) in training,
 * gamma invstd g in inference, xhat = (x - mean) invstd, c = (g / S) % C. */
__kernel void bn_bwd_dx(__global const float *x, const int offx,
                        __global const float *dy, const int offdy,
                        __global const float *gamma, const int offg,
                        __global const float *mean, const int offm,
                        __global const float *invstd, const int offi,
                        __global const float *dgamma, const int offdg,
                        __global const float *dbeta, const int offdb,
                        __global float *dx, const int offdx,
                        const int n, const int C, const int S, const int M,
                        const int training)
{
    const int g = get_global_id(0);
    if (g >= n)
        return;
    const int c = (g / S) % C;
    const float inv = invstd[offi + c];
    const float k = gamma[offg + c] * inv;
    float d = dy[offdy + g];
    if (training) {
        const float xhat = (x[offx + g] - mean[offm + c]) * inv;
        d -= (dbeta[offdb + c] + xhat * dgamma[offdg + c]) / (float)M;
    }
    dx[offdx + g] = k * d;
}
