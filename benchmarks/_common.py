"""What every benchmark shares: the record of the machine it ran on, the
machine's short name, where its results go, and the CUDA graph capture of
the PyTorch baselines.

A benchmark script runs as ``python benchmarks/bench_<name>.py``; Python puts
the script's folder first on ``sys.path``, so ``from _common import ...``
finds this module with no path edits (hetnet itself comes from an install,
or from ``PYTHONPATH=.`` after ``python setup.py build_ext --inplace``).

Results are one file per benchmark and machine:

- ``benchmarks/local/<benchmark>/<machine>.json`` by default: a user's run,
  in a folder git ignores;
- ``benchmarks/results/<benchmark>/<machine>.json`` with ``--record``: the
  committed result, replaced by each recorded run (git keeps the history).

``<machine>`` is ``--machine`` where given, else the short name of the
machine's OpenCL GPU (``h100`` for an "NVIDIA H100 80GB HBM3") or, without
one, ``cpu<cores available>``.
"""

import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LOCAL = HERE / "local"

#: environment variables that change what a benchmark measures, recorded with it
ENV_PREFIXES = ("OPENBLAS_", "OMP_", "HETNET_", "MKL_", "PYOPENCL_", "MALLOC_")

# words in GPU names that say nothing about which GPU it is
_VENDOR_WORDS = {"nvidia", "amd", "intel", "intel(r)", "tesla", "geforce", "radeon", "corporation",
                 "(tm)", "graphics"}


def _cpuinfo():
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model():
    return _cpuinfo().get("model name") or platform.processor() or "unknown"


def cpu_id():
    """Family, model, stepping, microcode and cache size of the CPU: a
    virtual machine's model name ("AMD EPYC") does not tell two CPU
    generations apart, and a result measured on one need not hold on the
    other."""
    info = _cpuinfo()
    return {k.replace(" ", "_"): info[k] for k in ("vendor_id", "cpu family", "model", "stepping",
                                                   "microcode", "cache size") if k in info}


def cores_available():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def blas_info():
    """The BLAS libraries loaded, with the kernel (architecture) each chose."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{k: d.get(k) for k in ("filepath", "internal_api", "version", "architecture",
                                   "num_threads")}
            for d in threadpool_info() if d.get("user_api") == "blas"]


def opencl_info(dev):
    """The OpenCL device behind hetnet device ``dev``: name, driver, platform, size."""
    import pyopencl as cl
    d = dev.cl_device
    return {"device": d.name.strip(), "type": cl.device_type.to_string(d.type),
            "driver": d.driver_version,
            "device_version": d.version, "platform": d.platform.name.strip(),
            "platform_version": d.platform.version, "compute_units": d.max_compute_units,
            "max_clock_mhz": d.max_clock_frequency, "local_mem_bytes": d.local_mem_size,
            "global_mem_bytes": d.global_mem_size, "hetnet_name": dev.name}


def machine(dev=None):
    """The record of the machine a benchmark ran on: CPU model and id, cores
    available, the BLAS libraries loaded and the kernel each chose, the
    environment variables that steer them, hetnet's build, and the GPU and
    its driver (``dev``, a hetnet OpenCL device, where the benchmark used
    one; else every OpenCL GPU present).  Call it after the measurements:
    the BLAS libraries are loaded by then."""
    import numpy as np
    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_id": cpu_id(),
        "cpus_available": cores_available(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas_libraries": blas_info(),
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)},
    }
    try:
        import hetnet
        info["hetnet"] = hetnet.build_info()
    except Exception as exc:  # a benchmark of something else
        info["hetnet"] = f"unavailable: {exc}"
    if dev is not None:
        info["gpu"] = opencl_info(dev)
    else:
        info["gpus"] = opencl_gpus()
    return info


def opencl_gpus():
    """(name, driver) of every OpenCL GPU present; empty without pyopencl."""
    try:
        import pyopencl as cl
        return [{"device": d.name.strip(), "driver": d.driver_version,
                 "platform": p.name.strip()}
                for p in cl.get_platforms() for d in p.get_devices()
                if d.type & cl.device_type.GPU]
    except Exception:   # no pyopencl, no ICD loader, no platform: no GPU to name
        return []


def short_gpu_name(name):
    """"NVIDIA H100 80GB HBM3" -> "h100", "NVIDIA GeForce RTX 4090" -> "rtx-4090"."""
    words = [w for w in name.lower().split() if w not in _VENDOR_WORDS]
    picked = []
    for w in words:
        picked.append(w)
        if any(c.isdigit() for c in w):
            break
    return re.sub(r"[^a-z0-9]+", "-", "-".join(picked)).strip("-") or "gpu"


def machine_name(record=None):
    """The machine's short name: the first GPU's (in ``record`` from
    :func:`machine`, else probed) or ``cpu<cores>``."""
    if record is None:
        gpus = opencl_gpus()
    elif "gpu" in record:           # the OpenCL device the benchmark used: named if a GPU
        gpus = [record["gpu"]] if "GPU" in record["gpu"].get("type", "GPU") else []
    else:
        gpus = record.get("gpus", [])
    if gpus:
        return short_gpu_name(gpus[0]["device"])
    return f"cpu{cores_available()}"


def add_output_args(parser):
    """``--record`` and ``--machine``, the same for every benchmark."""
    parser.add_argument("--record", action="store_true",
                        help="write the committed result, benchmarks/results/<benchmark>/"
                             "<machine>.json (default: benchmarks/local/, which git ignores)")
    parser.add_argument("--machine", default=None,
                        help="the machine's name in the results path (default: the GPU's "
                             "short name, e.g. h100, or cpu<cores>)")
    parser.add_argument("--out", default=None, metavar="PATH",
                        help="write the result to PATH instead (e.g. one side of a "
                             "before/after comparison)")
    return parser


def output_path(benchmark, args, record=None):
    """Where this run's result goes: see the module docstring."""
    if getattr(args, "out", None):
        return Path(args.out)
    root = RESULTS if args.record else LOCAL
    name = args.machine or machine_name(record)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise SystemExit(f"--machine {name!r}: expected letters, digits, '.', '_' or '-'")
    return root / benchmark / f"{name}.json"


def provenance():
    """When and from which commit and command a result was made."""
    try:
        commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        # a result file rewritten in place (a re-run with --record) is not a change
        # to the code that made it
        dirty = subprocess.run(["git", "-C", str(HERE), "status", "--porcelain",
                                "--untracked-files=no", "--", ":/",
                                ":(top,exclude)benchmarks/results"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    return {"utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": (commit + ("+changes" if dirty else "")) or None,
            "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])}


def write_results(results, benchmark, args, indent=2):
    """Write ``results`` (with :func:`provenance` under ``"made"``) to
    :func:`output_path`, say where, and return the path."""
    record = results.get("machine") if isinstance(results.get("machine"), dict) else None
    out = output_path(benchmark, args, record)
    results = {"benchmark": benchmark, **results, "made": provenance()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=indent) + "\n")
    print(f"written {out}")
    return out


def run_without_openblas_pins(keep=False):
    """Re-run this script without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (which
    pin OpenBLAS to a slower kernel on some machines) unless ``keep``; the
    kernel that ran is recorded by :func:`blas_info` either way."""
    pinned = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ]
    if pinned and not keep:
        env = {k: v for k, v in os.environ.items() if k not in pinned}
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


def capture_cuda_graph(step, warmup=3):
    """``step`` (a function of no arguments issuing CUDA work) captured in a
    ``torch.cuda.CUDAGraph``, after ``warmup`` calls on a side stream (CUDA
    graph capture needs the allocator and cuBLAS warmed up off the capturing
    stream); returns the graph, to ``replay()``."""
    import torch
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph


ALLREDUCE_CALLS = 300


def allreduce_alone(ctx, size, nonblocking, calls=ALLREDUCE_CALLS, weight=None,
                    transport="mpi", threads=None):
    """µs per averaging of ``size`` floats on host memory by hetnet's
    ``GradientAverager`` (``transport="mpi"``: blocking ``Allreduce`` or
    ``Iallreduce``; ``"shm"``: the shared-memory window, its passes over
    ``threads`` threads, None: the averager's default), ranks in step: the
    slowest rank's mean over ``calls`` calls, after 20 untimed."""
    import numpy as np
    from hetnet.distributed import GradientAverager
    g = np.ones(size, dtype=np.float32)
    avg = GradientAverager(ctx, nonblocking=nonblocking, transport=transport, threads=threads)
    if weight is not None:
        avg.set_weight(weight)
    for _ in range(20):
        avg.average([(ctx.device, g)])
    ctx.barrier()
    t0 = time.perf_counter()
    for _ in range(calls):
        avg.average([(ctx.device, g)])
    mine = np.array([(time.perf_counter() - t0) / calls * 1e6])
    avg.close()
    return float(ctx.allgather(mine).max())


def mpirun_launcher(ranks, what, bind=None, extra=()):
    """``mpirun`` with the flags ``ranks`` processes need on this host: ``--oversubscribe``
    when there are more ranks than cores (Open MPI then yields the core at
    every poll), ``--allow-run-as-root`` as root; ``bind`` (e.g. ``"none"``)
    as ``--bind-to``, ``extra`` appended (MCA settings); the caller adds
    ``-n``.  ``what`` names the benchmark in the error when there is no
    mpirun."""
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        raise SystemExit(f"{what}: no mpirun (apt-get install openmpi-bin libopenmpi-dev; "
                         "pip install mpi4py)")
    launcher = [mpirun]
    if bind is not None:
        launcher += ["--bind-to", bind]
    if ranks > cores_available():
        launcher.append("--oversubscribe")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        launcher.append("--allow-run-as-root")
    return launcher + list(extra)


def run_worker(cmd, what, timeout=1800, env=None):
    """Run a benchmark's worker command (its own script under ``mpirun`` or
    alone) with this checkout first on ``PYTHONPATH`` and ``env``'s
    variables set, and return the JSON of its last ``RESULT `` line; a
    failure or no result ends the benchmark with the command and its
    output (``what`` names the benchmark)."""
    full = dict(os.environ)
    full["PYTHONPATH"] = str(HERE.parent) + os.pathsep + full.get("PYTHONPATH", "")
    full.update(env or {})
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{what}: {' '.join(cmd)} failed ({proc.returncode}):\n"
                         f"{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1][len("RESULT "):])
