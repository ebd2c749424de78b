"""What a benchmark ran on: recorded beside every result."""

import json
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


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


def blas_info():
    """The BLAS libraries loaded, with the kernel (architecture) each chose."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{k: d.get(k) for k in ("filepath", "internal_api", "version", "architecture",
                                   "num_threads")}
            for d in threadpool_info() if d.get("user_api") == "blas"]


def machine():
    import numpy as np
    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_id": cpu_id(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                           "OMP_NUM_THREADS", "HETNET_NUM_THREADS")
                if k in os.environ},
    }
    try:
        import hetnet
        info["hetnet"] = hetnet.build_info()
    except Exception as exc:  # benchmark of something else
        info["hetnet"] = f"unavailable: {exc}"
    return info


def run_without_openblas_pins(keep=False):
    """Re-run this script without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (which
    pin OpenBLAS to a slower kernel on some machines) unless ``keep``; the
    kernel that ran is recorded by :func:`blas_info` either way."""
    pinned = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ]
    if pinned and not keep:
        env = {k: v for k, v in os.environ.items() if k not in pinned}
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


def write_results(results, name, tag=""):
    """Write ``results`` to benchmarks/results/<name>[_<tag>].json and say so."""
    out = RESULTS / f"{name}{('_' + tag) if tag else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"written {out}")
    return out
