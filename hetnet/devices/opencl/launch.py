"""Launching OpenCL kernels: kernel objects built once with their argument
types, and one enqueue per launch, from C (:mod:`hetnet.devices.opencl._clenqueue`:
arguments set and the kernel queued in one call, no event object) where that
extension is built, else through pyopencl's ``set_args`` and
``enqueue_nd_range_kernel``."""

import numpy as np

from .platform import build_program, cl, entry_points, status_name

try:
    from . import _clenqueue
except ImportError:              # the extension is not built: pyopencl enqueues
    _clenqueue = None

_F32, _I32 = np.float32, np.int32

_ARG_CODES = {"b": None, "i": _I32, "f": _F32}
_CODE_OF = {t: ord(c) for c, t in _ARG_CODES.items()}


def signature(code):
    """Argument types of a kernel from its code (``b`` buffer, ``i`` int32,
    ``f`` float32; spaces ignored), as ``set_scalar_arg_dtypes`` takes them."""
    return [_ARG_CODES[ch] for ch in code.replace(" ", "")]


class OpenCLLaunchError(RuntimeError):
    """The OpenCL driver refused to enqueue a kernel."""


def c_enqueue_available():
    """Whether kernels can be launched from C: the extension is built and
    the OpenCL loader's entry points were found (bound once per process)."""
    if _clenqueue is None:
        return False
    if not _clenqueue.bound():
        addresses = entry_points()
        if addresses is None:
            return False
        _clenqueue.bind(*addresses)
    return True


def c_enqueue_built():
    """Whether the C launcher extension is built (it may still lack the
    loader's entry points: :func:`c_enqueue_available`)."""
    return _clenqueue is not None


def make_kernel(context, filename, name, argtypes, options=()):
    """Kernel ``name`` of ``filename`` (a ``clkernels/`` source or a tuple of
    them) built with ``options``, its scalar argument types declared."""
    prg = build_program(context, filename, tuple(options))
    knl = cl.Kernel(prg, name)
    knl.set_scalar_arg_dtypes(argtypes)
    # the argument types again, one byte each, for the C launch
    knl.hetnet_codes = bytes(_CODE_OF[t] for t in argtypes)
    return knl


def enqueue(queue, knl, gsize, lsize, args, c_enqueue, queue_ptr=None):
    """Set ``args`` (buffers and scalars, in order) and enqueue ``knl`` on
    ``queue``.

    Arguments are set on every launch: keeping per-call-site kernel clones
    that hold their arguments costs more in building the lookup key than
    setting the arguments does (docs/performance.md, "kernel launch").  With
    ``c_enqueue`` both are one C call that makes no event object (nothing
    waits on a kernel's event: the queue is in order); returns the event
    otherwise, None then.
    """
    if c_enqueue:
        status = _clenqueue.launch(queue.int_ptr if queue_ptr is None else queue_ptr,
                                   knl.int_ptr, knl.hetnet_codes, args, gsize, lsize)
        if status:
            arg = _clenqueue.failed_arg
            what = (f"clSetKernelArg(argument {arg}: {args[arg]!r})" if arg >= 0
                    else f"clEnqueueNDRangeKernel(global {tuple(gsize)}, local {lsize})")
            raise OpenCLLaunchError(f"{knl.function_name}: {what} failed: "
                                    f"{status_name(status)} ({status})")
        return None
    knl.set_args(*args)
    return cl.enqueue_nd_range_kernel(queue, knl, gsize, lsize)


def round_up(n, wg):
    """``n`` work-items rounded up to a whole number of groups of ``wg`` (at least one)."""
    return max(wg, -(-n // wg) * wg)


__all__ = ["OpenCLLaunchError", "c_enqueue_available", "c_enqueue_built", "make_kernel",
           "enqueue", "round_up", "signature"]
