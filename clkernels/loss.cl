/* Fused losses: each kernel computes the gradient and the (partial) loss in
 * one pass over the predictions, float32.  Built together with reduce.cl
 * (group_sum, RED_WG).
 *
 * Shared launch shape -- work-group: (RED_WG); grid: G groups (often 1).
 * Work-item l of group g handles rows r = g*RED_WG + l, + G*RED_WG, ...:
 * it writes the row's gradient and adds the row's weighted loss to a private
 * sum; the group sums those (group_sum) and writes
 * part[offpart + g] = scale * (group sum).  With one group, ``part`` is the
 * loss itself (scale = 1/N or 1/(N*K)); with several, the host sums the
 * partials with reduce.cl's sum_partial.  Per-sample weights are optional
 * (has_w = 0: all ones; w is then any valid buffer and not read). */

#define LOSS_BCE 0
#define LOSS_MSE 1
#define LOSS_MAE 2

/* softmax_xent -- logits z (N, K), int labels (N,), grad (N, K):
 * row loss w_i * (lse_i - z[i, y_i]); grad w_i * (softmax_i - onehot_i) / N. */
__kernel __attribute__((reqd_work_group_size(RED_WG, 1, 1)))
void softmax_xent(__global const float *z, const int offz,
                  __global const int *lab, const int offlab,
                  __global const float *w, const int offw, const int has_w,
                  __global float *grad, const int offg,
                  __global float *part, const int offpart,
                  const int N, const int K, const float scale)
{
    __local float red[RED_WG];
    float acc = 0.0f;
    const float invn = 1.0f / N;
    for (int r = get_global_id(0); r < N; r += get_global_size(0)) {
        __global const float *zr = z + offz + (long)r * K;
        __global float *gr = grad + offg + (long)r * K;
        const int y = lab[offlab + r];
        const float wi = has_w ? w[offw + r] : 1.0f;
        float mx = zr[0];
        for (int k = 1; k < K; ++k)
            mx = fmax(mx, zr[k]);
        float s = 0.0f;
        for (int k = 0; k < K; ++k)
            s += exp(zr[k] - mx);
        const float lse = log(s);
        acc += wi * (lse - (zr[y] - mx));
        const float c = wi * invn, inv = 1.0f / s;
        for (int k = 0; k < K; ++k)
            gr[k] = c * (exp(zr[k] - mx) * inv - (k == y ? 1.0f : 0.0f));
    }
    acc = group_sum(red, acc);
    if (get_local_id(0) == 0)
        part[offpart + get_group_id(0)] = scale * acc;
}

/* pointwise_loss -- predictions p (N, K), float targets t (N, K); the loss
 * is a sum over elements, so one kernel serves both (mode is uniform):
 *   LOSS_BCE: p are logits, element loss log(1 + exp(-|p|)) + max(p, 0) - p*t
 *             (the stable form), gradient factor sigmoid(p) - t;
 *   LOSS_MSE: element loss (p - t)^2, gradient factor p - t;
 *   LOSS_MAE: element loss |p - t|, gradient factor sign(p - t) (0 where equal).
 * grad = gscale * w_i * factor, with gscale = 1/N (BCE), 2/(N*K) (MSE) or
 * 1/(N*K) (MAE). */
__kernel __attribute__((reqd_work_group_size(RED_WG, 1, 1)))
void pointwise_loss(__global const float *p, const int offp,
                    __global const float *tg, const int offt,
                    __global const float *w, const int offw, const int has_w,
                    __global float *grad, const int offg,
                    __global float *part, const int offpart,
                    const int N, const int K, const float scale,
                    const int mode, const float gscale)
{
    __local float red[RED_WG];
    float acc = 0.0f;
    for (int r = get_global_id(0); r < N; r += get_global_size(0)) {
        const float wi = has_w ? w[offw + r] : 1.0f;
        const float c = gscale * wi;
        float row = 0.0f;
        for (int k = 0; k < K; ++k) {
            const long q = (long)r * K + k;
            const float v = p[offp + q], t = tg[offt + q];
            float loss, factor;
            if (mode == LOSS_BCE) {
                const float e = exp(-fabs(v));
                loss = log1p(e) + fmax(v, 0.0f) - v * t;
                factor = (v >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e)) - t;
            } else if (mode == LOSS_MSE) {
                factor = v - t;
                loss = factor * factor;
            } else {
                factor = v > t ? 1.0f : (v < t ? -1.0f : 0.0f);
                loss = fabs(v - t);
            }
            row += loss;
            grad[offg + q] = c * factor;
        }
        acc += wi * row;
    }
    acc = group_sum(red, acc);
    if (get_local_id(0) == 0)
        part[offpart + get_group_id(0)] = scale * acc;
}
