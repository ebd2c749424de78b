/* Optimiser updates, in place, PyTorch's conventions, float32.
 * Offsets are in elements, so parameters may live in one flat buffer. */

/* One parameter's SGD step: returns the new w; updates *v when momentum != 0:
 *   g' = g + wd * w;  v = momentum * v + g';
 *   w -= lr * (nesterov ? g' + momentum * v : v)   (w -= lr * g' without momentum).
 * v is not touched when momentum == 0. */
inline float sgd_one(const float wi, const float g, __global float *v, const float lr,
                     const float momentum, const float wd, const int nesterov)
{
    const float gi = g + wd * wi;
    float step = gi;
    if (momentum != 0.0f) {
        const float vi = momentum * *v + gi;
        *v = vi;
        step = nesterov ? gi + momentum * vi : vi;
    }
    return wi - lr * step;
}

/* One parameter's Adam step: returns the new w; updates *m, *v:
 *   g' = g + wd * w;  m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2;
 *   w -= lr * (m / c1) / (sqrt(v / c2) + eps), with c1 = 1 - b1^t and
 *   c2 = 1 - b2^t computed on the host. */
inline float adam_one(const float wi, const float g, __global float *m, __global float *v,
                      const float lr, const float b1, const float b2, const float eps,
                      const float c1, const float c2, const float wd)
{
    const float gi = g + wd * wi;
    const float mi = b1 * *m + (1.0f - b1) * gi;
    const float vi = b2 * *v + (1.0f - b2) * gi * gi;
    *m = mi;
    *v = vi;
    return wi - lr * (mi / c1) / (sqrt(vi / c2) + eps);
}

/* sgd_step -- work-group: (256), 1-D grid over the n parameters.
 * Work-item i updates w[i] (and v[i] when momentum != 0) by sgd_one. */
__kernel void sgd_step(__global float *w, const int offw,
                       __global const float *g, const int offg,
                       __global float *v, const int offv,
                       const int n, const float lr, const float momentum,
                       const float wd, const int nesterov)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    w[offw + i] = sgd_one(w[offw + i], g[offg + i], v + offv + i, lr, momentum, wd, nesterov);
}

/* adam_step -- work-group: (256), 1-D grid over the n parameters.
 * Work-item i updates w[i], m[i], v[i] by adam_one. */
__kernel void adam_step(__global float *w, const int offw,
                        __global const float *g, const int offg,
                        __global float *m, const int offm,
                        __global float *v, const int offv,
                        const int n, const float lr, const float b1, const float b2,
                        const float eps, const float c1, const float c2, const float wd)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    w[offw + i] = adam_one(w[offw + i], g[offg + i], m + offm + i, v + offv + i,
                           lr, b1, b2, eps, c1, c2, wd);
}
