/* Optimiser updates, in place, PyTorch's conventions, float32.
 * Offsets are in elements, so parameters may live in one flat buffer.
 * Every update reads the gradient as scale * g (gradient clipping; 1 without). */

/* sgd_step -- work-group: (256), 1-D grid over the n parameters.
 * Work-item i updates w[i] (and v[i] when momentum != 0):
 *   g' = scale g + wd * w;  v = momentum * v + g';
 *   w -= lr * (nesterov ? g' + momentum * v : v)   (w -= lr * g' without momentum).
 * v is not touched when momentum == 0 (any valid buffer may be passed). */
__kernel void sgd_step(__global float *w, const int offw,
                       __global const float *g, const int offg,
                       __global float *v, const int offv,
                       const int n, const float lr, const float momentum,
                       const float wd, const int nesterov, const float scale)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    const float wi = w[offw + i];
    const float gi = scale * g[offg + i] + wd * wi;
    float step = gi;
    if (momentum != 0.0f) {
        const float vi = momentum * v[offv + i] + gi;
        v[offv + i] = vi;
        step = nesterov ? gi + momentum * vi : vi;
    }
    w[offw + i] = wi - lr * step;
}

/* adam_step -- work-group: (256), 1-D grid over the n parameters.
 * Work-item i updates w[i], m[i], v[i]:
 *   w' = decay * w (AdamW: decay = 1 - lr * wd, l2 = 0; Adam: decay = 1, l2 = wd);
 *   g' = scale g + l2 * w';  m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2;
 *   w = w' - step * m / (sqrt(v) * inv_c2s + eps), with step = lr / (1 - b1^t)
 *   and inv_c2s = 1 / sqrt(1 - b2^t) computed on the host. */
__kernel void adam_step(__global float *w, const int offw,
                        __global const float *g, const int offg,
                        __global float *m, const int offm,
                        __global float *v, const int offv,
                        const int n, const float b1, const float b2, const float eps,
                        const float step, const float inv_c2s, const float l2,
                        const float decay, const float scale)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    const float wi = decay * w[offw + i];
    const float gi = scale * g[offg + i] + l2 * wi;
    const float mi = b1 * m[offm + i] + (1.0f - b1) * gi;
    const float vi = b2 * v[offv + i] + (1.0f - b2) * gi * gi;
    m[offm + i] = mi;
    v[offv + i] = vi;
    w[offw + i] = wi - step * mi / (sqrt(vi) * inv_c2s + eps);
}

/* rmsprop_step -- work-group: (256), 1-D grid over the n parameters.
 * Work-item i updates w[i], sq[i] (and buf[i] when momentum != 0):
 *   g' = scale g + wd * w;  sq = alpha sq + (1 - alpha) g'^2;  d = g' / (sqrt(sq) + eps);
 *   with momentum buf = momentum buf + d, w -= lr * buf; else w -= lr * d.
 * buf is not touched when momentum == 0 (any valid buffer may be passed). */
__kernel void rmsprop_step(__global float *w, const int offw,
                           __global const float *g, const int offg,
                           __global float *sq, const int offs,
                           __global float *buf, const int offb,
                           const int n, const float lr, const float alpha, const float eps,
                           const float momentum, const float wd, const float scale)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    const float wi = w[offw + i];
    const float gi = scale * g[offg + i] + wd * wi;
    const float si = alpha * sq[offs + i] + (1.0f - alpha) * gi * gi;
    sq[offs + i] = si;
    float d = gi / (sqrt(si) + eps);
    if (momentum != 0.0f) {
        d = momentum * buf[offb + i] + d;
        buf[offb + i] = d;
    }
    w[offw + i] = wi - lr * d;
}
