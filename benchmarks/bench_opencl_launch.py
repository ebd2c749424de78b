"""Host cost of one OpenCL operation in hetnet: where a training step's time
goes when the GPU is mostly idle.

    python benchmarks/bench_opencl_launch.py [--device gpu] [--profile PATH]
        [--record] [--machine NAME] [--out PATH]

Measures host microseconds per call (median of 5 runs of 2000 calls, the
device synchronised before and after, not inside) of: setting the 24
arguments of gemm_main and enqueueing it, enqueueing it alone, ``empty``,
views (``batch_slice``, ``reshape``) beside pyopencl's own, a small
``gemm``, ``bias_activation``, small and staged ``asarray``; each with and
without a profiling queue.  With ``--profile``, also a cProfile of LeNet-5 training
steps (batch 64) written as text.  Results: benchmarks/local/opencl_launch/<machine>.json
(``--record``: benchmarks/results/opencl_launch/<machine>.json).
"""

import argparse
import cProfile
import io
import pstats
import statistics
import time
from pathlib import Path

import numpy as np

from _common import add_output_args, machine, write_results


def per_call(dev, fn, n=2000, runs=5):
    fn()
    dev.synchronize()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        out.append((time.perf_counter() - t0) / n * 1e6)
        dev.synchronize()
    return statistics.median(out)


def launch_costs(spec, profiling):
    import pyopencl as cl
    from hetnet.devices.opencl import OpenCLDevice
    res = {}
    dev = OpenCLDevice.from_spec(spec, profiling=profiling, autotune=False)
    rng = np.random.default_rng(0)
    a = dev.asarray(rng.random((64, 120), dtype=np.float32))
    w = dev.asarray(rng.random((120, 84), dtype=np.float32))
    b = dev.asarray(rng.random(84, dtype=np.float32))
    c = dev.gemm(a, w)
    dev.synchronize()
    res["gemm 64x84x120 into c"] = per_call(dev, lambda: dev.gemm(a, w, c))
    res["gemm 64x84x120 new c"] = per_call(dev, lambda: dev.gemm(a, w))
    res["bias_activation 64x84"] = per_call(dev, lambda: dev.bias_activation(c, b, "relu"))
    cfg = dev._gemm._choose(64, 84, 1)
    knl = dev._gemm._main_kernel(cfg)
    args = (64, 84, 120, a.base_data, 0, 120, 0, 0, 1, w.base_data, 0, 84, 0, 0, 1,
            c.base_data, 0, 84, 0, 1, 1.0, 0.0, 1, 1)
    lx, ly, _ = cfg.local_size
    gs, ls = (2 * lx, ly, 1), (lx, ly, 1)

    def set_and_enqueue():
        knl.set_args(*args)
        cl.enqueue_nd_range_kernel(dev.queue, knl, gs, ls)
    res["gemm_main set_args(24) + enqueue"] = per_call(dev, set_and_enqueue)
    knl.set_args(*args)
    res["gemm_main enqueue only"] = per_call(
        dev, lambda: cl.enqueue_nd_range_kernel(dev.queue, knl, gs, ls))
    res["gemm_main set_args(24) only"] = per_call(dev, lambda: knl.set_args(*args))
    if getattr(dev, "c_enqueue", False):
        from hetnet.devices.opencl import _clenqueue as clenqueue
        q, k, codes = dev.queue.int_ptr, knl.int_ptr, knl.hetnet_codes
        res["gemm_main C launch (24 arguments set + enqueue)"] = per_call(
            dev, lambda: clenqueue.launch(q, k, codes, args, gs, ls))
        res["gemm_main dev._launch (C)"] = per_call(dev, lambda: dev._launch(knl, gs, ls, *args))
    res["empty((64, 84))"] = per_call(dev, lambda: dev.empty((64, 84)))
    res["dev.batch_slice(a, 8, 40)"] = per_call(dev, lambda: dev.batch_slice(a, 8, 40))
    res["a[8:40] (pyopencl)"] = per_call(dev, lambda: a[8:40])
    res["dev.reshape(a, (-1, 60))"] = per_call(dev, lambda: dev.reshape(a, (-1, 60)))
    res["a.reshape(128, 60) (pyopencl)"] = per_call(dev, lambda: a.reshape(128, 60))
    small = rng.random(64).astype(np.float32)
    res["asarray 256 B"] = per_call(dev, lambda: dev.asarray(small), n=500)
    big = rng.random((64, 1, 28, 28)).astype(np.float32)
    res["asarray 200 kB (staged)"] = per_call(dev, lambda: dev.asarray(big), n=500)
    dev.synchronize()
    return res


def profile_steps(spec, folder, batch=64, steps=200):
    import hetnet as hn
    from hetnet.devices.opencl import OpenCLDevice
    dev = OpenCLDevice.from_spec(spec)
    model = hn.models.lenet5(seed=42, device=dev)
    model.build((1, 28, 28))
    rng = np.random.default_rng(0)
    X = rng.random((batch * 8, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch * 8)
    model.fit(X, y, epochs=1, batch_size=batch)          # builds, warms up
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for _ in range(steps // 8):
        model.fit(X, y, epochs=1, batch_size=batch, shuffle=False)
    prof.disable()
    dt = (time.perf_counter() - t0) / steps
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(40)
    Path(folder).write_text(f"{dt * 1e6:.0f} us per step under cProfile\n" + s.getvalue())
    return dt * 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="gpu")
    p.add_argument("--profile", default=None)
    add_output_args(p)
    args = p.parse_args()
    out = {"benchmark": "opencl_launch_cost", "unit": "host microseconds per call"}
    for profiling in (False, True):
        r = launch_costs(args.device, profiling)
        out[f"profiling={'on' if profiling else 'off'}"] = r
        for k, v in r.items():
            print(f"profiling={'on ' if profiling else 'off'} {k:<40} {v:8.1f} us", flush=True)
    from hetnet.devices.opencl import OpenCLDevice
    out["machine"] = machine(OpenCLDevice.from_spec(args.device, autotune=False))
    if args.profile:
        out["cprofile_us_per_step"] = profile_steps(args.device, args.profile)
        print("cProfile:", out["cprofile_us_per_step"], "us per step")
    write_results(out, "opencl_launch", args, indent=1)


if __name__ == "__main__":
    main()
