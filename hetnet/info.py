"""What was built and how it runs: OpenMP, threads, BLAS."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from ._version import __version__


def build_info() -> dict[str, Any]:
    """A dict describing the CPU kernels' build and run-time settings.

    Keys: ``version``, ``openmp`` (compiled with OpenMP), ``num_threads``
    (threads the CPU device uses: ``HETNET_NUM_THREADS``, else
    ``OMP_NUM_THREADS``, else the CPUs available), ``blas`` (the library
    behind GEMM), ``python``, ``numpy``.
    """
    # loaded here, not with hetnet: the compiled kernels are needed only once asked about
    from .devices.cpu import blas_description, default_num_threads, openmp_enabled
    openmp = openmp_enabled()
    return {
        "version": __version__,
        "openmp": openmp,
        "num_threads": default_num_threads() if openmp else 1,
        "blas": blas_description(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
