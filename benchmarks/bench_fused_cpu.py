"""LeNet-5 training on the CPU: the fused per-tile step, the layer-by-layer
step and PyTorch, at the same thread count.

Training images/s of LeNet-5 (28x28 Fashion-MNIST shape, random data, SGD
with momentum 0.9) at each batch size: hetnet with ``fuse="always"`` (the
fused CPU step of :mod:`hetnet.runtime.fused_cpu`), hetnet with
``fuse="never"`` (layer by layer) and PyTorch (``torch.set_num_threads``).
Each measurement is one epoch over ``--images`` images (batches gathered
from a shuffled order, as ``fit`` does); the three run interleaved, their
order rotated each round, ``--rounds`` rounds; the medians are reported with
the spread (min..max) and the per-round ratios fused / layer and fused /
PyTorch (paired: the same round), and the load average before each round is
recorded (other work on the cores slows the layer path's many parallel
regions a step far more than the fused step's three).  Also the whole-set loss and gradient
(L-BFGS's evaluation in :mod:`hetnet.model.evolve`) of LeNet-5 at 32x32 over
``--set-images`` images, fused and layer by layer, interleaved.

    python benchmarks/bench_fused_cpu.py [--threads 2] [--rounds 5] [--batches 64 256]

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, when set, pin OpenBLAS to a slower
kernel; unless --keep-openblas-env is given the script re-runs itself with
both unset.  The kernel that ran is recorded (``machine.blas_libraries``).
Results: benchmarks/local/fused_cpu/<machine>.json (``--record``:
benchmarks/results/fused_cpu/<machine>.json).
"""

import argparse
import os
import statistics
import time

from _common import add_output_args


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    p.add_argument("--images", type=int, default=4096, help="images per timed epoch")
    p.add_argument("--set-images", type=int, default=10000,
                   help="images of the whole-set loss and gradient (0: skip it)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--keep-openblas-env", action="store_true",
                   help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE as they are")
    add_output_args(p)
    return p.parse_args()


def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


def main():
    args = parse()
    from _common import run_without_openblas_pins
    run_without_openblas_pins(args.keep_openblas_env)
    os.environ["HETNET_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import hetnet as hn
    from hetnet.devices.cpu import CPUDevice
    from hetnet.runtime.fused_cpu import CPUFusedTrainer
    from _common import machine, write_results
    dev = CPUDevice(num_threads=args.threads)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.images, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, args.images).astype(np.int32)

    def hetnet_model(fuse):
        return hn.models.lenet5(seed=42, device=dev, fuse=fuse)

    models = {}
    tiles = {}
    for batch in args.batches:
        for fuse in ("always", "never"):
            m = models[batch, fuse] = hetnet_model(fuse)
            m.fit(X[:2 * batch], y[:2 * batch], epochs=1, batch_size=batch,
                  optimizer=hn.SGD(lr=1e-3, momentum=0.9))      # warm-up (and the plan)
        tiles[batch] = CPUFusedTrainer(models[batch, "always"], batch_size=batch).tile

    def run_hetnet(batch, fuse):
        h = models[batch, fuse].fit(X, y, epochs=1, batch_size=batch)
        return h["images_per_s"][-1]

    torch_version = None
    if not args.no_torch:
        import torch
        from _lenet5_common import torch_lenet5
        torch.set_num_threads(args.threads)
        torch_version = torch.__version__
        nets = {b: torch_lenet5(hetnet_model("never").get_weights()) for b in args.batches}
        opts = {b: torch.optim.SGD(nets[b].parameters(), lr=1e-3, momentum=0.9)
                for b in args.batches}
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
        loss_fn = torch.nn.CrossEntropyLoss()

        def run_torch(batch):
            net, opt = nets[batch], opts[batch]
            t0 = time.perf_counter()
            order = torch.randperm(len(yt))
            for s in range(0, len(yt), batch):
                idx = order[s:s + batch]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(Xt[idx]), yt[idx])
                loss.backward()
                opt.step()
            return len(yt) / (time.perf_counter() - t0)

        for b in args.batches:
            run_torch(b)        # warm-up

    impls = ["fused", "layer"] + ([] if args.no_torch else ["torch"])
    rates = {(b, k): [] for b in args.batches for k in impls}
    load = []           # the 1-minute load average before each round: other work on the cores
    for r in range(args.rounds):
        load.append(os.getloadavg()[0])
        for batch in args.batches:
            order = impls[r % len(impls):] + impls[:r % len(impls)]
            for k in order:
                rate = (run_hetnet(batch, "always") if k == "fused" else
                        run_hetnet(batch, "never") if k == "layer" else run_torch(batch))
                rates[batch, k].append(rate)
            print(f"round {r + 1} batch {batch}: " + ", ".join(
                f"{k} {rates[batch, k][-1]:.0f}" for k in impls) + " images/s", flush=True)

    runs = []
    for batch in args.batches:
        row = {"batch_size": batch, "tile": tiles[batch],
               "fused_images_per_s": spread(rates[batch, "fused"]),
               "layer_images_per_s": spread(rates[batch, "layer"]),
               "fused_over_layer": spread([f / l for f, l in zip(rates[batch, "fused"],
                                                                 rates[batch, "layer"])])}
        if not args.no_torch:
            row["torch_images_per_s"] = spread(rates[batch, "torch"])
            row["fused_over_torch"] = spread([f / t for f, t in zip(rates[batch, "fused"],
                                                                    rates[batch, "torch"])])
            row["layer_over_torch"] = spread([f / t for f, t in zip(rates[batch, "layer"],
                                                                    rates[batch, "torch"])])
        runs.append(row)

    whole_set = None
    if args.set_images:
        Xs = rng.standard_normal((args.set_images, 1, 32, 32)).astype(np.float32)
        ys = rng.integers(0, 10, args.set_images).astype(np.int32)
        m = hn.models.lenet5(seed=42, device=dev, input_size=32, fuse="never")
        tr = CPUFusedTrainer(m, batch_size=args.set_images)
        tr.set_data(Xs, ys)
        fused_s, layer_s = [], []
        tr.loss_and_gradients(None, None)
        m.loss_and_gradients(Xs, ys)
        for r in range(args.rounds):
            for k in (("fused", "layer") if r % 2 == 0 else ("layer", "fused")):
                t0 = time.perf_counter()
                if k == "fused":
                    tr.loss_and_gradients(None, None)
                    fused_s.append(time.perf_counter() - t0)
                else:
                    with m.runtime.session():
                        m.runtime.loss_and_gradients(Xs, ys, read_gradients=False)
                    layer_s.append(time.perf_counter() - t0)
        whole_set = {"images": args.set_images, "input": [1, 32, 32], "tile": tr.tile,
                     "fused_s": spread(fused_s), "layer_s": spread(layer_s),
                     "layer_over_fused": spread([l / f for f, l in zip(fused_s, layer_s)])}
        print(f"whole-set loss and gradient, {args.set_images} images at 32x32: fused "
              f"{whole_set['fused_s']['median'] * 1e3:.0f} ms, layer by layer "
              f"{whole_set['layer_s']['median'] * 1e3:.0f} ms (medians of {args.rounds})")

    print(f"\nLeNet-5, {args.threads} threads, {args.images} random 28x28 images an epoch, "
          f"{args.rounds} interleaved rounds: median images/s (min..max)")
    for row in runs:
        line = f"batch {row['batch_size']:4d} (tile {row['tile']}):"
        for k in ("fused", "layer", "torch"):
            s = row.get(f"{k}_images_per_s")
            if s:
                line += f"  {k} {s['median']:.0f} ({s['min']:.0f}..{s['max']:.0f})"
        line += f"  fused/layer {row['fused_over_layer']['median']:.2f}"
        if "fused_over_torch" in row:
            line += (f"  fused/torch {row['fused_over_torch']['median']:.2f}"
                     f"  layer/torch {row['layer_over_torch']['median']:.2f}")
        print(line)
    results = {"threads": args.threads, "rounds": args.rounds, "images": args.images,
               "optimizer": "SGD(lr=1e-3, momentum=0.9)", "torch": torch_version,
               "load_average_before_rounds": load, "runs": runs,
               "whole_set_loss_and_gradient": whole_set, "machine": machine()}
    write_results(results, "fused_cpu", args)


if __name__ == "__main__":
    main()
