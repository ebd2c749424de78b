"""MLP training on full Fashion-MNIST on the CPU: HetNetClassifier beside
scikit-learn's MLPClassifier.

Both fit the same network, 784-120-84-10 with ReLU, with SGD (momentum 0.9,
no Nesterov, constant learning rate 0.01, no L2 penalty) for 3 epochs with
reshuffling, at batch 64 and 256, with the same number of threads (the BLAS
under MLPClassifier is held to it with threadpoolctl).  Neither can stop
early: 3 epochs are fewer than n_iter_no_change.  Reported: training
images/s (training images x epochs / ``fit`` wall time, input checks
included) and test accuracy, for each of three seeds (random_state: the
initialisation and the shuffling).  Ten seeds by default: the last iterate
of constant-rate SGD moves test accuracy by about half a point from seed to
seed, so three seeds cannot tell the two libraries' accuracy apart; the mean
is given with its standard error.  Each seed fits the two libraries back to
back, and the speedup quoted is the median over seeds of that pair's ratio
(the machine's speed drifts over minutes; a pair shares its conditions);
medians and bests of each library's throughput are recorded beside it.  This machine is shared: before each fit the script
waits (up to --max-wait seconds) for the CPUs to be idle, and records how
busy they were, since work beside a run can slow it severalfold.  The
initialisations differ (He normal in hetnet, Glorot uniform in
scikit-learn), as each library's users get them.

    python benchmarks/bench_mlp_sklearn.py [--threads 2] [--epochs 3] [--batches 64 256]
                                           [--seeds 42 43 44]

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, when set in the environment, pin
OpenBLAS to a slower kernel; unless --keep-openblas-env is given, the script
re-runs itself with both unset.  Which kernel ran is recorded (threadpoolctl).
Results: benchmarks/local/mlp_sklearn/<machine>.json
(``--record``: benchmarks/results/mlp_sklearn/<machine>.json).
"""

import argparse
import os
import statistics
import time
import warnings

from _common import add_output_args
HIDDEN = (120, 84)
LABELS = {"sklearn": "MLPClassifier", "hetnet": "HetNetClassifier"}


def mean(values):
    values = list(values)
    return sum(values) / len(values)


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="threads for both (default 2)")
    p.add_argument("--epochs", type=int, default=3, help="epochs (default 3)")
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256],
                   help="batch sizes (default 64 256)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(42, 52)),
                   help="random_state values, one fit of each library per seed (default 42..51)")
    p.add_argument("--max-wait", type=float, default=120.0,
                   help="seconds to wait for idle CPUs before each fit (default 120; 0: never)")
    p.add_argument("--keep-openblas-env", action="store_true",
                   help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE as they are")
    add_output_args(p)
    return p.parse_args()


def common_params(args, batch, seed):
    """The settings the two estimators share, by their common names."""
    return dict(hidden_layer_sizes=HIDDEN, learning_rate_init=args.lr, momentum=0.9, alpha=0.0,
                batch_size=batch, max_iter=args.epochs, shuffle=True, tol=0.0,
                n_iter_no_change=args.epochs + 1, random_state=seed)


def cpu_busy(seconds):
    """Fraction of all CPUs' time that was not idle over ``seconds`` (Linux)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    try:
        t0, i0 = snap()
        time.sleep(seconds)
        t1, i1 = snap()
    except OSError:
        return None
    return 1 - (i1 - i0) / max(1, t1 - t0)


def wait_for_idle(max_wait, threshold=0.08, window=2.0):
    """Wait until the CPUs were idle for ``window`` seconds; the last busy fraction seen."""
    busy = None
    deadline = time.monotonic() + max_wait
    while True:
        busy = cpu_busy(window)
        if busy is None or busy < threshold or time.monotonic() > deadline:
            return busy


def timed_fit(est, X, y, Xte, yte, epochs, max_wait):
    busy = wait_for_idle(max_wait) if max_wait > 0 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # ConvergenceWarning: 3 epochs by design
        t0 = time.perf_counter()
        est.fit(X, y)
        fit_s = time.perf_counter() - t0
    assert est.n_iter_ == epochs, f"{type(est).__name__} ran {est.n_iter_} epochs, not {epochs}"
    return {"images_per_s": len(y) * epochs / fit_s, "fit_s": fit_s, "cpu_busy_before": busy,
            "test_accuracy": float(est.score(Xte, yte)),
            "final_train_loss": float(est.loss_curve_[-1])}


def sklearn_run(args, batch, seed, X, y, Xte, yte):
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits
    est = MLPClassifier(solver="sgd", nesterovs_momentum=False, learning_rate="constant",
                        activation="relu", **common_params(args, batch, seed))
    with threadpool_limits(limits=args.threads, user_api="blas"):
        return timed_fit(est, X, y, Xte, yte, args.epochs, args.max_wait)


def hetnet_run(args, batch, seed, X, y, Xte, yte):
    from hetnet.estimators import HetNetClassifier
    est = HetNetClassifier(optimizer="sgd", activation="relu", device="cpu",
                           n_threads=args.threads, **common_params(args, batch, seed))
    result = timed_fit(est, X, y, Xte, yte, args.epochs, args.max_wait)
    result["images_per_s_per_epoch"] = est.history_["images_per_s"]
    return result


def main():
    args = parse()
    from _common import run_without_openblas_pins, write_results
    run_without_openblas_pins(args.keep_openblas_env)
    os.environ["HETNET_NUM_THREADS"] = str(args.threads)
    import sklearn
    from _common import machine
    from hetnet.datasets import load_fashion_mnist
    X, y = load_fashion_mnist("train", source="full", flatten=True)
    Xte, yte = load_fashion_mnist("test", source="full", flatten=True)
    results = {"benchmark": "mlp_sklearn", "architecture": [784, *HIDDEN, 10],
               "activation": "relu", "optimizer": "sgd", "momentum": 0.9, "nesterov": False,
               "lr": args.lr, "alpha": 0.0, "epochs": args.epochs, "threads": args.threads,
               "train_images": len(y), "test_images": len(yte), "sklearn": sklearn.__version__,
               "throughput": "training images x epochs / fit wall time", "runs": []}
    load_before = os.getloadavg()[0]   # other work on the machine skews every figure
    for batch in args.batches:
        row = {"batch_size": batch, "seeds": args.seeds, "sklearn": [], "hetnet": []}
        for seed in args.seeds:
            for name, run in (("sklearn", sklearn_run), ("hetnet", hetnet_run)):
                r = run(args, batch, seed, X, y, Xte, yte)
                row[name].append(r)
                print(f"batch {batch:4d}  seed {seed}  {LABELS[name]:<16} {r['images_per_s']:9,.0f} "
                      f"images/s  test accuracy {r['test_accuracy']:.4f}", flush=True)
        for name in ("sklearn", "hetnet"):
            rates = [r["images_per_s"] for r in row[name]]
            accs = [r["test_accuracy"] for r in row[name]]
            row[name + "_summary"] = {
                "images_per_s_median": statistics.median(rates), "images_per_s_best": max(rates),
                "test_accuracy_mean": mean(accs),
                "test_accuracy_sem": (statistics.stdev(accs) / len(accs) ** 0.5
                                      if len(accs) > 1 else None)}
        sk, hn = row["sklearn_summary"], row["hetnet_summary"]
        pairs = [h["images_per_s"] / s["images_per_s"] for s, h in zip(row["sklearn"], row["hetnet"])]
        row["speedup_per_seed"] = pairs
        row["speedup"] = statistics.median(pairs)
        row["speedup_of_medians"] = hn["images_per_s_median"] / sk["images_per_s_median"]
        row["speedup_best"] = hn["images_per_s_best"] / sk["images_per_s_best"]
        row["accuracy_delta"] = hn["test_accuracy_mean"] - sk["test_accuracy_mean"]
        sem = lambda r: "" if r["test_accuracy_sem"] is None else f" ± {r['test_accuracy_sem']:.4f}"
        print(f"batch {batch:4d}  MLPClassifier {sk['images_per_s_median']:,.0f} images/s median "
              f"({sk['images_per_s_best']:,.0f} best), accuracy {sk['test_accuracy_mean']:.4f}"
              f"{sem(sk)}; HetNetClassifier {hn['images_per_s_median']:,.0f} "
              f"({hn['images_per_s_best']:,.0f}), {hn['test_accuracy_mean']:.4f}{sem(hn)}: "
              f"{row['speedup']:.2f}x (median of per-seed ratios; {row['speedup_of_medians']:.2f}x "
              f"of medians, {row['speedup_best']:.2f}x of bests), accuracy "
              f"{row['accuracy_delta']:+.4f}", flush=True)
        results["runs"].append(row)
    results["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    results["machine"] = machine()   # after the runs: BLAS libraries are loaded by then
    write_results(results, "mlp_sklearn", args)


if __name__ == "__main__":
    main()
