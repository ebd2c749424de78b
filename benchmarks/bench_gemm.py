"""GEMM throughput of hetnet's OpenCL kernels: the four teaching kernels
(v1-v4), the production kernel (float32) and, on NVIDIA, its TF32
tensor-core build; square sizes and LeNet-5's own GEMM shapes.

    python benchmarks/bench_gemm.py [--device gpu] [--sizes 512 1024 2048 4096 8192]
                                    [--logs DIR] [--record] [--machine NAME]

Results: benchmarks/local/gemm/<machine>.json (``--record``:
benchmarks/results/gemm/<machine>.json).

Times are medians over repeats; each repeat enqueues the same product enough
times to last >= 20 ms (once for slow kernels) and is timed with OpenCL
profiling events (first kernel's start to last kernel's end: device time)
and with the host clock around it (wall time, launch costs included).
GFLOP/s = 2*M*N*K*batch / device time.  Every result is checked against a
float64 product of sampled rows.  v1 and v2 run in one work-group (one
compute unit) by design, so they are timed at the small sizes only.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from _common import add_output_args, machine, write_results

SLOW_MAX_N = {1: 1024, 2: 1024, 3: 8192, 4: 8192, 5: 8192}


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="gpu", help="OpenCL device spec (gpu, cpu, P:D)")
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    p.add_argument("--versions", nargs="+", default=["1", "2", "3", "4", "5"])
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    p.add_argument("--no-tf32", action="store_true")
    p.add_argument("--min-time", type=float, default=0.02)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--logs", default=None, help="folder for build logs and PTX")
    add_output_args(p)
    return p.parse_args()


class Timer:
    """Median device and wall time of a queued operation."""

    def __init__(self, dev, min_time, repeats):
        self.dev, self.min_time, self.repeats = dev, min_time, repeats
        self._events = []
        launch = dev._launch

        def recording_launch(*args):
            evt = launch(*args)
            self._events.append(evt)
            return evt
        dev._launch = recording_launch

    def __call__(self, fn):
        dev = self.dev
        fn()
        dev.synchronize()                       # build, warm up
        t0 = time.perf_counter()
        fn()
        dev.synchronize()
        once = time.perf_counter() - t0
        count = max(1, min(2000, int(self.min_time / max(once, 1e-7))))
        repeats = self.repeats if once < 0.2 else 3 if once < 2 else 1
        dev_t, wall_t = [], []
        for _ in range(repeats):
            self._events.clear()
            t0 = time.perf_counter()
            for _ in range(count):
                fn()
            dev.synchronize()
            wall_t.append((time.perf_counter() - t0) / count)
            try:
                start = self._events[0].profile.start
                end = self._events[-1].profile.end
                dev_t.append((end - start) * 1e-9 / count)
            except Exception:               # noqa: BLE001 - no profiling info
                pass
        self._events.clear()
        wall = statistics.median(wall_t)
        return (statistics.median(dev_t) if dev_t else wall), wall


def rel_err_rows(dev, a, b, c, ta, tb, rows):
    """max |c - ref| / max |ref| over sampled rows of a 2-D product."""
    A = a.T if ta else a
    B = b.T if tb else b
    ref = A[rows].astype(np.float64) @ B.astype(np.float64)
    got = dev.to_host(c)[rows]
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def build_reports(dev, cfgs, folder):
    """NVIDIA: registers/spills of gemm_main per configuration (-cl-nv-verbose)
    and the PTX of the first one, written to ``folder``."""
    import pyopencl as cl
    from hetnet.devices.opencl.platform import kernel_source
    if "nvidia" not in dev.cl_device.platform.name.lower():
        return {}
    out = {}
    for name, opts in cfgs:
        prg = cl.Program(dev.context, kernel_source("gemm.cl")).build(
            options=list(opts) + ["-cl-nv-verbose"] + list(dev._options))
        log = prg.get_build_info(dev.cl_device, cl.program_build_info.LOG)
        out[name] = [ln.strip() for ln in log.splitlines()
                     if "gemm_main" in ln or "registers" in ln or "spill" in ln
                     or "stack" in ln]
        if folder:
            ptx = prg.get_info(cl.program_info.BINARIES)[0]
            (Path(folder) / f"gemm_main_{name}.ptx").write_bytes(ptx)
    return out


def square(dev, timer, args, versions, tag):
    rng = np.random.default_rng(1)
    rows_out = []
    for n in args.sizes:
        a = dev.asarray(rng.standard_normal((n, n), dtype=np.float32))
        b = dev.asarray(rng.standard_normal((n, n), dtype=np.float32))
        c = dev.empty((n, n))
        ha, hb = dev.to_host(a), dev.to_host(b)
        sample = rng.choice(n, size=min(n, 16), replace=False)
        for v in versions:
            if n > SLOW_MAX_N[v]:
                continue
            version = "main" if v == 5 else v

            def fn():
                dev.gemm_variant(version, a, b, c)
            t_dev, t_wall = timer(fn)
            err = rel_err_rows(dev, ha, hb, c, False, False, sample)
            gf = 2.0 * n ** 3 / t_dev / 1e9
            rows_out.append({"kernel": tag if v == 5 else f"v{v}", "n": n, "gflops": gf,
                             "ms": t_dev * 1e3, "wall_ms": t_wall * 1e3, "rel_err": err})
            print(f"{rows_out[-1]['kernel']:>8} n={n:5d} {gf:10.1f} GFLOP/s "
                  f"{t_dev * 1e3:9.3f} ms (wall {t_wall * 1e3:9.3f})  err {err:.1e}",
                  flush=True)
        del a, b, c
    return rows_out


def lenet_shapes(batch):
    """(name, M, N, K, trans_a, trans_b, mode) of LeNet-5's GEMMs at this batch.

    mode: "2d" (one call), "per-image" (the 2-D product of one image; the layer
    does it as one batched call, timed as mode "batched"/"summed")."""
    B = batch
    out = []
    for conv, (f, ckk, p) in (("conv1", (6, 25, 784)), ("conv2", (16, 150, 100))):
        out += [(f"{conv} fwd W@cols", f, p, ckk, False, False, ("shared-a", B)),
                (f"{conv} dW dY@cols^T", f, ckk, p, False, True, ("summed", B)),
                (f"{conv} dcols W^T@dY", ckk, p, f, True, False, ("shared-a", B))]
    for fc, (i, o) in (("fc1", (400, 120)), ("fc2", (120, 84)), ("fc3", (84, 10))):
        out += [(f"{fc} fwd X@W", B, o, i, False, False, ("2d", 1)),
                (f"{fc} dW X^T@dY", i, o, B, True, False, ("2d", 1)),
                (f"{fc} dX dY@W^T", B, i, o, False, True, ("2d", 1))]
    return out


def lenet(dev, timer, args, versions):
    rng = np.random.default_rng(2)
    rows_out = []
    for batch in args.batches:
        for name, m, n, k, ta, tb, (mode, nb) in lenet_shapes(batch):
            ha = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
            hb = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
            a, b, c = dev.asarray(ha), dev.asarray(hb), dev.empty((m, n))
            sample = np.arange(min(m, 8))
            for v in versions:                     # the 2-D product (per image for convs)
                version = "main" if v == 5 else v

                def fn():
                    dev.gemm_variant(version, a, b, c, ta, tb)
                t_dev, t_wall = timer(fn)
                err = rel_err_rows(dev, ha, hb, c, ta, tb, sample)
                rows_out.append({"batch": batch, "gemm": name,
                                 "shape": f"{m}x{n}x{k}" + (" per image" if mode != "2d" else ""),
                                 "kernel": "main" if v == 5 else f"v{v}",
                                 "gflops": 2.0 * m * n * k / t_dev / 1e9, "us": t_dev * 1e6,
                                 "wall_us": t_wall * 1e6, "rel_err": err})
            if mode != "2d":                       # the layer's real call: one batched GEMM
                if mode == "shared-a":
                    hb3 = rng.standard_normal((nb, k, n), dtype=np.float32)
                    a3, b3, c3 = a, dev.asarray(hb3), dev.empty((nb, m, n))
                else:
                    ha3 = rng.standard_normal((nb, m, k), dtype=np.float32)
                    hb3 = rng.standard_normal((nb, n, k), dtype=np.float32)
                    a3, b3, c3 = dev.asarray(ha3), dev.asarray(hb3), c

                def fn():
                    dev.gemm(a3, b3, c3, ta, tb)
                t_dev, t_wall = timer(fn)
                rows_out.append({"batch": batch, "gemm": name,
                                 "shape": f"{m}x{n}x{k} x{nb} {mode}", "kernel": "main",
                                 "gflops": 2.0 * m * n * k * nb / t_dev / 1e9,
                                 "us": t_dev * 1e6, "wall_us": t_wall * 1e6})
    for r in rows_out:
        print(f"b={r['batch']:4d} {r['gemm']:<18} {r['shape']:<28} {r['kernel']:>5} "
              f"{r['gflops']:9.1f} GFLOP/s {r['us']:9.1f} us (wall {r['wall_us']:8.1f})")
    return rows_out


def main():
    args = parse()
    from hetnet.devices.opencl import OpenCLDevice
    dev = OpenCLDevice.from_spec(args.device, profiling=True)
    versions = [int(v) for v in args.versions]
    results = {"benchmark": "gemm_opencl", "machine": machine(dev),
               "timing": "median over repeats; device time from OpenCL profiling events "
                         "(first start to last end over back-to-back launches); wall time "
                         "includes host launch cost",
               "notes": ["v1 and v2 use a single work-group (one compute unit) by design and "
                         f"are measured only up to n={SLOW_MAX_N[1]}: they are far too slow "
                         "beyond that.",
                         "rel_err: max abs error over max abs value of sampled rows against "
                         "float64."]}
    t0 = time.perf_counter()
    _ = dev._gemm.large                         # autotune now (cached on disk)
    results["autotune"] = {"seconds": time.perf_counter() - t0, "result": dev._gemm.tuning,
                           "chosen": list(dev._gemm.large), "small": list(dev._gemm._small)}
    print("autotune:", json.dumps(results["autotune"]), flush=True)
    if args.logs:
        Path(args.logs).mkdir(parents=True, exist_ok=True)
    try:
        from hetnet.devices.opencl.gemm import CANDIDATES
        cfgs = [("x".join(map(str, c)), c.options) for c in CANDIDATES[:2]]
        cfgs.append(("tf32_" + cfgs[0][0], CANDIDATES[0].options + ("-DUSE_TF32_MMA",)))
        results["build_reports"] = build_reports(dev, cfgs, args.logs)
        for k, v in results["build_reports"].items():
            print(k, *v, sep="\n  ")
    except Exception as exc:  # noqa: BLE001
        results["build_reports"] = f"failed: {exc}"
    timer = Timer(dev, args.min_time, args.repeats)
    results["square"] = square(dev, timer, args, versions, "main")
    if not args.no_tf32 and "nvidia" in dev.cl_device.platform.name.lower():
        tdev = OpenCLDevice.from_spec(dev.cl_device, profiling=True, precision="tf32")
        _ = tdev._gemm.large
        results["tf32_autotune"] = tdev._gemm.tuning
        ttimer = Timer(tdev, args.min_time, args.repeats)
        try:
            results["square_tf32"] = square(tdev, ttimer, args, [5], "tf32")
        except Exception as exc:  # noqa: BLE001
            results["square_tf32"] = f"failed: {exc}"
            print("tf32 failed:", exc)
    results["lenet5"] = lenet(dev, timer, args, versions)

    print("\n kernel      n   GFLOP/s   (production target at n=4096: 25000)")
    for r in results["square"] + (results.get("square_tf32") or []):
        if isinstance(r, dict):
            print(f"{r['kernel']:>7} {r['n']:6d} {r['gflops']:9.1f}")
    write_results(results, "gemm", args, indent=1)


if __name__ == "__main__":
    main()
