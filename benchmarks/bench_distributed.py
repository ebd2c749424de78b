"""Data-parallel training (hetnet.distributed) against one process on the
same cores: 2 ranks x 1 thread against 1 process x 2 threads.

    python benchmarks/bench_distributed.py [--models lenet5 mlp] [--batch 256]
        [--ranks 2] [--threads 2] [--rounds 3] [--record]

For each model, in alternating rounds (the host's speed drifts), fresh
processes train on the same random data of the model's input shape
(throughput does not depend on the values):

- ``single``: one process, ``--threads`` CPU threads, a plain ``fit``;
- ``distributed``: ``mpirun -n --ranks``, each rank on the CPU with
  ``--threads // --ranks`` threads, ``fit(distributed=True)`` at the same
  global batch.

Each run does one untimed epoch (planning, first touches), then ``--epochs``
timed ones; it reports training images/s (samples over the epoch's loop
time, the median epoch), and for ``distributed`` the gradient averaging's
wall time per step (scaling, the reduction and the wait for the slower
rank), the shares of the batch, and the averaging of the model's parameter
count alone, back to back without training, by blocking ``Allreduce`` (what
the fit uses for host buffers) and by ``Iallreduce`` (µs per call: what the
transport costs).  Ranks are started without ``--oversubscribe`` when the
cores suffice (with it, Open MPI yields the core at every poll).  The median of the rounds is kept.  ``--record``
writes benchmarks/results/distributed/<machine>.json, with the machine it ran on
(benchmarks/README.md).
"""

import argparse
import json
import os
import sys

import numpy as np


from _common import (add_output_args, allreduce_alone, machine, mpirun_launcher, run_worker,
                     write_results)

MODELS = ("lenet5", "mlp")


def build(name, device):
    import hetnet as hn
    if name == "mlp":
        return hn.models.mlp([784, 120, 84, 10], seed=0, device=device, input_shape=(784,))
    return hn.models.lenet5(seed=0, device=device)


def data(name, n):
    rng = np.random.default_rng(0)
    shape = (784,) if name == "mlp" else (1, 28, 28)
    X = rng.random((n,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int32)
    return X, y


def worker(args):
    from hetnet import SGD
    from hetnet.devices.cpu import CPUDevice
    X, y = data(args.model, args.n)
    if args.distributed:
        from hetnet.distributed import init
        ctx = init(device=CPUDevice(num_threads=args.threads))
        device = ctx.device
    else:
        ctx, device = None, CPUDevice(num_threads=args.threads)
    model = build(args.model, device)
    fit = dict(batch_size=args.batch, optimizer=SGD(lr=0.01, momentum=0.9))
    if ctx is not None:
        fit["distributed"] = ctx
    model.fit(X, y, epochs=1, **fit)             # planning, first touches
    hist = model.fit(X, y, epochs=args.epochs, **fit)
    steps = -(-args.n // args.batch)
    result = {"images_per_s": float(np.median([args.n / t for t in hist["time_s"]])),
              "epoch_s": hist["time_s"], "steps_per_epoch": steps, "threads": args.threads}
    if ctx is not None:
        result["ranks"] = ctx.size
        result["allreduce_us_per_step"] = float(np.median(
            [1e6 * s / steps for s in hist["allreduce_s"]]))
        result["shares"] = hist["shares"]
        size = sum(w.size for w in model.get_weights())
        result["allreduce_alone_us"] = allreduce_alone(ctx, size, False)
        result["iallreduce_alone_us"] = allreduce_alone(ctx, size, True)
        result["parameters"] = int(model.count_params())
        if not ctx.is_root:
            return
    print("RESULT " + json.dumps(result), flush=True)


def run(args, model, distributed):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--model", model,
           "--batch", str(args.batch), "--epochs", str(args.epochs), "--n", str(args.n)]
    if distributed:
        launcher = mpirun_launcher(args.ranks, "bench_distributed") + ["-n", str(args.ranks)]
        cmd = launcher + cmd + ["--distributed", "--threads", str(max(1, args.threads // args.ranks))]
    else:
        cmd += ["--threads", str(args.threads)]
    return run_worker(cmd, "bench_distributed")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--batch", type=int, default=256, help="global batch (default 256)")
    p.add_argument("--ranks", type=int, default=2, help="MPI ranks (default 2)")
    p.add_argument("--threads", type=int, default=2,
                   help="threads of the single process; each rank gets threads // ranks (default 2)")
    p.add_argument("--n", type=int, default=16384, help="training samples (default 16384)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per run (default 3)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    add_output_args(p)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default="lenet5", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    results = {"machine": machine(), "batch": args.batch, "ranks": args.ranks, "threads": args.threads, "n": args.n,
               "epochs": args.epochs, "rounds": args.rounds, "models": {}}
    for model in args.models:
        rounds = {"single": [], "distributed": []}
        for r in range(args.rounds):
            for kind in (("single", "distributed") if r % 2 == 0 else ("distributed", "single")):
                rounds[kind].append(run(args, model, kind == "distributed"))
                print(f"{model} round {r + 1} {kind}: "
                      f"{rounds[kind][-1]['images_per_s']:,.0f} images/s", flush=True)
        single = float(np.median([x["images_per_s"] for x in rounds["single"]]))
        dist = float(np.median([x["images_per_s"] for x in rounds["distributed"]]))
        entry = {"single_images_per_s": single, "distributed_images_per_s": dist,
                 "distributed_over_single": dist / single,
                 "allreduce_us_per_step": float(np.median(
                     [x["allreduce_us_per_step"] for x in rounds["distributed"]])),
                 "allreduce_alone_us": float(np.median(
                     [x["allreduce_alone_us"] for x in rounds["distributed"]])),
                 "iallreduce_alone_us": float(np.median(
                     [x["iallreduce_alone_us"] for x in rounds["distributed"]])),
                 "parameters": rounds["distributed"][0]["parameters"], "rounds": rounds}
        results["models"][model] = entry
        print(f"{model} b{args.batch}: 1 process x {args.threads} threads {single:,.0f} images/s; "
              f"{args.ranks} ranks x {max(1, args.threads // args.ranks)} thread(s) {dist:,.0f} "
              f"images/s ({dist / single:.2f}x); averaging {entry['allreduce_us_per_step']:.0f} "
              f"µs/step; {entry['parameters']:,} floats alone: Allreduce "
              f"{entry['allreduce_alone_us']:.0f} µs, Iallreduce {entry['iallreduce_alone_us']:.0f} "
              "µs", flush=True)
    write_results(results, "distributed", args)


if __name__ == "__main__":
    main()
