"""Training step time of the matrix's models on the OpenCL GPU, one way of
running it against another, in alternating windows.

    python benchmarks/bench_gpu_step.py [--compare enqueue|flat] [--device gpu] [--rounds 8]
        [--record] [--machine NAME] [--out PATH]

``--compare enqueue`` (the default): kernels launched from C
(``OpenCLDevice(c_enqueue=True)``) against through pyopencl.
``--compare flat``: the parameters in one buffer and one optimizer launch a
step (``flat_update = True``, hetnet.runtime.flatparams) against one launch per
parameter array (``flat_update = False``), both launched from C.

For each model (the matrix's mlp, lenet5, convnet) and batch size, two
copies of the model (same weights), one per way, are timed in alternating
windows (``Sequential._measure_step``: fit's step on random data, at least
50 ms a window), the order swapped every round; each figure is the median
over the rounds, and the ratio ('c / pyopencl', 'flat / per_array') the
median of the per-round ratios.  The host's speed
(``hetnet.sched.hostspeed.probe``) is taken before every round.  Writes
``benchmarks/local/gpu_step/<machine>.json`` (``--record``:
``benchmarks/results/gpu_step/<machine>.json``; ``--out``: that path).

Run from an older checkout (a copy of this file and ``_common.py`` in its ``benchmarks/``), it
times that code's one enqueue path only (``"pyopencl"``), for before/after
comparisons made in one session.
"""

import argparse
import inspect
import statistics
import sys
import time

from hetnet.devices.opencl import OpenCLDevice

from _common import add_output_args, machine, write_results
from bench_matrix import MODELS, build   # the matrix's models


def _probe():
    try:
        from hetnet.sched.hostspeed import probe
    except ImportError:          # an older checkout
        return None
    return probe() * 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compare", choices=["enqueue", "flat"], default="enqueue")
    p.add_argument("--device", default="gpu")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64, 256])
    p.add_argument("--rounds", type=int, default=8)
    add_output_args(p)
    args = p.parse_args()

    has_c = "c_enqueue" in inspect.signature(OpenCLDevice.__init__).parameters
    # name: (constructor arguments, attributes set after)
    if not has_c:
        paths = {"pyopencl": ({}, {})}
    elif args.compare == "enqueue":
        paths = {"c": ({"c_enqueue": True}, {}), "pyopencl": ({"c_enqueue": False}, {})}
    else:
        paths = {"flat": ({"c_enqueue": True}, {"flat_update": True}),
                 "per_array": ({"c_enqueue": True}, {"flat_update": False})}
    devices = {}
    for name, (kw, attrs) in paths.items():
        devices[name] = OpenCLDevice.from_spec(args.device, **kw)
        for attr, value in attrs.items():
            setattr(devices[name], attr, value)
    first, second = list(paths)[:2] if len(paths) > 1 else (None, None)
    out = {"benchmark": "gpu_step", "unit": "ms per training step", "compare": args.compare,
           "paths": list(paths), "rounds": args.rounds, "cells": []}
    for model_name in args.models:
        for batch in args.batches:
            models = {}
            for name, dev in devices.items():
                m, shape = build(model_name, dev)
                m.build(shape)
                models[name] = m
            times = {name: [] for name in models}
            probes = []
            order = list(models)
            for m in models.values():        # warm-up: kernels built, buffers made
                m._measure_step(batch, True, repeats=3)
            for r in range(args.rounds):
                probes.append(_probe())
                for name in (order if r % 2 == 0 else order[::-1]):
                    times[name].append(models[name]._measure_step(
                        batch, True, repeats=5, min_seconds=0.05) * 1e3)
            cell = {"model": model_name, "batch_size": batch,
                    "step_ms": {k: statistics.median(v) for k, v in times.items()},
                    "step_ms_rounds": times, "host_probe_us_rounds": probes}
            line = f"{model_name:8s} b{batch:<5d}" + "".join(
                f" {k} {v:7.3f} ms" for k, v in cell["step_ms"].items())
            if first is not None:
                ratios = [a / b for a, b in zip(times[first], times[second])]
                cell[f"{first}_over_{second}"] = statistics.median(ratios)
                line += f"  {first}/{second} {cell[f'{first}_over_{second}']:.3f}"
            print(line, flush=True)
            out["cells"].append(cell)
    out["machine"] = machine(devices[next(iter(devices))])
    out["command"] = " ".join(["python", "benchmarks/bench_gpu_step.py"] + sys.argv[1:])
    out["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_results(out, "gpu_step", args, indent=1)


if __name__ == "__main__":
    main()
