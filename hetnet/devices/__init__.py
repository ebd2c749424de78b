"""Devices: where the operations run.

``get_device("cpu")`` (default), ``"numpy"`` (the slow reference),
``"gpu"`` / ``"opencl"`` / ``"opencl:P:D"`` (an OpenCL device; ``P:D`` follows
the ``PYOPENCL_CTX`` convention), or a :class:`Device` instance.

``HETNET_GPU=opencl:P:D`` names the device that ``"gpu"`` (and ``"auto"``)
take as the GPU, e.g. to try the heterogeneous paths on a CPU OpenCL platform.
"""

import os
import sys
import types

from .base import Device
from .reference import NumpyDevice

_DEFAULT = {}


def get_device(spec="cpu"):
    """Resolve a device specification to a :class:`Device` (shared per spec)."""
    if isinstance(spec, Device):
        return spec
    if spec is None:
        spec = "cpu"
    if not isinstance(spec, str):
        raise ValueError(f"device must be a Device or a string like 'cpu' or 'gpu', got {spec!r}")
    key = spec.strip().lower()
    if key == "auto":
        raise ValueError("'auto' is a placement policy, not a device: pass it to the model "
                         "(Sequential(..., device='auto')), which places each layer")
    if key in _DEFAULT:
        return _DEFAULT[key]
    if key == "cpu":
        from .cpu import CPUDevice
        dev = CPUDevice()
    elif key == "numpy":
        dev = NumpyDevice()
    elif key in ("gpu", "opencl") or key.startswith("opencl:"):
        from .opencl import OpenCLDevice
        override = os.environ.get("HETNET_GPU", "").strip().lower()
        if key == "gpu" and override.startswith("opencl:"):
            dev = OpenCLDevice.from_spec(override.split(":", 1)[1])
        elif key == "gpu":
            dev = OpenCLDevice.from_spec("gpu")
        elif key == "opencl":
            dev = OpenCLDevice.from_spec(None)
        else:
            dev = OpenCLDevice.from_spec(key.split(":", 1)[1])
    else:
        raise ValueError(f"unknown device {spec!r}; expected 'cpu', 'gpu', 'opencl[:P:D]', "
                         "'numpy' or a Device")
    _DEFAULT[key] = dev
    return dev


_NO_GPU = {}


def gpu_device():
    """``(the first OpenCL GPU, None)``, or ``(None, reason)`` saying why there
    is none.  A failed search is remembered (per ``HETNET_GPU`` setting), so
    that creating models stays cheap on machines without a GPU."""
    key = os.environ.get("HETNET_GPU", "")
    if key in _NO_GPU:
        return None, _NO_GPU[key]
    try:
        return get_device("gpu"), None
    except Exception as exc:   # no pyopencl, no platform, no GPU, driver without ICD
        _NO_GPU[key] = str(exc)
        return None, str(exc)


def list_devices():
    """What this machine offers: a list of dicts (name, kind, details)."""
    from ..info import build_info
    info = build_info()
    found = [{"name": "cpu", "kind": "cpu",
              "details": f"{info['num_threads']} threads, OpenMP "
                         f"{'on' if info['openmp'] else 'off'}, BLAS {info['blas']}"}]
    try:
        from .opencl import opencl_devices
        for d in opencl_devices():
            found.append(d if isinstance(d, dict) else {"name": str(d), "kind": "opencl", "details": ""})
    except Exception as exc:  # no pyopencl, no platform: say why
        found.append({"name": "opencl", "kind": "unavailable", "details": str(exc)})
    return found


class _DevicesModule(types.ModuleType):
    """This package, callable: ``hetnet.devices()`` is :func:`list_devices`,
    while ``import hetnet.devices.opencl`` still finds the subpackage (a
    plain function bound to ``hetnet.devices`` would hide it)."""

    def __call__(self):
        return list_devices()


sys.modules[__name__].__class__ = _DevicesModule

__all__ = ["Device", "NumpyDevice", "get_device", "gpu_device", "list_devices"]
