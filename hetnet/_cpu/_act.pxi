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


cdef inline void _bias_act_run(float *x, const float *b, float bias, Py_ssize_t n,
                               int code) noexcept nogil:
    """x[j] = act(x[j] + (b[j] if b else bias)) over a contiguous run; one
    loop per activation so that the compiler can vectorise each."""
    cdef Py_ssize_t j
    cdef float v
    if b != NULL:
        if code == ACT_RELU:
            for j in range(n):
                v = x[j] + b[j]
                x[j] = v if v > 0 else 0.0
        elif code == ACT_IDENTITY:
            for j in range(n):
                x[j] = x[j] + b[j]
        else:
            for j in range(n):
                x[j] = _act(code, x[j] + b[j])
    else:
        if code == ACT_RELU:
            for j in range(n):
                v = x[j] + bias
                x[j] = v if v > 0 else 0.0
        elif code == ACT_IDENTITY:
            for j in range(n):
                x[j] = x[j] + bias
        else:
            for j in range(n):
                x[j] = _act(code, x[j] + bias)


cdef inline void _act_grad_inplace(const float *y, float *g, Py_ssize_t n,
                                   int code) noexcept nogil:
    """g[j] *= act'(from y[j]), in place.  Its own loop: with dx == dy the
    compiler's overlap check would send the three-pointer loop down its
    scalar path."""
    cdef Py_ssize_t j
    if code == ACT_RELU:
        for j in range(n):
            g[j] = g[j] if y[j] > 0 else 0.0
    elif code == ACT_SIGMOID:
        for j in range(n):
            g[j] = g[j] * y[j] * (1.0 - y[j])
    elif code == ACT_TANH:
        for j in range(n):
            g[j] = g[j] * (1.0 - y[j] * y[j])


cdef inline void _act_grad_run(const float *y, const float *dy, float *dx, Py_ssize_t n,
                               int code) noexcept nogil:
    """dx[j] = dy[j] * act'(from y[j]) over a contiguous run (dx may be dy)."""
    cdef Py_ssize_t j
    if dx == dy:
        _act_grad_inplace(y, dx, n, code)
        return
    if code == ACT_RELU:
        for j in range(n):
            dx[j] = dy[j] if y[j] > 0 else 0.0
    elif code == ACT_SIGMOID:
        for j in range(n):
            dx[j] = dy[j] * y[j] * (1.0 - y[j])
    elif code == ACT_TANH:
        for j in range(n):
            dx[j] = dy[j] * (1.0 - y[j] * y[j])
    else:
        for j in range(n):
            dx[j] = dy[j]
