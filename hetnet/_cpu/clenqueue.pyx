# cython: language_level=3
"""Enqueue an OpenCL kernel from C: ``clEnqueueNDRangeKernel`` called
through a function pointer, with no event returned.

pyopencl's ``enqueue_nd_range_kernel`` builds an Event object for every
launch; on the H100 host that call costs about 8-10 µs, against ~4 µs for
the C call itself (DESIGN.md, GPU notes).  A training step of a small
convnet launches ~55 kernels and is bound by the host's time to launch
them, so hetnet's OpenCL device enqueues through here.

No OpenCL header or library is needed to build this: the function's
address comes at run time from the OpenCL loader pyopencl itself uses
(:func:`hetnet.devices._opencl_platform.enqueue_address`), and the kernel
and queue are pyopencl objects' ``int_ptr`` handles.  Arguments are set
beforehand with pyopencl's ``Kernel.set_args``.
"""

ctypedef int (*enqueue_fn)(void *queue, void *kernel, unsigned int work_dim,
                           const size_t *offset, const size_t *global_size,
                           const size_t *local_size, unsigned int n_wait,
                           const void *wait_list, void *event) noexcept nogil

cdef enqueue_fn _enqueue = NULL


def bind(size_t address):
    """Use the ``clEnqueueNDRangeKernel`` at ``address`` (0 unbinds)."""
    global _enqueue
    _enqueue = <enqueue_fn>address


def bound():
    """Whether :func:`bind` was given an address."""
    return _enqueue != NULL


def enqueue(size_t queue, size_t kernel, global_size, local_size):
    """Queue ``kernel`` (its arguments already set) on ``queue``.

    ``global_size`` and ``local_size`` are sequences of 1 to 3 ints, the
    same length (``local_size`` may be None: the driver chooses).  Returns the
    OpenCL status code (0 = CL_SUCCESS); the caller raises on others.
    """
    cdef size_t g[3]
    cdef size_t l[3]
    cdef unsigned int dim = len(global_size), i
    if _enqueue == NULL:
        raise RuntimeError("clenqueue.bind() was not called")
    if dim < 1 or dim > 3:
        raise ValueError(f"global_size must have 1 to 3 dimensions, got {global_size}")
    for i in range(dim):
        g[i] = global_size[i]
    if local_size is None:
        return _enqueue(<void *>queue, <void *>kernel, dim, NULL, g, NULL, 0, NULL, NULL)
    if len(local_size) != dim:
        raise ValueError(f"local_size {local_size} does not match global_size {global_size}")
    for i in range(dim):
        l[i] = local_size[i]
    return _enqueue(<void *>queue, <void *>kernel, dim, NULL, g, l, 0, NULL, NULL)
