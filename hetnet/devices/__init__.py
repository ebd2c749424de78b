"""Devices: where the operations run.

``get_device("cpu")`` (default), ``"numpy"`` (the slow reference),
``"gpu"`` / ``"opencl"`` / ``"opencl:P:D"`` (an OpenCL device; ``P:D`` follows
the ``PYOPENCL_CTX`` convention), or a :class:`Device` instance.

``HETNET_GPU=opencl:P:D`` names the device that ``"gpu"`` (and ``"auto"``)
take as the GPU, e.g. to try the heterogeneous paths on a CPU OpenCL platform.
"""

from __future__ import annotations

import os
import sys
import types

import numpy as np

from .base import Device
from .reference import NumpyDevice

#: name -> factory(option) making a Device; ``option`` is the text after
#: ``name:`` in a specification (``"opencl:0:1"`` -> ``"0:1"``), or None
_FACTORIES = {}
_DEFAULT = {}          # specification -> its Device, shared
_CPU_THREADS = {}      # thread count -> a CPU device with that many threads


def register(name, factory):
    """Make ``resolve(name)`` and ``resolve(name + ":option")`` build a device.

    Parameters
    ----------
    name : str
        The specification's name, lower case, without a colon.
    factory : callable
        ``factory(option) -> Device``; ``option`` is the text after
        ``name:`` (None without one).  Called once per specification; the
        device is then shared.
    """
    if not isinstance(name, str) or not name or ":" in name or name != name.strip().lower():
        raise ValueError(f"a device name is a lower-case word without ':', got {name!r}")
    if name == "auto":
        raise ValueError("'auto' is the model's placement policy; it cannot name a device")
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {factory!r}")
    _FACTORIES[name] = factory
    for key in [k for k in _DEFAULT if k == name or k.startswith(name + ":")]:
        del _DEFAULT[key]


def registered():
    """The names :func:`resolve` knows, in registration order."""
    return list(_FACTORIES)


def resolve(spec="cpu", num_threads=None, *, allow_auto=False, threads_param="num_threads"):
    """The one resolver of device specifications (model, CLI and estimators).

    Parameters
    ----------
    spec : str, Device or None
        A :class:`Device` (returned as is), a registered name (``"cpu"``
        (None), ``"numpy"``, ``"gpu"``, ``"opencl"``) or ``"name:option"``
        (``"opencl:P:D"``).
    num_threads : int, optional
        A CPU device with this many threads (its own instance, shared per
        count); only for ``"cpu"`` or ``"auto"``.
    allow_auto : bool
        Return the string ``"auto"`` for ``"auto"`` (the model's placement
        policy) instead of refusing it.
    threads_param : str
        The caller's name for ``num_threads``, for error messages.

    Returns
    -------
    Device, or ``"auto"``
    """
    if isinstance(spec, Device):
        if num_threads is not None:
            raise ValueError(f"{threads_param} applies to device 'cpu' only, not to {spec!r}")
        return spec
    if spec is None:
        spec = "cpu"
    if not isinstance(spec, str):
        raise ValueError(f"device must be a Device or a string like 'cpu' or 'gpu', got {spec!r}")
    key = spec.strip().lower()
    if num_threads is not None:
        if key not in ("cpu", "auto"):
            raise ValueError(f"{threads_param} applies to the CPU's thread count (device 'cpu' or "
                             f"'auto'), not to device {spec!r}")
        if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) \
                or num_threads < 1:
            raise ValueError(f"{threads_param} must be an int >= 1, got {num_threads!r}")
        n = int(num_threads)
        if n not in _CPU_THREADS:
            _CPU_THREADS[n] = _FACTORIES["cpu"](None, num_threads=n)
        return _CPU_THREADS[n]
    if key == "auto":
        if allow_auto:
            return "auto"
        raise ValueError("'auto' is a placement policy, not a device: pass it to the model "
                         "(Sequential(..., device='auto')), which places each layer")
    if key in _DEFAULT:
        return _DEFAULT[key]
    name, _, option = key.partition(":")
    factory = _FACTORIES.get(name)
    if factory is None:
        known = ", ".join(repr(n) for n in _FACTORIES)
        raise ValueError(f"unknown device {spec!r}; expected one of {known} (with ':option' for "
                         "'opencl:P:D'), or a Device")
    dev = _DEFAULT[key] = factory(option if _ else None)
    return dev


def get_device(spec: str | Device | None = "cpu") -> Device:
    """Resolve a device specification to a :class:`Device` (shared per spec);
    :func:`resolve` with its defaults."""
    return resolve(spec)


# The built-in devices.  The CPU and OpenCL modules load when first asked
# for: the CPU's needs the compiled kernels, OpenCL's needs pyopencl, and
# neither should be a cost of importing hetnet on a machine without them.
def _cpu(option, num_threads=None):
    from .cpu import CPUDevice
    return CPUDevice() if num_threads is None else CPUDevice(num_threads=num_threads)


def _numpy(option):
    return NumpyDevice()


def _opencl(option):
    from .opencl import OpenCLDevice
    return OpenCLDevice.from_spec(option)


def _gpu(option):
    override = os.environ.get("HETNET_GPU", "").strip().lower()
    if option is None and override and not override.startswith("opencl:"):
        raise ValueError(f"HETNET_GPU={os.environ['HETNET_GPU']!r} is not a device id; "
                         "expected opencl:P:D (see `hetnet devices`), or unset it")
    from .opencl import OpenCLDevice
    if option is None and override:
        return OpenCLDevice.from_spec(override.split(":", 1)[1])
    return OpenCLDevice.from_spec("gpu" if option is None else option)


register("cpu", _cpu)
register("numpy", _numpy)
register("gpu", _gpu)
register("opencl", _opencl)


_NO_GPU = {}


def gpu_device():
    """``(the first OpenCL GPU, None)``, or ``(None, reason)`` saying why there
    is none.  A failed search is remembered (per ``HETNET_GPU`` setting), so
    that creating models stays cheap on machines without a GPU."""
    key = os.environ.get("HETNET_GPU", "")
    if key.strip() and not key.strip().lower().startswith("opencl:"):
        _gpu(None)     # a malformed setting is the user's error, not "no GPU": raise it
    if key in _NO_GPU:
        return None, _NO_GPU[key]
    try:
        return get_device("gpu"), None
    except Exception as exc:   # no pyopencl, no platform, no GPU, driver without ICD
        _NO_GPU[key] = str(exc)
        return None, str(exc)


def list_devices():
    """What this machine offers: a list of dicts (name, kind, details)."""
    from .cpu import blas_description, default_num_threads, openmp_enabled
    openmp = openmp_enabled()
    found = [{"name": "cpu", "kind": "cpu",
              "details": f"{default_num_threads() if openmp else 1} threads, OpenMP "
                         f"{'on' if openmp else 'off'}, BLAS {blas_description()}"}]
    try:
        from .opencl import opencl_devices
        # (platform, device, type) in index order: the ids "opencl:P:D" count in it
        p, d, last = -1, 0, object()
        for entry in opencl_devices():
            if isinstance(entry, dict):
                found.append(entry)
                continue
            platform, name, kind = entry
            if platform != last:
                p, d, last = p + 1, 0, platform
            found.append({"name": f"opencl:{p}:{d}", "kind": f"opencl {kind}",
                          "details": f"{name} ({platform})"})
            d += 1
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

__all__ = ["Device", "NumpyDevice", "get_device", "resolve", "register", "registered",
           "gpu_device", "list_devices"]
