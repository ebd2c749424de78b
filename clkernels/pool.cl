/* Max pooling without padding, NCHW float32; arg-max as int32 flat index
 * row*W + col inside the (H, W) plane, the first maximum on ties. */

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
    const int ox = g % WO;
    const int oy = (g / WO) % HO;
    const long nc = g / ((long)HO * WO);
    __global const float *plane = x + offx + nc * H * W;
    const int y0 = oy * SH, x0 = ox * SW;
    float best = plane[y0 * W + x0];
    int pos = y0 * W + x0;
    for (int i = 0; i < KH; ++i)
        for (int j = 0; j < KW; ++j) {
            const int q = (y0 + i) * W + x0 + j;
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
