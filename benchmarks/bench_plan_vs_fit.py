"""Does auto's timed step (what planning and ``explain`` measure) agree with
``fit``'s step, and how far does the host's speed move between them?

    python benchmarks/bench_plan_vs_fit.py [--record] [--machine NAME] [--pairs 8]

For a few small cells (where the matrix's predictions missed on the H100
host), after planning: ``--pairs`` times in turn, the step time of
``model._step_time`` (three windows of timed steps, as planning takes them)
and, right after, of one epoch of ``fit`` (``History.time_s`` over its
steps).  Prints each pair with the seconds since the model was built, and
the planning's own timed rounds; writes
benchmarks/local/plan_vs_fit/<machine>.json
(``--record``: benchmarks/results/plan_vs_fit/<machine>.json) with the machine.
"""

import argparse
import time

import numpy as np

from _common import add_output_args

CELLS = (("mlp", 1, "auto"), ("mlp", 16, "auto"), ("mlp", 1, "cpu"), ("lenet5", 1, "auto"))


def pairs_for(model_name, batch, policy, pairs):
    import hetnet as hn
    from bench_matrix import build, timed_fit
    rng = np.random.default_rng(0)
    model, shape = build(model_name, policy)
    X = rng.random((4096,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, 4096)
    t0 = time.perf_counter()
    model.fit(X[:64], y[:64], epochs=1, batch_size=batch, optimizer=hn.SGD(lr=1e-3, momentum=0.9))
    plan = model.plan(batch, training=True)
    n = min(4096, batch * 1000)
    rows = []
    for _ in range(pairs):
        timed = model._step_time(batch, True, windows=3)
        model._release_pool()
        _, fit_step = timed_fit(model, X[:n], y[:n], batch, steps=n // batch)
        rows.append({"t_s": time.perf_counter() - t0, "timed_step_ms": 1e3 * timed,
                     "fit_step_ms": 1e3 * fit_step})
    confirm = {label: [1e3 * t for t in ts] for label, ts in (plan.confirm_rounds_s or {}).items()}
    return {"model": model_name, "batch_size": batch, "policy": policy,
            "plan": [d.name for d in plan.devices], "confirm_rounds_ms": confirm, "pairs": rows}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_output_args(p)
    p.add_argument("--pairs", type=int, default=8)
    args = p.parse_args()
    from _common import machine, run_without_openblas_pins, write_results
    run_without_openblas_pins()
    results = {"benchmark": "plan_vs_fit", "cells": []}
    for cell in CELLS:
        r = pairs_for(*cell, args.pairs)
        results["cells"].append(r)
        ratios = [row["timed_step_ms"] / row["fit_step_ms"] for row in r["pairs"]]
        fits = [row["fit_step_ms"] for row in r["pairs"]]
        planning = ", ".join(f"{label.split(':')[-1]}: {min(v):.3f}-{max(v):.3f}"
                             for label, v in r["confirm_rounds_ms"].items()) or "-"
        print(f"{r['model']} b{r['batch_size']} {r['policy']}: timed / fit per pair "
              f"{' '.join(f'{x:.2f}' for x in ratios)}; fit step {min(fits):.3f}-{max(fits):.3f}"
              f" ms; planning rounds {planning} ms", flush=True)
    results["machine"] = machine()
    write_results(results, "plan_vs_fit", args)


if __name__ == "__main__":
    main()
