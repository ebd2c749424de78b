/* Max pooling without padding, NCHW float32; arg-max as int32 flat index
 * row*W + col inside the (H, W) plane, the first maximum on ties. */

/* Output g's (n, c) plane index, returned, and the in-plane part
 * [win.s0, win.s1) x [win.s2, win.s3) (rows, then columns) of its KH x KW
 * window, which starts at (oy*SH - PH, ox*SW - PW).  Clipping the window once
 * lets the loops run without per-element bounds tests, and padding (-inf or
 * zero) then needs no reads at all. */
inline long pool_window(const long g, const int H, const int W,
                        const int KH, const int KW, const int SH, const int SW,
                        const int PH, const int PW, const int HO, const int WO,
                        int4 *win)
{
    const int ox = g % WO;
    const int oy = (g / WO) % HO;
    const int y0 = oy * SH - PH, x0 = ox * SW - PW;
    *win = (int4)(max(y0, 0), min(y0 + KH, H), max(x0, 0), min(x0 + KW, W));
    return g / ((long)HO * WO);
}

/* maxpool2d_fwd -- work-group: (256), 1-D grid over N*C*HO*WO.
 * Work-item g computes output g: scans its KH x KW window row by row and
 * keeps the first strict maximum and its position. */
__kernel void maxpool2d_fwd(__global const float *x, const int offx,
                            __global float *y, const int offy,
                            __global int *am, const int offam,
                            const int NC, const int H, const int W,
                            const int KH, const int KW, const int SH, const int SW,
                            const int HO, const int WO)
{
    const long g = get_global_id(0);
    if (g >= (long)NC * HO * WO)
        return;
    int4 win;
    const long nc = pool_window(g, H, W, KH, KW, SH, SW, 0, 0, HO, WO, &win);
    __global const float *plane = x + offx + nc * H * W;
    float best = plane[win.s0 * W + win.s2];
    int pos = win.s0 * W + win.s2;
    for (int iy = win.s0; iy < win.s1; ++iy)
        for (int ix = win.s2; ix < win.s3; ++ix) {
            const int q = iy * W + ix;
            const float v = plane[q];
            if (v > best) {
                best = v;
                pos = q;
            }
        }
    y[offy + g] = best;
    am[offam + g] = pos;
}

inline void atomic_add_global(volatile __global float *p, const float v)
{
    union { unsigned int u; float f; } old, upd;
    do {
        old.f = *p;
        upd.f = old.f + v;
    } while (atomic_cmpxchg((volatile __global unsigned int *)p, old.u, upd.u) != old.u);
}

/* maxpool2d_bwd -- work-group: (WG) one group per (n, c) plane; grid (NC*WG).
 * The group zeroes its dx plane, then each work-item routes dy entries
 * l, l + WG, ... of the plane to their arg-max position.  Windows may overlap
 * (stride < kernel), so the routing adds atomically; the op does not know the
 * window shape, so it cannot gather instead. */
__kernel void maxpool2d_bwd(__global const float *dy, const int offdy,
                            __global const int *am, const int offam,
                            __global float *dx, const int offdx,
                            const int HW, const int P)
{
    const int l = get_local_id(0), wg = get_local_size(0);
    const long nc = get_group_id(0);
    __global float *plane = dx + offdx + nc * HW;
    for (int q = l; q < HW; q += wg)
        plane[q] = 0.0f;
    barrier(CLK_GLOBAL_MEM_FENCE);
    __global const float *d = dy + offdy + nc * P;
    __global const int *a = am + offam + nc * P;
    for (int q = l; q < P; q += wg)
        atomic_add_global(plane + a[q], d[q]);
}

/* maxpool2d_pad_fwd -- work-group: (256), 1-D grid over N*C*HO*WO.
 * Max pooling with -inf padding (PH, PW at most half the window, so every
 * window holds an input value): work-item g scans the in-plane part of its
 * window row by row and keeps the first strict maximum and its flat index
 * row*W + col in the unpadded plane. */
__kernel void maxpool2d_pad_fwd(__global const float *x, const int offx,
                                __global float *y, const int offy,
                                __global int *am, const int offam,
                                const int NC, const int H, const int W,
                                const int KH, const int KW, const int SH, const int SW,
                                const int PH, const int PW, const int HO, const int WO)
{
    const long g = get_global_id(0);
    if (g >= (long)NC * HO * WO)
        return;
    int4 win;
    const long nc = pool_window(g, H, W, KH, KW, SH, SW, PH, PW, HO, WO, &win);
    __global const float *plane = x + offx + nc * H * W;
    float best = -INFINITY;
    int pos = -1;
    for (int iy = win.s0; iy < win.s1; ++iy)
        for (int ix = win.s2; ix < win.s3; ++ix) {
            const float v = plane[iy * W + ix];
            if (pos < 0 || v > best) {
                best = v;
                pos = iy * W + ix;
            }
        }
    y[offy + g] = best;
    am[offam + g] = pos;
}

/* avgpool2d_fwd -- work-group: (256), 1-D grid over N*C*HO*WO.
 * Work-item g writes the sum of its KH x KW window's in-plane values over
 * KH*KW: zero padding counted in the divisor (count_include_pad). */
__kernel void avgpool2d_fwd(__global const float *x, const int offx,
                            __global float *y, const int offy,
                            const int NC, const int H, const int W,
                            const int KH, const int KW, const int SH, const int SW,
                            const int PH, const int PW, const int HO, const int WO)
{
    const long g = get_global_id(0);
    if (g >= (long)NC * HO * WO)
        return;
    int4 win;
    const long nc = pool_window(g, H, W, KH, KW, SH, SW, PH, PW, HO, WO, &win);
    __global const float *plane = x + offx + nc * H * W;
    float s = 0.0f;
    for (int iy = win.s0; iy < win.s1; ++iy)
        for (int ix = win.s2; ix < win.s3; ++ix)
            s += plane[iy * W + ix];
    y[offy + g] = s / (float)(KH * KW);
}

/* avgpool2d_bwd -- work-group: (256), 1-D grid over N*C*H*W.
 * Work-item g gathers, for input position (iy, ix) of its plane, dy / (KH*KW)
 * of every output window covering it: oy from ceil((iy + PH - KH + 1) / SH)
 * to floor((iy + PH) / SH), clipped to [0, HO), and likewise ox.  No
 * atomics: each work-item writes its own dx element. */
__kernel void avgpool2d_bwd(__global const float *dy, const int offdy,
                            __global float *dx, const int offdx,
                            const int NC, const int H, const int W,
                            const int KH, const int KW, const int SH, const int SW,
                            const int PH, const int PW, const int HO, const int WO)
{
    const long g = get_global_id(0);
    if (g >= (long)NC * H * W)
        return;
    const int ix = g % W;
    const int iy = (g / W) % H;
    const long nc = g / ((long)H * W);
    __global const float *d = dy + offdy + nc * HO * WO;
    const int ty = iy + PH - KH + 1, tx = ix + PW - KW + 1;
    const int oy0 = max(0, ty > 0 ? (ty + SH - 1) / SH : 0);
    const int ox0 = max(0, tx > 0 ? (tx + SW - 1) / SW : 0);
    const int oy1 = min(HO - 1, (iy + PH) / SH);
    const int ox1 = min(WO - 1, (ix + PW) / SW);
    float s = 0.0f;
    for (int oy = oy0; oy <= oy1; ++oy)
        for (int ox = ox0; ox <= ox1; ++ox)
            s += d[oy * WO + ox];
    dx[offdx + g] = s / (float)(KH * KW);
}
