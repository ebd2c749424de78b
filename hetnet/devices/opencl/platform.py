"""OpenCL plumbing for :mod:`hetnet.devices.opencl`: finding devices, clear
errors when none is usable, reading ``clkernels/*.cl`` and building programs
once per context.
"""

import functools
import glob
import os
import shutil
import subprocess
import threading
from pathlib import Path

try:  # pyopencl is optional: the rest of hetnet runs without it
    import pyopencl as cl
except ImportError as exc:  # pragma: no cover - depends on the environment
    cl = None
    _IMPORT_ERROR = exc
else:
    _IMPORT_ERROR = None

NVIDIA_ICD = "/etc/OpenCL/vendors/nvidia.icd"
NVIDIA_ICD_FIX = ("mkdir -p /etc/OpenCL/vendors && "
                  "echo libnvidia-opencl.so.1 > /etc/OpenCL/vendors/nvidia.icd")


class PyOpenCLMissingError(ImportError):
    """pyopencl is not installed, so no OpenCL device can be used."""


class DeviceNotFoundError(RuntimeError):
    """No OpenCL platform or device matches the request."""


def require_pyopencl():
    """Return the ``pyopencl`` module or raise :class:`PyOpenCLMissingError`."""
    if cl is None:
        raise PyOpenCLMissingError(
            "hetnet's OpenCL device needs pyopencl, which is not installed "
            f"({_IMPORT_ERROR}). Install it with `pip install pyopencl`; for an "
            "OpenCL platform on the CPU (no GPU needed) also "
            "`pip install pocl-binary-distribution`.")
    return cl


# ------------------------------------------------------------------ discovery
def _nvidia_library_without_icd():
    """Path of libnvidia-opencl.so.1 when the driver library is present but
    its ICD file is not registered (common in containers), else None."""
    if os.path.exists(NVIDIA_ICD):
        return None
    patterns = ["/usr/lib*/libnvidia-opencl.so.1", "/usr/lib*/*/libnvidia-opencl.so.1",
                "/usr/local/nvidia/lib*/libnvidia-opencl.so.1"]
    for pat in patterns:
        hits = glob.glob(pat)
        if hits:
            return hits[0]
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True,
                             timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if "libnvidia-opencl.so" in line:
            return line.split("=>")[-1].strip()
    return None


def _nvidia_hint():
    lib = _nvidia_library_without_icd()
    if lib is None:
        return ""
    return (f" The NVIDIA OpenCL driver library is present ({lib}) but its ICD "
            f"is not registered: {NVIDIA_ICD} is missing. Register it with "
            f"`{NVIDIA_ICD_FIX}` (as root) and try again.")


def get_platforms():
    """All OpenCL platforms; raises :class:`DeviceNotFoundError` if none."""
    require_pyopencl()
    try:
        platforms = cl.get_platforms()
    except (cl.LogicError, cl.RuntimeError) as exc:
        platforms, err = [], exc
    else:
        err = None
    if not platforms:
        raise DeviceNotFoundError(
            "No OpenCL platform found"
            + (f" ({err})" if err is not None else "") + "." + _nvidia_hint()
            + " For a CPU OpenCL platform install `pip install "
            "pocl-binary-distribution`; for a GPU install its vendor's OpenCL "
            "driver.")
    return platforms


def device_type_name(dev):
    """``"gpu"``, ``"cpu"``, ``"accelerator"`` or ``"other"``."""
    t = dev.type
    if t & cl.device_type.GPU:
        return "gpu"
    if t & cl.device_type.CPU:
        return "cpu"
    if t & cl.device_type.ACCELERATOR:
        return "accelerator"
    return "other"


def opencl_devices():
    """List the OpenCL devices of this machine.

    Returns
    -------
    list of tuple
        ``(platform_name, device_name, type)`` with type ``"gpu"``, ``"cpu"``,
        ``"accelerator"`` or ``"other"``, in platform/device index order (the
        order ``PYOPENCL_CTX="p:d"`` counts in).  Empty when there is no
        platform.
    """
    require_pyopencl()
    try:
        platforms = get_platforms()
    except DeviceNotFoundError:
        return []
    return [(p.name.strip(), d.name.strip(), device_type_name(d))
            for p in platforms for d in p.get_devices()]


def _describe(platforms):
    lines = []
    for i, p in enumerate(platforms):
        for j, d in enumerate(p.get_devices()):
            lines.append(f"  {i}:{j}  {p.name.strip()} / {d.name.strip()} "
                         f"({device_type_name(d)})")
    return "\n".join(lines) or "  (none)"


def _parse_indices(text):
    parts = [s for s in str(text).split(":")]
    try:
        if len(parts) == 1 and parts[0] != "":
            return int(parts[0]), 0
        if len(parts) == 2:
            return int(parts[0]), (int(parts[1]) if parts[1] != "" else 0)
    except ValueError:
        pass
    return None


def _default_device():
    """The first GPU; else, unless an NVIDIA driver sits unregistered (then
    raise: the user has a GPU that OpenCL cannot see), the first device."""
    platforms = get_platforms()
    devices = [d for p in platforms for d in p.get_devices()]
    for d in devices:
        if device_type_name(d) == "gpu":
            return d
    hint = _nvidia_hint()
    if hint or not devices:
        raise DeviceNotFoundError(
            "No OpenCL GPU device found." + hint + " OpenCL devices present:\n"
            + _describe(platforms))
    return devices[0]


def find_device(spec=None):
    """Resolve a device specification to a ``pyopencl.Device``.

    Parameters
    ----------
    spec : None, str, tuple or pyopencl.Device
        ``None``: ``$PYOPENCL_CTX`` if set, else the first GPU, else (when no
        NVIDIA driver sits there unregistered) the first device of any type,
        as pyopencl's own default.  ``"gpu"`` /
        ``"cpu"``: the first device of that type.  ``"p:d"`` or ``"p"`` or
        ``(p, d)``: platform ``p``, device ``d`` (pyopencl's ``PYOPENCL_CTX``
        convention).  A leading ``"opencl:"`` is ignored.

    Raises
    ------
    DeviceNotFoundError
        If nothing matches; the message lists the devices present and, when
        the NVIDIA driver is installed without its ICD file, how to register
        it.  There is never a silent fall-back to another device.
    """
    require_pyopencl()
    if isinstance(spec, cl.Device):
        return spec
    if spec is None:
        spec = os.environ.get("PYOPENCL_CTX") or None
    if spec is None:
        return _default_device()
    if isinstance(spec, str):
        spec = spec.strip()
        if spec.lower().startswith("opencl"):
            spec = spec[len("opencl"):].lstrip(":") or "gpu"
    platforms = get_platforms()
    if isinstance(spec, str) and spec.lower() in ("gpu", "cpu", "accelerator"):
        want = spec.lower()
        for p in platforms:
            for d in p.get_devices():
                if device_type_name(d) == want:
                    return d
        hint = _nvidia_hint() if want == "gpu" else ""
        raise DeviceNotFoundError(
            f"No OpenCL {want.upper()} device found.{hint} OpenCL devices present:\n"
            + _describe(platforms))
    idx = tuple(spec) if isinstance(spec, (tuple, list)) else _parse_indices(spec)
    if idx is None or len(idx) != 2:
        raise ValueError(
            f"OpenCL device spec {spec!r} not understood; expected None, 'gpu', "
            "'cpu', 'P:D' (platform:device indices, as PYOPENCL_CTX) or (P, D).")
    pi, di = int(idx[0]), int(idx[1])
    if not 0 <= pi < len(platforms) or not 0 <= di < len(platforms[pi].get_devices()):
        raise DeviceNotFoundError(
            f"No OpenCL device {pi}:{di}." + _nvidia_hint()
            + " OpenCL devices present:\n" + _describe(platforms))
    return platforms[pi].get_devices()[di]


# ------------------------------------------------------------------ launching
def _loader_paths():
    """Paths of the OpenCL loader: the one mapped into this process (the
    library pyopencl was linked with, read from /proc/self/maps on Linux)
    first, then the system's."""
    paths = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split(None, 5)[-1].strip()
                if "libOpenCL" in os.path.basename(path) and path not in paths:
                    paths.append(path)
    except OSError:
        pass
    import ctypes.util
    system = ctypes.util.find_library("OpenCL")
    if system:
        paths.append(system)
    return paths


_ENTRY_POINTS = {}


def entry_points():
    """Addresses of ``clEnqueueNDRangeKernel`` and ``clSetKernelArg`` in the
    OpenCL loader pyopencl uses, as a tuple, or None where they cannot be
    found (then kernels are launched through pyopencl).  OpenCL objects
    carry their driver's dispatch table, so the loader's entry points work
    on pyopencl's kernel, queue and buffer handles."""
    require_pyopencl()
    if "addresses" not in _ENTRY_POINTS:
        import ctypes
        addresses = None
        for path in _loader_paths():
            try:
                lib = ctypes.CDLL(path)
                addresses = tuple(ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
                                  for name in ("clEnqueueNDRangeKernel", "clSetKernelArg"))
            except (OSError, AttributeError):
                continue
            break
        _ENTRY_POINTS["addresses"] = addresses
    return _ENTRY_POINTS["addresses"]


@functools.cache
def _status_names():
    require_pyopencl()
    return {v: k for k, v in vars(cl.status_code).items()
            if isinstance(v, int) and not k.startswith("_")}


def status_name(code):
    """OpenCL's name of a status code (``-54`` -> ``INVALID_WORK_GROUP_SIZE``)."""
    return _status_names().get(code, "unknown status")


# ------------------------------------------------------------------- programs
def _kernel_dir():
    """Where ``clkernels/`` is read from: the installed package
    ``hetnet.clkernels`` (a traversable resource), else the source
    checkout's ``clkernels/`` folder."""
    try:
        from importlib.resources import files
        package = files("hetnet.clkernels")
        if any(f.name.endswith(".cl") for f in package.iterdir()):
            return package
    except (ImportError, FileNotFoundError, TypeError, OSError):
        pass
    return Path(__file__).resolve().parents[3] / "clkernels"      # hetnet/devices/opencl/ -> root


def kernel_source(name):
    """Text of ``clkernels/<name>`` (from :func:`_kernel_dir`)."""
    return _kernel_dir().joinpath(name).read_text()


def kernel_names():
    """The ``.cl`` files of ``clkernels/``, sorted."""
    return sorted(f.name for f in _kernel_dir().iterdir() if f.name.endswith(".cl"))


_PROGRAMS = {}
_PROGRAMS_LOCK = threading.Lock()


def build_program(ctx, filename, options=()):
    """Build ``clkernels/<filename>`` for ``ctx`` with ``-D`` options, once.

    ``filename`` may be a tuple of files built as one program, in order (a
    family that uses another's helpers).  Programs are cached per process,
    keyed by context, files and options.
    """
    key = (ctx.int_ptr, filename, tuple(options))
    with _PROGRAMS_LOCK:
        hit = _PROGRAMS.get(key)
        if hit is not None:
            return hit[1]
    names = (filename,) if isinstance(filename, str) else filename
    source = "\n".join(kernel_source(name) for name in names)
    prg = cl.Program(ctx, source).build(options=list(options))
    with _PROGRAMS_LOCK:
        # keep the context alive with its programs so the key stays unique
        _PROGRAMS.setdefault(key, (ctx, prg))
        return _PROGRAMS[key][1]
