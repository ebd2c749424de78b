/* Convolution as GEMM: im2col and its adjoint col2im, NCHW float32.
 *
 * cols[n, (c*KH + i)*KW + j, oy*WO + ox] = x[n, c, oy*SH - PH + i, ox*SW - PW + j]
 * (zero outside the image); cols has C*KH*KW rows and HO*WO columns per image.
 * Offsets (in elements) let both kernels work on views into larger buffers.
 */

/* im2col -- work-group: (256), 1-D grid over N*C*KH*KW*HO*WO.
 * Work-item g writes cols element g (so writes are coalesced along the output
 * pixel) and reads the one input pixel it comes from, or writes 0. */
__kernel void im2col(__global const float *x, const int offx,
                     __global float *cols, const int offc,
                     const int N, const int C, const int H, const int W,
                     const int KH, const int KW, const int SH, const int SW,
                     const int PH, const int PW, const int HO, const int WO)
{
    const long g = get_global_id(0);
    const int P = HO * WO;
    const int R = C * KH * KW;
    if (g >= (long)N * R * P)
        return;
    const int p = g % P;
    const long nr = g / P;
    const int r = nr % R;
    const int n = nr / R;
    const int j = r % KW, i = (r / KW) % KH, c = r / (KW * KH);
    const int oy = p / WO, ox = p % WO;
    const int y = oy * SH - PH + i, xx = ox * SW - PW + j;
    float v = 0.0f;
    if (y >= 0 && y < H && xx >= 0 && xx < W)
        v = x[offx + (((long)n * C + c) * H + y) * W + xx];
    cols[offc + g] = v;
}

/* col2im -- work-group: (256), 1-D grid over N*C*H*W.
 * Work-item g owns input pixel (n, c, y, x) and gathers every column entry
 * that im2col copied from it (no atomics, deterministic order):
 * kernel offsets i with (y + PH - i) divisible by SH and 0 <= oy < HO, and
 * likewise for j. */
__kernel void col2im(__global const float *cols, const int offc,
                     __global float *x, const int offx,
                     const int N, const int C, const int H, const int W,
                     const int KH, const int KW, const int SH, const int SW,
                     const int PH, const int PW, const int HO, const int WO)
{
    const long g = get_global_id(0);
    if (g >= (long)N * C * H * W)
        return;
    const int xx = g % W;
    const int y = (g / W) % H;
    const long nc = g / ((long)H * W);
    const int c = nc % C;
    const int n = nc / C;
    const int P = HO * WO;
    __global const float *cn = cols + offc + ((long)n * C * KH * KW + (long)c * KH * KW) * P;
    float s = 0.0f;
    for (int i = 0; i < KH; ++i) {
        const int ty = y + PH - i;
        if (ty < 0 || ty % SH != 0)
            continue;
        const int oy = ty / SH;
        if (oy >= HO)
            continue;
        for (int j = 0; j < KW; ++j) {
            const int tx = xx + PW - j;
            if (tx < 0 || tx % SW != 0)
                continue;
            const int ox = tx / SW;
            if (ox >= WO)
                continue;
            s += cn[(long)(i * KW + j) * P + oy * WO + ox];
        }
    }
    x[offx + g] = s;
}
