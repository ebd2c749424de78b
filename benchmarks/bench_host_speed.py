"""How steady is this host's speed?  The host probe over time, with nothing else running.

    python benchmarks/bench_host_speed.py [--seconds 20] [--step-seconds 20] [--record] [--machine NAME]

Times :func:`hetnet.sched.hostspeed.probe` (a fixed single-threaded 96x96 matrix
product, about a millisecond a probe) back to back for ``--seconds``, with
the host's steal time (/proc/stat) over the run.  Prints the percentiles,
the median of each half-second, and the share of probes more than 25% slower
than the fastest tenth; writes benchmarks/local/host_speed/<machine>.json
(``--record``: benchmarks/results/host_speed/<machine>.json)
with the machine.  A host whose probe moves by 1.5x between half-seconds
moves every CPU-bound step with it, and bounds how close any prediction
made at one moment can come to a measurement made at another.

Then, for ``--step-seconds``, pairs of a probe and a LeNet-5 training step
on the CPU (batch 64, one ``model._measure_step`` window, as planning times
steps): does the probe follow what moves a real step?
"""

import argparse
import time

import numpy as np

from _common import add_output_args


def steal_jiffies():
    """(steal, total) jiffies of all CPUs so far, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[7] if len(fields) > 7 else 0, sum(fields[:8])


def series(seconds):
    from hetnet.sched.hostspeed import probe
    probe()                                          # set up, first use
    t0 = time.perf_counter()
    rows = []
    while time.perf_counter() - t0 < seconds:
        rows.append((time.perf_counter() - t0, probe()))
    return rows


def probe_step_pairs(seconds, batch=64):
    """(probe µs, LeNet-5 CPU training step ms) pairs, back to back."""
    import hetnet as hn
    from hetnet.sched.hostspeed import probe
    rng = np.random.default_rng(0)
    model = hn.models.lenet5(seed=0, device="cpu")
    X = rng.random((4 * batch, 1, 28, 28), dtype=np.float32)
    model.fit(X, rng.integers(0, 10, len(X)), epochs=1, batch_size=batch)
    t0 = time.perf_counter()
    pairs = []
    while time.perf_counter() - t0 < seconds:
        pairs.append((1e6 * probe(), 1e3 * model._measure_step(batch, True)))
    model._release_pool()
    return pairs


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--step-seconds", type=float, default=20.0,
                   help="seconds of probe / LeNet-5 step pairs (0: none)")
    add_output_args(p)
    args = p.parse_args()
    from _common import machine, run_without_openblas_pins, write_results
    run_without_openblas_pins()
    before = steal_jiffies()
    rows = series(args.seconds)
    after = steal_jiffies()
    probes_us = np.array([1e6 * t for _, t in rows])
    halves = {}
    for t, v in rows:
        halves.setdefault(int(t / 0.5), []).append(1e6 * v)
    half_medians = [float(np.median(v)) for _, v in sorted(halves.items())]
    p10, p50, p90 = np.percentile(probes_us, [10, 50, 90])
    slow_share = float(np.mean(probes_us > 1.25 * p10))
    steal = None
    if before and after and after[1] > before[1]:
        steal = (after[0] - before[0]) / (after[1] - before[1])
    results = {"benchmark": "host_speed", "seconds": args.seconds, "probes": len(rows),
               "probe_us": {"p10": p10, "p50": p50, "p90": p90,
                            "min": float(probes_us.min()), "max": float(probes_us.max())},
               "slow_share": slow_share, "steal_share": steal,
               "half_second_medians_us": half_medians,
               "half_second_spread": max(half_medians) / min(half_medians),
               "series": [[round(t, 4), round(1e6 * v, 3)] for t, v in rows]}
    print(f"{len(rows)} probes over {args.seconds:.0f} s: p10/p50/p90 {p10:.1f}/{p50:.1f}/{p90:.1f} µs;"
          f" {100 * slow_share:.0f}% more than 25% slower than p10; half-second medians "
          f"{min(half_medians):.1f}-{max(half_medians):.1f} µs "
          f"({results['half_second_spread']:.2f}x); steal "
          f"{'n/a' if steal is None else f'{100 * steal:.1f}%'}")
    if args.step_seconds > 0:
        pairs = np.array(probe_step_pairs(args.step_seconds))
        corr = float(np.corrcoef(pairs.T)[0, 1]) if len(pairs) > 2 else None
        results["lenet5_cpu_b64"] = {
            "pairs": len(pairs), "probe_us_range": [pairs[:, 0].min(), pairs[:, 0].max()],
            "step_ms_range": [pairs[:, 1].min(), pairs[:, 1].max()],
            "step_ms_p10_p50_p90": list(np.percentile(pairs[:, 1], [10, 50, 90])),
            "correlation": corr, "series": [[round(a, 3), round(b, 4)] for a, b in pairs]}
        print(f"{len(pairs)} probe / LeNet-5 b64 CPU step pairs: probe {pairs[:, 0].min():.1f}-"
              f"{pairs[:, 0].max():.1f} µs, step {pairs[:, 1].min():.3f}-{pairs[:, 1].max():.3f} ms;"
              f" correlation {corr:.2f}")
    results["machine"] = machine()
    write_results(results, "host_speed", args)


if __name__ == "__main__":
    main()
