"""What planning again costs the fit right after it: auto's fit just after
``model.plan(batch, refresh=True)`` against the same model with its plan
kept and against the gpu policy, the same placement, in interleaved rounds.

    python benchmarks/bench_replan.py [--record] [--machine NAME] [--rounds 10]

Modes per round (each a timed one-epoch ``fit``, as ``bench_matrix.py``
times it: step time from ``History.time_s``, throughput from wall time):
``gpu``; ``auto_keep`` (plan kept); ``auto_replan`` (re-planned just
before); ``auto_replan_sleep`` (re-planned, then 0.3 s idle: whether CPU
threads still spinning from planning's CPU steps are what slows it);
``gpu_after_cpu`` (the cpu model's timed steps just before, no re-plan),
and that with the pause.  Needs an OpenCL GPU.
Results: benchmarks/local/replan/<machine>.json
(``--record``: benchmarks/results/replan/<machine>.json).
"""

import argparse
import time

import numpy as np

from _common import add_output_args

CELLS = (("convnet", 256, 13312), ("lenet5", 1024, 34816), ("mlp", 64, 16704))
MODES = ("gpu", "auto_keep", "auto_replan", "auto_replan_sleep", "gpu_after_cpu",
         "gpu_after_cpu_sleep")


def run_cell(model_name, batch, n, rounds):
    import hetnet as hn
    from bench_matrix import build, timed_fit
    rng = np.random.default_rng(0)
    models = {}
    for policy in ("gpu", "auto", "cpu"):
        model, shape = build(model_name, policy)
        X = rng.random((max(2 * batch, 64),) + shape, dtype=np.float32)
        y = rng.integers(0, 10, len(X))
        model.fit(X, y, epochs=1, batch_size=batch, optimizer=hn.SGD(lr=1e-3, momentum=0.9))
        model.fit(X, y, epochs=1, batch_size=batch)
        models[policy] = model
    X, y = rng.random((n,) + shape, dtype=np.float32), rng.integers(0, 10, n)
    res = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            if mode.startswith("gpu"):
                model = models["gpu"]
                if "after_cpu" in mode:
                    models["cpu"]._measure_step(batch, True, 3)
            else:
                model = models["auto"]
                if "replan" in mode:
                    model.plan(batch, training=True, refresh=True)
            if mode.endswith("sleep"):
                time.sleep(0.3)
            elapsed, step_s = timed_fit(model, X, y, batch, steps=n // batch)
            res[mode].append((1e3 * step_s, n / elapsed))
    return {"median_step_ms_and_img_s": {
                mode: (round(float(np.median([s for s, _ in v])), 3),
                       round(float(np.median([t for _, t in v]))))
                for mode, v in res.items()},
            "rounds": res}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_output_args(p)
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    from _common import machine, write_results
    out = {"benchmark": "replan", "rounds": args.rounds}
    for model_name, batch, n in CELLS:
        out[f"{model_name}-b{batch}"] = cell = run_cell(model_name, batch, n, args.rounds)
        print(model_name, batch, cell["median_step_ms_and_img_s"], flush=True)
    out["machine"] = machine()
    write_results(out, "replan", args)


if __name__ == "__main__":
    main()
