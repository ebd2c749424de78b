/* The sum closing a residual block, with its fused activation.  Built
 * together with elementwise.cl (act_fwd). */

/* add_act -- work-group: (256), 1-D grid over n elements.
 * Work-item g computes out[g] = act(a[g] + b[g]); out may be a or b. */
__kernel void add_act(__global const float *a, const int offa,
                      __global const float *b, const int offb,
                      __global float *out, const int offo,
                      const int n, const int act)
{
    const int g = get_global_id(0);
    if (g < n)
        out[offo + g] = act_fwd(act, a[offa + g] + b[offb + g]);
}
