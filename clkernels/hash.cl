/* Counter-based hashing shared by the kernels that draw random bits without
 * stored state (dropout.cl's masks, fused.cl's epoch shuffle).  It holds no
 * kernel: a family that needs it is built with this file first, e.g.
 * ("hash.cl", "dropout.cl"). */

/* Wellons' lowbias32 finaliser (hetnet.devices.base.mix32): a bijection of
 * 32-bit words whose every output bit depends on every input bit. */
inline uint mix32(uint v)
{
    v ^= v >> 16;
    v *= 0x7FEB352Du;
    v ^= v >> 15;
    v *= 0x846CA68Bu;
    v ^= v >> 16;
    return v;
}
