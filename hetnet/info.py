"""What was built and how it runs: OpenMP, threads, BLAS."""

import platform

import numpy as np


def build_info():
    """A dict describing the CPU kernels' build and run-time settings.

    Keys: ``version``, ``openmp`` (compiled with OpenMP), ``num_threads``
    (threads the CPU device uses: ``HETNET_NUM_THREADS``, else
    ``OMP_NUM_THREADS``, else the CPUs available), ``blas`` (the library
    behind GEMM), ``python``, ``numpy``.
    """
    from . import __version__
    from ._cpu import blas
    from .devices.cpu import default_num_threads, _scipy_blas_controller

    ctl = _scipy_blas_controller()
    blas_desc = "unknown"
    if ctl is not None:
        arch = getattr(ctl, "architecture", None)
        blas_desc = f"{ctl.internal_api} {ctl.version}" + (f" ({arch})" if arch else "")
    return {
        "version": __version__,
        "openmp": blas.openmp_enabled(),
        "num_threads": default_num_threads() if blas.openmp_enabled() else 1,
        "blas": blas_desc,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
