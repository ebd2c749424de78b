/* The backward pass between a layer's output and its GEMM, in one launch.
 * Built together with elementwise.cl (act_bwd, ACT_*) and reduce.cl
 * (group_sum, feature_element, RED_WG). */

/* act_bias_grad -- work-group: (RED_WG); grid: F groups, one per feature.
 * For y, dy (N, F, S): group f visits every (n, s) of feature f, as
 * bias_grad does; each work-item replaces dy[n, f, s] by the gradient through
 * the activation (from the output y) and adds it to a private sum; the group
 * reduces the sums in local memory and writes db[f].  Each element belongs
 * to exactly one group, so the in-place write is safe. */
__kernel __attribute__((reqd_work_group_size(RED_WG, 1, 1)))
void act_bias_grad(__global const float *y, const int offy,
                   __global float *dy, const int offdy,
                   __global float *db, const int offdb,
                   const int N, const int F, const int S, const int act)
{
    __local float red[RED_WG];
    const int l = get_local_id(0);
    const int f = get_group_id(0);
    float s = 0.0f;
    for (int i = l; i < N * S; i += RED_WG) {
        const long k = feature_element(i, f, F, S);
        const float g = act_bwd(act, y[offy + k], dy[offdy + k]);
        dy[offdy + k] = g;
        s += g;
    }
    s = group_sum(red, s);
    if (l == 0)
        db[offdb + f] = s;
}
