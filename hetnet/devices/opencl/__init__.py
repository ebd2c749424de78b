"""The OpenCL device, one idea a module.

- :mod:`.platform`: finding pyopencl, platforms and devices; reading and
  building ``clkernels/*.cl``; the OpenCL loader's entry points.
- :mod:`.launch`: kernel objects and one enqueue per launch (from C where
  :mod:`._clenqueue` is built).
- :mod:`.memory`: device arrays, host <-> device copies, staging buffers.
- :mod:`.gemm`: the GEMM kernels' configurations, autotuning and dispatch.
- :mod:`.device`: :class:`OpenCLDevice`, every operation as kernels.
"""

from .device import OpenCLDevice
from .gemm import GemmConfig
from .launch import OpenCLLaunchError
from .platform import DeviceNotFoundError, PyOpenCLMissingError, opencl_devices

__all__ = ["OpenCLDevice", "DeviceNotFoundError", "PyOpenCLMissingError",
           "OpenCLLaunchError", "opencl_devices", "GemmConfig"]
