"""Whether the CPU's parameter update, and mlp's batch-256 training step
around it, depend on where the allocator put the arrays.

    python benchmarks/bench_update_layout.py [--record] [--machine NAME]

A 2-core matrix run (benchmarks/results/matrix/cpu2-48-s11/ at commit b7ef3cb) had auto's mlp b256
``fit`` step at 0.67 ms against cpu's 0.57 with the very same plan, the whole
difference in the parameter update, and no difference with glibc's
``MALLOC_MMAP_THRESHOLD_`` fixed: where the allocator placed the arrays the
update streams through seemed to decide it.  This measures, on the host it
runs on:

- ``sgd_update`` (momentum 0.9) over a 784x120 weight (mlp's largest), with
  the weight, its gradient and its velocity at chosen offsets within a 4 KB
  page, on 1 and 2 threads: the best of five windows of 200 updates;
- the ``cpu`` and ``auto`` models' mlp batch-256 ``fit`` step (one process
  holding both, as the matrix does, their fits alternating), in fresh
  processes with the mmap threshold unset, 4 KB (every array its own
  mapping, all at the same page offset), 128 KB (glibc's default start) and
  64 MB (every array from the heap).

A host where the layouts differ by more than a few percent shows it here;
one where they do not cannot reproduce the cpu2-48-s11 gap.
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np

from _common import add_output_args, machine, run_without_openblas_pins, write_results

SHAPE = (784, 120)
#: (weight, gradient, velocity) byte offsets within a 4 KB page
OFFSETS = [(0, 0, 0), (16, 16, 16), (0, 64, 128), (0, 1024, 2048), (0, 0, 2048), (0, 2048, 0)]
THRESHOLDS = [None, 4096, 131072, 1 << 26]
STEPS = 200        # fit steps a timed epoch
UPDATES = 200      # sgd_update calls a timed window


def _at_page_offset(n, offset):
    """``n`` float32 zeros starting ``offset`` bytes into a 4 KB page."""
    raw = np.zeros(n + 2048, dtype=np.float32)
    start = ((-raw.ctypes.data) % 4096 + offset) // 4
    return raw[start:start + n]


def update_by_offset():
    from hetnet._cpu import elementwise as ew
    n = SHAPE[0] * SHAPE[1]
    rows = []
    for threads in (1, 2):
        for offsets in OFFSETS:
            w, g, v = (_at_page_offset(n, off) for off in offsets)
            g[:] = np.random.default_rng(0).standard_normal(n).astype(np.float32) * 1e-3
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(UPDATES):
                    ew.sgd_update(w, g, v, 0.01, 0.9, 0.0, False, threads, True)
                best = min(best, (time.perf_counter() - t0) / UPDATES)
            rows.append({"threads": threads, "offsets_bytes": list(offsets), "update_us": best * 1e6})
            print(f"sgd_update 784x120, {threads} thread(s), page offsets w/g/v {offsets}: "
                  f"{best * 1e6:6.1f} us")
    return rows


def child():
    """Print the median fit step (ms) of the cpu and auto models at batch 256."""
    from bench_matrix import build, timed_fit
    models = {p: build("mlp", p)[0] for p in ("cpu", "auto")}
    rng = np.random.default_rng(0)
    X = rng.random((256 * STEPS, 784), dtype=np.float32)
    y = rng.integers(0, 10, len(X))
    for m in models.values():
        timed_fit(m, X[:2560], y[:2560], 256)     # plans, and gives the model its SGD
    steps = {p: [] for p in models}
    for _ in range(5):
        for p, m in models.items():
            steps[p].append(timed_fit(m, X, y, 256, STEPS)[1] * 1e3)
    print(" ".join(f"{p}={float(np.median(s)):.4f}" for p, s in steps.items()))


def fit_by_threshold():
    rows = []
    for threshold in THRESHOLDS:
        env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
        if threshold is not None:
            env["MALLOC_MMAP_THRESHOLD_"] = str(threshold)
        out = subprocess.run([sys.executable, __file__, "--child"], env=env, check=True,
                             capture_output=True, text=True).stdout.split()[-2:]
        step = {k: float(v) for k, v in (item.split("=") for item in out)}
        rows.append({"mmap_threshold": threshold, "fit_step_ms": step})
        print(f"mlp b256 fit step, MALLOC_MMAP_THRESHOLD_={threshold or 'unset'}: "
              f"cpu {step['cpu']:.3f} ms, auto {step['auto']:.3f} ms "
              f"(auto / cpu {step['auto'] / step['cpu']:.3f})")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_output_args(ap)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child()
        return
    run_without_openblas_pins()
    results = {"machine": machine(), "update_by_page_offset": update_by_offset(),
               "fit_by_mmap_threshold": fit_by_threshold()}
    write_results(results, "update_layout", args)


if __name__ == "__main__":
    main()
