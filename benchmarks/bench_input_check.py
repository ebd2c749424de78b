"""What fit's and predict's scan for NaN and infinity costs: the whole-array
``np.isfinite(X).all()`` hetnet made before (a bool temporary the size of X)
against :func:`hetnet._validation.all_finite`, which scans a block of 64k
values at a time into one small buffer.

    python benchmarks/bench_input_check.py [--images 40000] [--repeats 5] [--record] [--machine NAME]

Each form runs in a fresh process (the allocator's state decides whether the
temporary's memory is already mapped): its first call, then the median of
``--repeats`` more.  Results: benchmarks/local/input_check/<machine>.json
(``--record``: benchmarks/results/input_check/<machine>.json).
"""

import argparse
import json
import subprocess
import sys

from _common import add_output_args

CHILD = """
import json, sys, time
import numpy as np
from hetnet._validation import all_finite
form, n, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
X = np.random.default_rng(0).random((n, 1, 28, 28), dtype=np.float32)
scan = (lambda a: bool(np.isfinite(a).all())) if form == "whole_array" else all_finite
times = []
for _ in range(1 + repeats):
    t0 = time.perf_counter()
    assert scan(X)
    times.append(1e3 * (time.perf_counter() - t0))
print(json.dumps({"first_ms": times[0], "repeat_ms": sorted(times[1:])[len(times[1:]) // 2],
                  "all_ms": times}))
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=40_000, help="28x28 images in X (default 40000)")
    p.add_argument("--repeats", type=int, default=5)
    add_output_args(p)
    args = p.parse_args()
    from _common import machine, write_results
    out = {"images": args.images, "bytes": 4 * 784 * args.images, "forms": {}}
    for form in ("whole_array", "blocks"):
        res = subprocess.run([sys.executable, "-c", CHILD, form, str(args.images),
                              str(args.repeats)], capture_output=True, text=True, check=True)
        out["forms"][form] = r = json.loads(res.stdout)
        print(f"{form:>12}: first call {r['first_ms']:6.1f} ms, then {r['repeat_ms']:6.1f} ms "
              f"(median of {args.repeats})")
    out["machine"] = machine()
    write_results(out, "input_check", args)


if __name__ == "__main__":
    main()
