"""hetnet's SHADE against mealpy's SHADE: final error and wall time per evaluation.

Both run the same population size and the same number of evaluations, from
their own seeded uniform initial populations, on five standard functions at
D = 30 (each shifted by a fixed seeded vector so that the optimum is not the
centre of the box; the ellipsoid is also rotated by a fixed seeded
orthogonal matrix).  hetnet evaluates a generation in one vectorised call,
mealpy one candidate at a time; the functions share one implementation that
takes (D,) or (P, D).  The error is f(best) - f(optimum) = f(best).

mealpy is a benchmark-only dependency; keep it out of hetnet's environment::

    python3 -m venv /work/venv-mealpy
    /work/venv-mealpy/bin/pip install mealpy numpy scipy
    PYTHONPATH=. /work/venv-mealpy/bin/python benchmarks/bench_shade_mealpy.py --seeds 2 --evals 2000
    PYTHONPATH=. python benchmarks/bench_shade_mealpy.py --record   (mealpy installed in that python)

mealpy's runs do not depend on hetnet's code, so after a change to hetnet's
SHADE only hetnet's half needs running again: ``--mealpy-from FILE`` takes
mealpy's errors and wall times from an earlier result of the same
configuration and records which file and machine they came from (compare
the wall times only when that machine is this one).
"""

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np

from _common import add_output_args, machine, write_results


def make_functions(dim, seed=2013):
    """name -> (f accepting (D,) or (P, D), half-width of the box)."""
    rng = np.random.default_rng(seed)

    def shift(r):
        return rng.uniform(-0.8 * r, 0.8 * r, dim)

    o_sph, o_ell, o_ros = shift(100.0), shift(100.0), shift(30.0)
    o_ras, o_ack = shift(5.12), shift(32.768)
    rot, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    cond = 10.0 ** (6.0 * np.arange(dim) / (dim - 1))

    def sphere(x):
        z = x - o_sph
        return np.sum(z * z, axis=-1)

    def rotated_ellipsoid(x):
        z = (x - o_ell) @ rot.T
        return np.sum(cond * z * z, axis=-1)

    def rosenbrock(x):
        z = x - o_ros + 1.0
        a, b = z[..., :-1], z[..., 1:]
        return np.sum(100.0 * (b - a * a) ** 2 + (1.0 - a) ** 2, axis=-1)

    def rastrigin(x):
        z = x - o_ras
        return 10.0 * dim + np.sum(z * z - 10.0 * np.cos(2.0 * np.pi * z), axis=-1)

    def ackley(x):
        z = x - o_ack
        return (-20.0 * np.exp(-0.2 * np.sqrt(np.mean(z * z, axis=-1)))
                - np.exp(np.mean(np.cos(2.0 * np.pi * z), axis=-1)) + 20.0 + np.e)

    return {"sphere": (sphere, 100.0), "rotated_ellipsoid": (rotated_ellipsoid, 100.0),
            "rosenbrock": (rosenbrock, 30.0), "rastrigin": (rastrigin, 5.12),
            "ackley": (ackley, 32.768)}


def run_hetnet(f, half, dim, pop, evals, seed):
    from hetnet.metaheuristics import minimize
    calls = [0]

    def counted(X):
        calls[0] += len(X)
        return f(X)

    t = time.perf_counter()
    res = minimize(counted, bounds=[(-half, half)] * dim, method="shade", max_evals=evals,
                   seed=seed, pop_size=pop)
    wall = time.perf_counter() - t
    assert calls[0] == res.nfev
    return float(res.fun), calls[0], wall


def run_mealpy(f, half, dim, pop, evals, seed):
    from mealpy import SHADE, FloatVar
    calls = [0]

    def counted(x):
        calls[0] += 1
        return float(f(x))

    problem = {"bounds": FloatVar(lb=(-half,) * dim, ub=(half,) * dim), "obj_func": counted,
               "minmax": "min", "log_to": None}
    # mealpy evaluates the initial population and then pop_size per epoch.
    model = SHADE.OriginalSHADE(epoch=evals // pop - 1, pop_size=pop)
    t = time.perf_counter()
    best = model.solve(problem, seed=seed)
    wall = time.perf_counter() - t
    return float(best.target.fitness), calls[0], wall


def summarise(errors, nfev, walls):
    errors = np.asarray(errors)
    return {"median_error": float(np.median(errors)), "mean_error": float(np.mean(errors)),
            "best_error": float(np.min(errors)), "worst_error": float(np.max(errors)),
            "errors": errors.tolist(), "nfev": nfev,
            "wall_per_eval_us_median": float(np.median(np.asarray(walls) / np.asarray(nfev)) * 1e6),
            "wall_s_total": float(np.sum(walls))}


def _last_commit(path):
    """The last commit that changed ``path`` (a recorded result is replaced in place), or None."""
    try:
        out = subprocess.run(["git", "-C", str(path.resolve().parent), "log", "-1", "--format=%h",
                              "--", path.name], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def load_mealpy_half(ap, args, names):
    """mealpy's cells of an earlier result (``--mealpy-from``), checked against this run's
    configuration; where that result reused them itself, its source is carried on."""
    path = Path(args.mealpy_from)
    try:
        prev = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        ap.error(f"--mealpy-from {path}: cannot read a result: {exc}")
    c = prev.get("config", {})
    want = {"seeds": args.seeds, "evals": args.evals, "pop_size": args.pop, "dim": args.dim}
    diff = {k: (c.get(k), v) for k, v in want.items() if c.get(k) != v}
    if diff:
        ap.error(f"--mealpy-from {path}: configuration differs (theirs, this run's): {diff}")
    missing = [n for n in names if "mealpy" not in prev.get("functions", {}).get(n, {})]
    if missing:
        ap.error(f"--mealpy-from {path}: no mealpy results for {missing}")
    source = c.get("mealpy_from") or {"file": path.as_posix(), "commit": _last_commit(path),
                                      "machine": prev.get("machine"), "made": prev.get("made")}
    return {"config": c, "source": source,
            "functions": {n: prev["functions"][n]["mealpy"] for n in names}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=25)
    ap.add_argument("--evals", type=int, default=30000,
                    help="evaluations per run (a multiple of --pop; default 1,000 D)")
    ap.add_argument("--pop", type=int, default=100, help="population size (the paper's N)")
    ap.add_argument("--dim", type=int, default=30)
    ap.add_argument("--functions", default="sphere,rotated_ellipsoid,rosenbrock,rastrigin,ackley")
    ap.add_argument("--mealpy-from", default=None, metavar="JSON",
                    help="reuse mealpy's half from an earlier result of this benchmark with "
                         "the same seeds, evals, pop and dim instead of running mealpy")
    add_output_args(ap)
    args = ap.parse_args()
    if args.evals % args.pop or args.evals < 2 * args.pop:
        ap.error(f"--evals must be a multiple of --pop and >= 2 * --pop, got {args.evals}")
    names = [n.strip() for n in args.functions.split(",") if n.strip()]

    if args.mealpy_from:
        reused = load_mealpy_half(ap, args, names)
        mealpy_version = reused["config"]["mealpy"]
    else:
        import mealpy
        mealpy_version = mealpy.__version__
    info = machine()
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:
        pass

    funs = make_functions(args.dim)
    results = {"config": {"seeds": args.seeds, "evals": args.evals, "pop_size": args.pop,
                          "dim": args.dim, "mealpy": mealpy_version,
                          "hetnet_method": "shade (memory_size = pop_size, archive = pop_size)",
                          "mealpy_method": "OriginalSHADE"},
               "machine": info, "functions": {}}
    if args.mealpy_from:
        results["config"]["mealpy_from"] = reused["source"]
    print(f"D={args.dim} pop={args.pop} evals={args.evals} seeds={args.seeds} "
          f"mealpy {mealpy_version}" + (f" (reused from {args.mealpy_from})"
                                        if args.mealpy_from else ""))
    print(f"{'function':<18} {'hetnet median':>14} {'mealpy median':>14} "
          f"{'hetnet us/ev':>12} {'mealpy us/ev':>12} {'speed-up':>9}")
    for name in names:
        f, half = funs[name]
        cell = {}
        for lib, runner in (("hetnet", run_hetnet), ("mealpy", run_mealpy)):
            if lib == "mealpy" and args.mealpy_from:
                cell[lib] = reused["functions"][name]
                continue
            errs, nfev, walls = [], [], []
            for s in range(args.seeds):
                e, n, w = runner(f, half, args.dim, args.pop, args.evals, s)
                errs.append(e)
                nfev.append(n)
                walls.append(w)
            assert max(nfev) <= args.evals, (lib, nfev)
            cell[lib] = summarise(errs, nfev, walls)
        h, m = cell["hetnet"], cell["mealpy"]
        try:
            from scipy.stats import ranksums
            cell["ranksums_p"] = float(ranksums(h["errors"], m["errors"]).pvalue)
        except ImportError:
            pass
        cell["median_error_no_worse"] = h["median_error"] <= m["median_error"]
        cell["speedup_per_eval"] = m["wall_per_eval_us_median"] / h["wall_per_eval_us_median"]
        results["functions"][name] = cell
        print(f"{name:<18} {h['median_error']:>14.4e} {m['median_error']:>14.4e} "
              f"{h['wall_per_eval_us_median']:>12.3f} {m['wall_per_eval_us_median']:>12.2f} "
              f"{cell['speedup_per_eval']:>8.1f}x", flush=True)

    write_results(results, "shade_mealpy", args)


if __name__ == "__main__":
    main()
