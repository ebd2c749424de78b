/* Inverted dropout with a counter-based mask, float32.  The mask is a pure
 * function of (key, flat index): hetnet.devices.base.Device.dropout gives
 * the hash, which the numpy reference and the CPU kernels compute too.
 * Built after hash.cl, which supplies mix32. */

/* dropout -- work-group: (256), 1-D grid over n elements.
 * Work-item g keeps element g where (mix32(mix32(g) ^ key) >> 8) * 2^-24 >= p
 * and writes y[g] = x[g] * scale there, 0 elsewhere; y may be x.  key is
 * the unsigned 32-bit key passed as an int. */
__kernel void dropout(__global const float *x, const int offx,
                      __global float *y, const int offy,
                      const int n, const float p, const int key, const float scale)
{
    const int g = get_global_id(0);
    if (g >= n)
        return;
    const uint h = mix32(mix32((uint)g) ^ (uint)key);
    const float u = (float)(h >> 8) * 5.9604644775390625e-08f;
    y[offy + g] = u >= p ? x[offx + g] * scale : 0.0f;
}
