"""What a benchmark ran on: recorded beside every result."""

import json
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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
