/* Elementwise kernels: bias, activations and their gradients, axpy, scale.
 * Activation codes (ACT_*) are runtime arguments: the branch is uniform over
 * the launch, so one kernel serves every activation.  Offsets are in
 * elements, so every kernel accepts views into larger buffers. */

#define ACT_IDENTITY 0
#define ACT_RELU 1
#define ACT_SIGMOID 2
#define ACT_TANH 3

inline float act_fwd(const int act, const float v)
{
    switch (act) {
    case ACT_RELU: return fmax(v, 0.0f);
    case ACT_SIGMOID: return 1.0f / (1.0f + exp(-v));
    case ACT_TANH: return tanh(v);
    default: return v;
    }
}

/* Gradient from the activation's output y. */
inline float act_bwd(const int act, const float y, const float dy)
{
    switch (act) {
    case ACT_RELU: return y > 0.0f ? dy : 0.0f;
    case ACT_SIGMOID: return dy * y * (1.0f - y);
    case ACT_TANH: return dy * (1.0f - y * y);
    default: return dy;
    }
}

/* bias_act -- work-group: (256), 1-D grid over the n elements of y (N, F, S).
 * Work-item g computes y[g] = act(y[g] + b[(g / S) % F]) in place; act =
 * ACT_IDENTITY gives the plain bias add. */
__kernel void bias_act(__global float *y, const int offy,
                       __global const float *b, const int offb,
                       const int n, const int F, const int S, const int act)
{
    const int g = get_global_id(0);
    if (g >= n)
        return;
    const int f = (g / S) % F;
    y[offy + g] = act_fwd(act, y[offy + g] + b[offb + f]);
}

/* activation_fwd -- work-group: (256), 1-D grid over n elements.
 * Work-item g computes y[g] = act(x[g]); y may be x. */
__kernel void activation_fwd(__global const float *x, const int offx,
                             __global float *y, const int offy,
                             const int n, const int act)
{
    const int g = get_global_id(0);
    if (g < n)
        y[offy + g] = act_fwd(act, x[offx + g]);
}

/* activation_bwd -- work-group: (256), 1-D grid over n elements.
 * Work-item g computes dx[g] from the output y[g] and dy[g]. */
__kernel void activation_bwd(__global const float *y, const int offy,
                             __global const float *dy, const int offdy,
                             __global float *dx, const int offdx,
                             const int n, const int act)
{
    const int g = get_global_id(0);
    if (g < n)
        dx[offdx + g] = act_bwd(act, y[offy + g], dy[offdy + g]);
}

/* softmax_fwd -- work-group: (64), 1-D grid over the N rows of x (N, K).
 * Work-item r computes the stable softmax of row r (max, sum of exp, scale). */
__kernel void softmax_fwd(__global const float *x, const int offx,
                          __global float *y, const int offy,
                          const int N, const int K)
{
    const int r = get_global_id(0);
    if (r >= N)
        return;
    __global const float *xr = x + offx + (long)r * K;
    __global float *yr = y + offy + (long)r * K;
    float mx = xr[0];
    for (int k = 1; k < K; ++k)
        mx = fmax(mx, xr[k]);
    float s = 0.0f;
    for (int k = 0; k < K; ++k) {
        const float e = exp(xr[k] - mx);
        yr[k] = e;
        s += e;
    }
    const float inv = 1.0f / s;
    for (int k = 0; k < K; ++k)
        yr[k] *= inv;
}

/* softmax_bwd -- work-group: (64), 1-D grid over the N rows.
 * Work-item r computes dx = y * (dy - sum(dy * y)) for row r. */
__kernel void softmax_bwd(__global const float *y, const int offy,
                          __global const float *dy, const int offdy,
                          __global float *dx, const int offdx,
                          const int N, const int K)
{
    const int r = get_global_id(0);
    if (r >= N)
        return;
    __global const float *yr = y + offy + (long)r * K;
    __global const float *dr = dy + offdy + (long)r * K;
    __global float *xr = dx + offdx + (long)r * K;
    float s = 0.0f;
    for (int k = 0; k < K; ++k)
        s += dr[k] * yr[k];
    for (int k = 0; k < K; ++k)
        xr[k] = yr[k] * (dr[k] - s);
}

/* axpy -- work-group: (256), 1-D grid over n elements.
 * Work-item g computes y[g] += alpha * x[g]. */
__kernel void axpy(const float alpha, __global const float *x, const int offx,
                   __global float *y, const int offy, const int n)
{
    const int g = get_global_id(0);
    if (g < n)
        y[offy + g] += alpha * x[offx + g];
}

/* scale -- work-group: (256), 1-D grid over n elements.
 * Work-item g computes x[g] *= alpha. */
__kernel void scale(const float alpha, __global float *x, const int offx, const int n)
{
    const int g = get_global_id(0);
    if (g < n)
        x[offx + g] *= alpha;
}

/* swap_leading_axes -- work-group: (256), 1-D grid over A*B*K elements.
 * x is (A, B, K), y is (B, A, K); work-item g writes y element g = (b, a, k)
 * (writes coalesced along k) and reads x element (a, b, k). */
__kernel void swap_leading_axes(__global const float *x, const int offx,
                                __global float *y, const int offy,
                                const int A, const int B, const int K)
{
    const long g = get_global_id(0);
    if (g >= (long)A * B * K)
        return;
    const int k = g % K;
    const long ba = g / K;
    const int a = ba % A;
    const int b = ba / A;
    y[offy + g] = x[offx + ((long)a * B + b) * K + k];
}
