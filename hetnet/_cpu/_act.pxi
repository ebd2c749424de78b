# Activations shared by the kernel modules; codes match hetnet.devices.cpu._ACT_CODES.
from libc.math cimport expf, tanhf

cdef enum:
    ACT_IDENTITY = 0
    ACT_RELU = 1
    ACT_SIGMOID = 2
    ACT_TANH = 3


cdef inline float _act(int code, float v) noexcept nogil:
    if code == ACT_RELU:
        return v if v > 0 else 0.0
    if code == ACT_SIGMOID:
        if v >= 0:
            return 1.0 / (1.0 + expf(-v))
        return expf(v) / (1.0 + expf(v))
    if code == ACT_TANH:
        return tanhf(v)
    return v


cdef inline float _act_grad(int code, float y, float dy) noexcept nogil:
    """dy * act'(x), written in terms of the output y = act(x)."""
    if code == ACT_RELU:
        return dy if y > 0 else 0.0
    if code == ACT_SIGMOID:
        return dy * y * (1.0 - y)
    if code == ACT_TANH:
        return dy * (1.0 - y * y)
    return dy
