"""A GPU rank and a CPU rank of one host (hetnet.distributed) against the
GPU alone.

    python benchmarks/bench_distributed_gpu_cpu.py [--models lenet5 resnet15]
        [--batch 1024] [--gpu gpu] [--cpu-threads N] [--n 16384] [--epochs 3]
        [--rounds 2] [--record]

For each model, in alternating rounds (the host's speed drifts), fresh
processes train on the same random data of the model's input shape
(throughput does not depend on the values):

- ``gpu``: one process on the GPU, a plain ``fit`` (``fuse="auto"``: the
  whole-network fused step where it applies);
- ``gpu_layers``: the same with ``fuse="never"``, the layer-by-layer step a
  data-parallel fit runs (the fused step is one process's);
- ``gpu+cpu``: ``mpirun -n 2``: rank 0 on the GPU, rank 1 on the CPU with
  ``--cpu-threads`` threads (default: the cores less one, which drives the
  GPU), ``fit(distributed=True)`` at the same global batch, the batch split
  by the ranks' measured speeds (``balance="speed"``, re-measured every
  epoch: the first epoch splits equally).

Each run is one ``fit`` of ``1 + --epochs`` epochs; the first (planning,
kernel builds, the equal split) is not timed; images/s is the median of the
others (samples over the epoch's loop time).  For ``gpu+cpu`` it also
reports each epoch's shares of the batch (GPU rank, CPU rank), the gradient averaging's wall time
per step in the fit (staging the GPU's gradient through the host, the
reduction and the wait for the slower rank), and the reduction of the
model's parameter count alone, back to back on host buffers without
training, by blocking ``Allreduce`` and by ``Iallreduce`` (µs per call, the
slower rank's mean: what the transport costs; the issue's target is 50 µs
for LeNet-5's 62k parameters within a host).

``--gpu`` names the GPU rank's device: ``gpu`` (default) the host's first
OpenCL GPU; ``opencl:P:D`` any OpenCL device, such as PoCL's CPU device
standing in for a GPU on a machine without one (then the figures say
nothing about speed).  Without such a device the benchmark says so and exits
0.  The ranks are started with ``--bind-to none`` (Open MPI binds each of two
ranks to one core by default, which would leave the CPU rank one thread),
``--allow-run-as-root`` as root, ``--oversubscribe`` when the host has fewer
cores than ranks; the GPU rank's host side (OpenMP, OpenBLAS, hetnet's CPU
threads) on one thread, so that it does not spin on the CPU rank's cores.  ``--record`` writes
benchmarks/results/distributed_gpu_cpu/<machine>.json (benchmarks/README.md).
"""

import argparse
import json
import os
import sys

import numpy as np


from _common import (add_output_args, allreduce_alone, cores_available, machine,
                     mpirun_launcher, run_worker, write_results)

MODELS = ("lenet5", "resnet15")
KINDS = ("gpu", "gpu_layers", "gpu+cpu")


def build(name, device, fuse="auto"):
    import hetnet as hn
    if name == "resnet15":
        return hn.models.resnet15(input_size=32, seed=0, device=device, fuse=fuse)
    return hn.models.lenet5(seed=0, device=device, fuse=fuse)


def data(name, n):
    rng = np.random.default_rng(0)
    shape = (1, 32, 32) if name == "resnet15" else (1, 28, 28)
    X = rng.random((n,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int32)
    return X, y


def gpu_spec(spec):
    """The device spec ``--gpu`` stands for, or None when there is none."""
    if spec != "gpu":
        return spec
    from hetnet.distributed import host_gpus
    gpus = host_gpus()
    return gpus[0] if gpus else None


def worker(args):
    import hetnet as hn
    from hetnet.devices.cpu import CPUDevice
    X, y = data(args.model, args.n)
    ctx = None
    if args.kind == "gpu+cpu":
        from hetnet.distributed import init
        device = (hn.get_device(args.gpu) if args.role == "gpu"
                  else CPUDevice(num_threads=args.cpu_threads))
        ctx = init(device=device, balance="speed")
        if ctx.size != 2 or (ctx.rank == 0) != (args.role == "gpu"):
            raise SystemExit(f"the gpu+cpu run needs 2 ranks, rank 0 on the GPU; got rank "
                             f"{ctx.rank} of {ctx.size} as the {args.role} rank")
        device = ctx.device
    else:
        device = hn.get_device(args.gpu)
    model = build(args.model, device, "never" if args.kind == "gpu_layers" else "auto")
    fit = dict(batch_size=args.batch, optimizer=hn.SGD(lr=0.01, momentum=0.9))
    if ctx is not None:
        fit["distributed"] = ctx
    hist = model.fit(X, y, epochs=1 + args.epochs, **fit)
    timed = hist["time_s"][1:]
    steps = -(-args.n // args.batch)
    result = {"images_per_s": float(np.median([args.n / t for t in timed])), "epoch_s": timed,
              "first_epoch_s": hist["time_s"][0], "steps_per_epoch": steps,
              "parameters": int(model.count_params()), "device": device.name}
    if ctx is not None:
        result["shares"] = hist["shares"]
        result["cpu_threads"] = args.cpu_threads
        result["averaging_us_per_step"] = float(np.median(
            [1e6 * s / steps for s in hist["allreduce_s"][1:]]))
        size = result["parameters"]
        result["allreduce_alone_us"] = allreduce_alone(ctx, size, False)
        result["iallreduce_alone_us"] = allreduce_alone(ctx, size, True)
        name = np.frombuffer(device.name.encode()[:64].ljust(64), dtype=np.uint8)
        result["devices"] = [bytes(row).decode().rstrip() for row in ctx.allgather(name)]
        if not ctx.is_root:
            return
    print("RESULT " + json.dumps(result), flush=True)


def run(args, model, kind):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--model", model,
           "--kind", kind, "--batch", str(args.batch), "--epochs", str(args.epochs),
           "--n", str(args.n), "--gpu", args.gpu, "--cpu-threads", str(args.cpu_threads)]
    if kind == "gpu+cpu":
        launcher = mpirun_launcher(2, "bench_distributed_gpu_cpu", bind="none")
        # two app contexts: rank 0 the GPU's, its host side on one thread (its
        # BLAS and OpenMP threads would spin on the cores the CPU rank computes on)
        one = [f"{v}=1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                  "HETNET_NUM_THREADS")]
        cmd = (launcher + ["-n", "1", "env", *one, *cmd, "--role", "gpu", ":",
                           "-n", "1", *cmd, "--role", "cpu"])
    return run_worker(cmd, "bench_distributed_gpu_cpu")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--batch", type=int, default=1024, help="global batch (default 1024)")
    p.add_argument("--gpu", default="gpu",
                   help="the GPU rank's device: 'gpu' (the host's first OpenCL GPU, default) "
                        "or opencl:P:D")
    p.add_argument("--cpu-threads", type=int, default=None,
                   help="the CPU rank's threads (default: the cores less one)")
    p.add_argument("--n", type=int, default=16384, help="training samples (default 16384)")
    p.add_argument("--epochs", type=int, default=3,
                   help="timed epochs per run, after one untimed (default 3)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    add_output_args(p)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--kind", default="gpu", choices=KINDS, help=argparse.SUPPRESS)
    p.add_argument("--model", default="lenet5", help=argparse.SUPPRESS)
    p.add_argument("--role", default="gpu", choices=("gpu", "cpu"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.cpu_threads is None:
        args.cpu_threads = max(1, cores_available() - 1)
    if args.worker:
        return worker(args)
    spec = gpu_spec(args.gpu)
    if spec is None:
        print("bench_distributed_gpu_cpu: SKIP no OpenCL GPU on this host; pass "
              "--gpu opencl:P:D to use another OpenCL device (e.g. PoCL's) in its place")
        return
    args.gpu = spec
    results = {"machine": None, "batch": args.batch, "gpu": spec,
               "cpu_threads": args.cpu_threads, "n": args.n, "epochs": args.epochs,
               "rounds": args.rounds, "models": {}}
    for model in args.models:
        rounds = {k: [] for k in KINDS}
        for r in range(args.rounds):
            for kind in (KINDS if r % 2 == 0 else KINDS[::-1]):
                rounds[kind].append(run(args, model, kind))
                extra = (f", shares {rounds[kind][-1]['shares'][-1]}" if kind == "gpu+cpu"
                         else "")
                print(f"{model} round {r + 1} {kind}: "
                      f"{rounds[kind][-1]['images_per_s']:,.0f} images/s{extra}", flush=True)
        med = {k: float(np.median([x["images_per_s"] for x in rounds[k]])) for k in KINDS}
        both = rounds["gpu+cpu"]
        entry = {f"{k.replace('+', '_')}_images_per_s": v for k, v in med.items()}
        entry.update({
            "gpu_cpu_over_gpu": med["gpu+cpu"] / med["gpu"],
            "gpu_cpu_over_gpu_layers": med["gpu+cpu"] / med["gpu_layers"],
            "shares": both[-1]["shares"],
            "averaging_us_per_step": float(np.median([x["averaging_us_per_step"] for x in both])),
            "allreduce_alone_us": float(np.median([x["allreduce_alone_us"] for x in both])),
            "iallreduce_alone_us": float(np.median([x["iallreduce_alone_us"] for x in both])),
            "parameters": both[0]["parameters"], "devices": both[0]["devices"],
            "rounds": rounds})
        results["models"][model] = entry
        target = ("" if model != "lenet5" else
                  f" (target <= 50 µs: {'met' if entry['allreduce_alone_us'] <= 50 else 'missed'})")
        print(f"{model} b{args.batch}: GPU alone {med['gpu']:,.0f} images/s (layer by layer "
              f"{med['gpu_layers']:,.0f}); GPU + CPU ({args.cpu_threads} CPU threads) "
              f"{med['gpu+cpu']:,.0f} images/s ({entry['gpu_cpu_over_gpu']:.2f}x the GPU alone, "
              f"{entry['gpu_cpu_over_gpu_layers']:.2f}x layer by layer), last shares "
              f"{entry['shares'][-1]}; averaging {entry['averaging_us_per_step']:.0f} µs/step; "
              f"{entry['parameters']:,} floats alone: Allreduce "
              f"{entry['allreduce_alone_us']:.1f} µs{target}, Iallreduce "
              f"{entry['iallreduce_alone_us']:.1f} µs", flush=True)
    import hetnet as hn
    dev = hn.get_device(spec)
    results["machine"] = machine(dev if hasattr(dev, "cl_device") else None)
    write_results(results, "distributed_gpu_cpu", args)


if __name__ == "__main__":
    main()
