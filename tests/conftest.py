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


def _opencl_device():
    try:
        from hetnet.devices.opencl import OpenCLDevice
        return OpenCLDevice.from_spec(None)
    except Exception as exc:  # no pyopencl / no platform
        pytest.skip(f"no OpenCL device: {exc}")


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
