"""What each optimiser's update costs, as the ratio of a training step with
it to a step with SGD-momentum.

    python benchmarks/bench_optimizers.py [--rounds 24] [--record] [--machine NAME]

The 784-120-84-10 MLP at batch 64 (the scikit-learn estimators' default
network shape), one model per optimiser (same seed, same data), on the CPU
and, where an OpenCL GPU is found, on it.  Each round fits every model for
one epoch of ``--steps`` steps, the optimisers' order rotated round by round,
and takes its step time from ``History.time_s`` (the training loop alone);
the ratio of an optimiser to SGD-momentum is formed within each round
(paired: a shared host's load drifts over seconds, and both sides of a ratio
then see the same) and the report gives its median over the rounds with
the 10th-90th percentile spread.  Beside it, the update operation alone over
all the MLP's parameters in one flat buffer (median of windows of 200
updates), which is what differs between the fits.

``--record`` writes benchmarks/results/optimizers/<machine>.json (machine:
``--machine``, default the GPU's name or ``cpu<N>`` for N available CPUs).
"""

import argparse
import time

import numpy as np

from _common import add_output_args, machine, run_without_openblas_pins, write_results

SIZES = [784, 120, 84, 10]
BATCH = 64


def optimizers():
    """name -> a fresh optimiser; small learning rates: the models train on
    random labels for many epochs and must not diverge."""
    import hetnet as hn
    return {
        "sgd_momentum": lambda: hn.SGD(lr=1e-3, momentum=0.9),
        "nag": lambda: hn.SGD(lr=1e-3, momentum=0.9, nesterov=True),
        "adam": lambda: hn.Adam(lr=1e-4),
        "adamw": lambda: hn.AdamW(lr=1e-4),
        "rmsprop": lambda: hn.RMSProp(lr=1e-4),
        "rmsprop_momentum": lambda: hn.RMSProp(lr=1e-4, momentum=0.9),
    }


def fit_ratios(device, rounds, steps):
    import hetnet as hn
    rng = np.random.default_rng(0)
    X = rng.random((steps * BATCH, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, SIZES[-1], steps * BATCH)
    makers = optimizers()
    models = {}
    for name, make in makers.items():
        model = hn.models.mlp(SIZES, seed=0, device=device, input_shape=(SIZES[0],))
        model.fit(X, y, epochs=1, batch_size=BATCH, optimizer=make())   # build, warm up
        models[name] = model
    names = list(models)
    step_s = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            hist = models[name].fit(X, y, epochs=1, batch_size=BATCH)
            step_s[name].append(hist["time_s"][0] / steps)
    base = np.array(step_s["sgd_momentum"])
    rows = {}
    for name in names:
        t = np.array(step_s[name])
        ratio = t / base
        rows[name] = {
            "step_ms_median": float(np.median(t) * 1e3),
            "ratio_to_sgd_momentum_median": float(np.median(ratio)),
            "ratio_p10": float(np.percentile(ratio, 10)),
            "ratio_p90": float(np.percentile(ratio, 90)),
            "ratio_min": float(ratio.min()), "ratio_max": float(ratio.max()),
            "rounds_within_20pct": int((ratio <= 1.2).sum()),
            "step_ms_per_round": [float(v * 1e3) for v in t],
        }
    return rows


def update_us(device, windows=7, reps=200):
    """Median of ``windows`` windows of ``reps`` flat updates, each optimiser's
    op over all the MLP's parameters (one buffer, as the flat path keeps them)."""
    n = sum(a * b + b for a, b in zip(SIZES[:-1], SIZES[1:]))
    rng = np.random.default_rng(1)
    w = device.asarray(rng.standard_normal(n).astype(np.float32) * 0.05)
    g = device.asarray(rng.standard_normal(n).astype(np.float32) * 1e-3)
    s1, s2 = device.zeros((n,)), device.zeros((n,))
    ops = {
        "sgd_momentum": lambda t: device.sgd_update(w, g, s1, 1e-3, 0.9),
        "nag": lambda t: device.sgd_update(w, g, s1, 1e-3, 0.9, nesterov=True),
        "adam": lambda t: device.adam_update(w, g, s1, s2, 1e-4, 0.9, 0.999, 1e-8, t),
        "adamw": lambda t: device.adam_update(w, g, s1, s2, 1e-4, 0.9, 0.999, 1e-8, t, 0.01,
                                              decoupled=True),
        "rmsprop": lambda t: device.rmsprop_update(w, g, s1, None, 1e-4, 0.99, 1e-8),
        "rmsprop_momentum": lambda t: device.rmsprop_update(w, g, s1, s2, 1e-4, 0.99, 1e-8,
                                                            0.9),
    }
    times = {name: [] for name in ops}
    for _ in range(windows):
        for name, op in ops.items():
            op(1)
            device.synchronize()
            t0 = time.perf_counter()
            for t in range(reps):
                op(t + 2)
            device.synchronize()
            times[name].append((time.perf_counter() - t0) / reps * 1e6)
    return {"parameters": n, **{name: float(np.median(v)) for name, v in times.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=24, help="interleaved rounds (default 24)")
    ap.add_argument("--steps", type=int, default=48, help="steps per timed epoch (default 48)")
    add_output_args(ap)
    args = ap.parse_args()
    run_without_openblas_pins()
    from hetnet.devices import get_device, gpu_device
    devices = {"cpu": get_device("cpu")}
    gpu, why = gpu_device()
    if gpu is not None:
        devices["gpu"] = gpu
    results = {"machine": machine(), "model": "mlp " + "-".join(map(str, SIZES)),
               "batch_size": BATCH, "rounds": args.rounds, "steps_per_round": args.steps,
               "devices": {}}
    if gpu is None:
        results["gpu_skipped"] = why
    for key, dev in devices.items():
        print(f"{key}: {dev.name}")
        upd = update_us(dev)
        rows = fit_ratios(dev, args.rounds, args.steps)
        results["devices"][key] = {"name": dev.name, "update_us": upd, "fit_step": rows}
        print(f"  {'optimiser':<18}{'update us':>10}{'step ms':>9}{'ratio':>7}  p10-p90"
              f"      rounds <= 1.2")
        for name, row in rows.items():
            print(f"  {name:<18}{upd[name]:>10.1f}{row['step_ms_median']:>9.3f}"
                  f"{row['ratio_to_sgd_momentum_median']:>7.3f}  {row['ratio_p10']:.3f}-"
                  f"{row['ratio_p90']:.3f}  {row['rounds_within_20pct']}/{args.rounds}")
    write_results(results, "optimizers", args)


if __name__ == "__main__":
    main()
