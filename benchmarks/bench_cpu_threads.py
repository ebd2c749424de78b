"""CPU training throughput by thread count: is each thread the CPU device
wakes worth its cost on this host?

    python benchmarks/bench_cpu_threads.py [--threads 1 2 4 8 14] [--record] [--machine NAME]

For every thread count (``HETNET_NUM_THREADS``, one fresh process each, so
that OpenMP starts clean) it times ``fit`` on random data for the MLP
784-120-84-10 at batch 16, 64 and 256 and LeNet-5 at batch 16 and 64: the
best of three passes over 8192 images, after a warm-up.  The kernels choose
how many of those threads each loop wakes from its work (``hn_threads`` in
``hetnet/_cpu/_openmp.pxi``); with a good choice a larger thread count
trains no slower.  Writes benchmarks/local/cpu_threads/<machine>.json
(``--record``: benchmarks/results/cpu_threads/<machine>.json).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from _common import add_output_args

CASES = (("mlp", 16), ("mlp", 64), ("mlp", 256), ("lenet5", 16), ("lenet5", 64))
IMAGES = 8192


def child():
    """Run in a process of its own: the throughput of every case, as JSON."""
    import hetnet as hn
    rng = np.random.default_rng(0)
    out = {}
    for name, batch in CASES:
        if name == "mlp":
            model, shape = hn.models.mlp([784, 120, 84, 10], seed=0, device="cpu"), (784,)
        else:
            model, shape = hn.models.lenet5(seed=0, device="cpu"), (1, 28, 28)
        X = rng.random((IMAGES,) + shape, dtype=np.float32)
        y = rng.integers(0, 10, IMAGES)
        model.fit(X[:1024], y[:1024], epochs=1, batch_size=batch, optimizer="sgd")
        best = 0.0
        for _ in range(3):
            t0 = time.perf_counter()
            model.fit(X, y, epochs=1, batch_size=batch)
            best = max(best, IMAGES / (time.perf_counter() - t0))
        out[f"{name}-b{batch}"] = best
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", nargs="+", type=int, default=None,
                   help="thread counts (default: 1, 2, 4, ... up to the CPUs less two)")
    add_output_args(p)
    args = p.parse_args()
    from _common import machine, write_results
    from hetnet.devices.cpu import default_num_threads
    top = default_num_threads()
    counts = args.threads or sorted({1, 2, 4, 8, top} & set(range(1, top + 1)))
    rows = {}
    for n in counts:
        env = dict(os.environ, HETNET_NUM_THREADS=str(n))
        run = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True,
                             text=True, check=True)
        rows[n] = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{n:>3} threads  " + "  ".join(f"{k} {v:>9,.0f}" for k, v in rows[n].items()),
              flush=True)
    write_results({"images_per_s": {str(n): r for n, r in rows.items()},
                   "images": IMAGES, "machine": machine()}, "cpu_threads", args)


if __name__ == "__main__":
    if "--child" in sys.argv:
        child()
    else:
        main()
