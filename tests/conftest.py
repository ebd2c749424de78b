"""Shared fixtures: the devices every operation and layer is tested on.

``cpu`` (OpenMP threads as configured), ``cpu1`` (one thread: the serial
path of every kernel) and, when pyopencl finds a platform (PoCL in CI),
``opencl``.  Each is compared with the plain numpy reference.
"""

import zlib

import numpy as np
import pytest

from hetnet.devices.cpu import CPUDevice
from hetnet.devices.reference import NumpyDevice


def working_opencl_device():
    """The OpenCL device the tests use, or None.

    ``HETNET_TEST_OPENCL="P:D"`` (or ``PYOPENCL_CTX``) picks it; otherwise the
    first device whose compiler can actually build a kernel (a platform may
    list a device it cannot compile for, as pip's PoCL does on CPUs its LLVM
    does not know).
    """
    import os
    try:
        import pyopencl as cl
        from hetnet.devices.opencl import OpenCLDevice
    except ImportError:
        return None
    spec = os.environ.get("HETNET_TEST_OPENCL") or os.environ.get("PYOPENCL_CTX")
    if spec:
        return OpenCLDevice.from_spec(spec, autotune=False)
    try:
        platforms = cl.get_platforms()
    except cl.Error:
        platforms = []
    for pi, p in enumerate(platforms):
        for di, _ in enumerate(p.get_devices()):
            try:
                dev = OpenCLDevice.from_spec((pi, di), autotune=False)
                dev.to_host(dev.sum(dev.asarray(np.ones(3))))
                return dev
            except Exception:   # noqa: BLE001 - try the next device
                continue
    return None


def _opencl_device():
    dev = working_opencl_device()
    if dev is None:
        pytest.skip("no OpenCL device that can build kernels (pip install pyopencl "
                    "pocl-binary-distribution, or apt-get install pocl-opencl-icd)")
    return dev


_CACHE = {}


def make_device(name):
    if name not in _CACHE:
        if name == "cpu":
            _CACHE[name] = CPUDevice(num_threads=2)
        elif name == "cpu1":
            _CACHE[name] = CPUDevice(num_threads=1)
        elif name == "opencl":
            _CACHE[name] = _opencl_device()
        else:
            raise KeyError(name)
    return _CACHE[name]


DEVICE_NAMES = ["cpu", "cpu1", "opencl"]


@pytest.fixture(params=DEVICE_NAMES)
def device(request):
    return make_device(request.param)


@pytest.fixture
def ref():
    return NumpyDevice()


@pytest.fixture
def rng(request):
    # a fresh, test-specific stream: every test draws its own random inputs
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def assert_close(actual, expected, rtol=1e-4, atol=1e-5, what=""):
    """Relative-norm comparison (the DESIGN's 1e-4) plus an elementwise bound."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.isfinite(actual).all(), f"{what}: non-finite values"
    denom = max(np.linalg.norm(expected), 1e-12)
    rel = np.linalg.norm(actual - expected) / denom
    assert rel <= rtol or np.allclose(actual, expected, rtol=rtol, atol=atol), \
        f"{what}: relative error {rel:.3g} > {rtol}"
