# cython: language_level=3
"""Launch an OpenCL kernel from C: its arguments set with ``clSetKernelArg``
and the kernel queued with ``clEnqueueNDRangeKernel``, called through
function pointers, with no event returned.

pyopencl's ``enqueue_nd_range_kernel`` builds an Event object for every
launch and its ``set_args`` converts each argument in Python: host time
that, at tens of launches a step, bounds a small network's step
(docs/performance.md, "Kernel launch").  A training step of a small convnet launches ~50 kernels and is bound by the
host's time to launch them, so hetnet's OpenCL device launches through here.

No OpenCL header or library is needed to build this: the functions'
addresses come at run time from the OpenCL loader pyopencl itself uses
(:func:`hetnet.devices.opencl.platform.entry_points`), and the kernel,
queue and buffers are pyopencl objects' ``int_ptr`` handles.
"""

from libc.stdint cimport int32_t

ctypedef int (*enqueue_fn)(void *queue, void *kernel, unsigned int work_dim,
                           const size_t *offset, const size_t *global_size,
                           const size_t *local_size, unsigned int n_wait,
                           const void *wait_list, void *event) noexcept nogil
ctypedef int (*set_arg_fn)(void *kernel, unsigned int index, size_t size,
                           const void *value) noexcept nogil

cdef enqueue_fn _enqueue = NULL
cdef set_arg_fn _set_arg = NULL

#: index of the argument whose clSetKernelArg failed in the last launch, or
#: -1 when the enqueue itself failed (read after a non-zero status)
failed_arg = -1


def bind(size_t enqueue, size_t set_arg):
    """Use ``clEnqueueNDRangeKernel`` and ``clSetKernelArg`` at these
    addresses (0, 0 unbinds)."""
    global _enqueue, _set_arg
    _enqueue = <enqueue_fn>enqueue
    _set_arg = <set_arg_fn>set_arg


def bound():
    """Whether :func:`bind` was given both addresses."""
    return _enqueue != NULL and _set_arg != NULL


def launch(size_t queue, size_t kernel, const unsigned char[:] codes, tuple args,
           global_size, local_size):
    """Set ``kernel``'s arguments and queue it on ``queue``.

    ``codes`` holds one byte per argument: ``b`` a buffer (a pyopencl
    ``MemoryObject``, or None for NULL), ``i`` an int32, ``f`` a float32.
    ``global_size`` and ``local_size`` are sequences of 1 to 3 ints, the
    same length (``local_size`` may be None: the driver chooses).  Returns
    the OpenCL status code (0 = CL_SUCCESS); on another, :data:`failed_arg`
    says which argument was refused (-1: the enqueue); the caller raises.
    """
    global failed_arg
    cdef size_t g[3]
    cdef size_t l[3]
    cdef const size_t *lp = NULL
    cdef unsigned int dim = len(global_size), i
    cdef Py_ssize_t n = len(args), j
    cdef int status
    cdef int32_t iv
    cdef float fv
    cdef void *mem
    cdef unsigned char code
    if _enqueue == NULL or _set_arg == NULL:
        raise RuntimeError("clenqueue.bind() was not called")
    if n != codes.shape[0]:
        raise ValueError(f"the kernel takes {codes.shape[0]} arguments, got {n}")
    if dim < 1 or dim > 3:
        raise ValueError(f"global_size must have 1 to 3 dimensions, got {global_size}")
    for i in range(dim):
        g[i] = global_size[i]
    if local_size is not None:
        if len(local_size) != dim:
            raise ValueError(f"local_size {local_size} does not match global_size {global_size}")
        for i in range(dim):
            l[i] = local_size[i]
        lp = l
    for j in range(n):
        code = codes[j]
        arg = args[j]
        if code == 98:                                   # b: a buffer
            mem = NULL if arg is None else <void *><size_t>arg.int_ptr
            status = _set_arg(<void *>kernel, j, sizeof(void *), &mem)
        elif code == 105:                                # i: int32
            iv = arg
            status = _set_arg(<void *>kernel, j, 4, &iv)
        elif code == 102:                                # f: float32
            fv = arg
            status = _set_arg(<void *>kernel, j, 4, &fv)
        else:
            raise ValueError(f"argument code {chr(code)!r} is not one of b, i, f")
        if status:
            failed_arg = j
            return status
    status = _enqueue(<void *>queue, <void *>kernel, dim, NULL, g, lp, 0, NULL, NULL)
    if status:
        failed_arg = -1
    return status
