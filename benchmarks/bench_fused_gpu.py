"""Fused training step on an OpenCL GPU: LeNet-5, LeNet-5-BN and the MLP 784-120-84-10,
fused (hetnet.runtime.fused: 3 kernels a step; LeNet-5-BN's BatchNorms in
training split it into 5 segments, 19 kernels) beside hetnet's layer-by-layer
step and PyTorch (eager, and one CUDA graph per step; LeNet-5-BN's twin with
its BatchNorms in training mode) on the same GPU, in one run.

Reported per model and batch size: training images/s, kernels per step,
host µs per step (enqueueing a step as trained, not waiting), device µs per
step (OpenCL markers on a profiling queue around many steps: kernels and the
gaps between them) and each fused kernel's own µs; the fraction of the GPU's
FP32 peak the fused step reaches; LeNet-5 inference at batch 1000 (and
LeNet-5-BN's, its BatchNorms folded into the layers before them, beside
PyTorch in eval mode); and, with
``--accuracy``, LeNet-5 test accuracy after 5 epochs fused and layer by
layer from the same initial weights in the same sample order on the
shipped Fashion-MNIST sample.

Throughput data are random images of the right shape (resident on the
device for the fused step and for the CUDA graph; gathered on the host and
uploaded per batch for hetnet's layer-by-layer step and PyTorch eager, as
their ``fit`` loops do).  SGD with momentum 0.9 at a constant learning rate.

    python benchmarks/bench_fused_gpu.py [--batches 64 256 1024] [--models lenet5 lenet5_bn mlp]
        [--no-torch] [--accuracy] [--sequential] [--tiles 1 2 4] [--train-wgs 256 512]
        [--record | --out PATH]

``--device cpu`` runs it on an OpenCL CPU device (PoCL) with PyTorch off
(no CUDA): a check that it runs end to end, e.g. ``--device cpu --batches 16
--images 256 --lbl-images 64 --models lenet5_bn``; its figures are not the GPU's.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _common import add_output_args, capture_cuda_graph, machine, write_results  # noqa: E402

#: FP32 peak of the GPU the figures are compared with (NVIDIA H100/H200 SXM
#: datasheet: 67 TFLOP/s); --peak-tflops overrides it
DEFAULT_PEAK_TFLOPS = 67.0
MODELS = {"lenet5": (1, 28, 28), "lenet5_bn": (1, 28, 28), "mlp": (784,)}
#: input shapes of every model built here
SHAPES = dict(MODELS)


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="gpu")
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--models", nargs="+", default=["lenet5", "lenet5_bn", "mlp"],
                   choices=sorted(MODELS))
    p.add_argument("--images", type=int, default=60000, help="fused / CUDA-graph epoch size")
    p.add_argument("--lbl-images", type=int, default=16384,
                   help="images per timed epoch of the slower layer-by-layer and eager runs")
    p.add_argument("--tiles", type=int, nargs="*", default=[],
                   help="also time the fused step at these tiles (samples per work-group)")
    p.add_argument("--train-wgs", type=int, nargs="*", default=[],
                   help="also time the fused step with these work-group sizes (default tile)")
    p.add_argument("--eval-tiles", type=int, nargs="*", default=[],
                   help="also time LeNet-5 inference at b1000 with these fused_eval tiles")
    p.add_argument("--eval-wgs", type=int, nargs="*", default=[],
                   help="... and these fused_eval work-group sizes (every pair with the tiles)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--accuracy", action="store_true")
    p.add_argument("--sequential", action="store_true",
                   help="also Sequential.fit with fuse='auto' on the GPU: the choice and images/s")
    p.add_argument("--peak-tflops", type=float, default=DEFAULT_PEAK_TFLOPS)
    add_output_args(p)
    return p.parse_args()


def build_model(name, device, seed=42, fuse="never"):
    """LeNet-5 or the MLP; layer by layer unless ``fuse`` says otherwise
    (the fused runs drive :class:`FusedTrainer` themselves)."""
    import hetnet as hn
    layers = (hn.models.lenet5_layers() if name == "lenet5"
              else hn.models.lenet5_layers(batch_norm=True) if name == "lenet5_bn"
              else hn.models.mlp_layers([784, 120, 84, 10]))
    return hn.Sequential(layers, device=device, seed=seed, input_shape=SHAPES[name],
                         fuse=fuse)


def flops_per_image(model):
    """Multiply-adds x 2 of one training image: forward, the input
    gradients (not of the first layer) and the weight gradients."""
    from hetnet.layers import Conv2D, Dense
    fwd, first = [], True
    for layer in model._steps:
        if isinstance(layer, Conv2D):
            f, ho, wo = layer.output_shape
            kh, kw = layer.kernel_size
            fwd.append((f * ho * wo * layer.in_channels * kh * kw, first))
        elif isinstance(layer, Dense):
            fwd.append((layer.in_features * layer.out_features, first))
        else:
            continue
        first = False
    forward = sum(m for m, _ in fwd)
    dx = sum(m for m, is_first in fwd if not is_first)
    return 2 * forward, 2 * (2 * forward + dx)


def data(name, n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n,) + MODELS[name]).astype(np.float32)
    return X, rng.integers(0, 10, n).astype(np.int32)


# --------------------------------------------------------------- fused
def step_kernels(trainer, start, batch, lr):
    """The launches of one fused SGD step, in order: ``(name, kernel,
    groups, per-step arguments, work-group size)``; a chain with BatchNorms
    has per segment j ``fwd{j}``, ``bn_stats{j}``, then ``train``, then back
    down ``bn_reduce{j}``, ``bwd{j}``."""
    p = trainer.program
    rows = []
    if trainer.segmented:
        for j, seg in enumerate(p.segments[:-1]):
            rows += [(f"fwd{j}", seg.k_fwd, seg.train_groups(batch), (start, batch),
                      seg.train_wg),
                     (f"bn_stats{j}", seg.k_stats, p.bn_groups(j), (batch,), 256)]
    rows.append(("train", p.k_train, p.train_groups(batch), (start, batch), p.train_wg))
    if trainer.segmented:
        for j in reversed(range(len(p.bns))):
            seg = p.segments[j]
            rows += [(f"bn_reduce{j}", seg.k_reduce, p.bn_groups(j), (batch,), 256),
                     (f"bwd{j}", seg.k_bwd, seg.train_groups(batch), (batch,), seg.train_wg)]
    rows += [("wgrad", p.k_wgrad, p.wgrad_groups, (batch,), 256),
             ("update", p.k_sgd, -(-trainer.layout.size // 256), (lr,), 256)]
    return rows


def fused_run(name, spec, X, y, batch, lr, tile=None, profile=True, train_wg=None):
    import pyopencl as cl
    import hetnet as hn
    from hetnet.devices.opencl import OpenCLDevice
    from hetnet.runtime.fused import FusedTrainer
    dev = OpenCLDevice.from_spec(spec)
    model = build_model(name, "numpy")
    t0 = time.perf_counter()
    trainer = FusedTrainer(model, device=dev, batch_size=batch, tile=tile, train_wg=train_wg,
                           optimizer=hn.SGD(lr=lr, momentum=0.9))
    build_s = time.perf_counter() - t0
    trainer.set_data(X, y)
    trainer.fit(epochs=1, seed=1)                        # warm-up
    hist = trainer.fit(epochs=2, seed=2)
    rate = float(np.mean([h["images_per_s"] for h in hist]))
    if not profile:
        return {"images_per_s": rate}
    steps = min(300, len(y) // batch)
    Xd, yd, order, n = trainer._data
    dev.synchronize()
    t0 = time.perf_counter()
    for s in range(steps):
        trainer._step(s * batch, batch, lr)
    host = (time.perf_counter() - t0) / steps
    dev.synchronize()
    wall = (time.perf_counter() - t0) / steps
    # device time: markers around the steps on a profiling queue; each
    # kernel's own time from events (pyopencl's enqueue there)
    pdev = OpenCLDevice.from_spec(spec, profiling=True, c_enqueue=False)
    ptr = FusedTrainer(model, device=pdev, batch_size=batch, tile=tile,
                       optimizer=hn.SGD(lr=lr, momentum=0.9))
    ptr.set_data(X[:steps * batch], y[:steps * batch])
    ptr.fit(epochs=1, shuffle=False)
    p = ptr.program
    pdev.synchronize()
    m0 = cl.enqueue_marker(pdev.queue)
    for s in range(steps):
        ptr._step(s * batch, batch, lr)
    m1 = cl.enqueue_marker(pdev.queue)
    m1.wait()
    device = (m1.profile.end - m0.profile.end) * 1e-9 / steps
    per_kernel = {}
    for s in range(min(steps, 50)):
        for key, knl, groups, head, wg in step_kernels(ptr, s * batch, batch, lr):
            evt = p.launch(knl, groups, head, wg=wg)
            per_kernel.setdefault(key, []).append(evt)
    pdev.synchronize()
    per_kernel = {k: float(np.median([(e.profile.end - e.profile.start) * 1e-3 for e in evts]))
                  for k, evts in per_kernel.items()}
    _, train_flops = flops_per_image(model)
    return {"images_per_s": rate, "images_per_s_per_epoch": [h["images_per_s"] for h in hist],
            "kernels_per_step": trainer.kernels_per_step, "tile": p.tile,
            "train_wg": p.train_wg,
            "segment_tiles": [q.tile for q in getattr(p, "segments", [p])],
            "local_bytes": p.local_bytes, "wgrad_groups": p.wgrad_groups, "atomics": p.atomics,
            "build_s": build_s, "host_us_per_step": host * 1e6, "wall_us_per_step": wall * 1e6,
            "device_us_per_step": device * 1e6, "kernel_us": per_kernel,
            "tflops": train_flops * rate / 1e12, "plan": p.plan}


def fused_inference(spec, X, batch=1000, repeats=20, name="lenet5", eval_tile=None,
                    eval_wg=None):
    import hetnet as hn  # noqa: F401
    from hetnet.devices.opencl import OpenCLDevice
    from hetnet.runtime.fused import FusedTrainer
    dev = OpenCLDevice.from_spec(spec)
    trainer = FusedTrainer(build_model(name, "numpy"), device=dev, batch_size=batch,
                           training=False, eval_tile=eval_tile, eval_wg=eval_wg)
    Xd = dev.asarray(X[:batch].reshape(batch, -1))
    out = dev.empty((batch, 10))
    trainer.predict_logits(Xd, out=out)
    dev.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        trainer.predict_logits(Xd, out=out)
    dev.synchronize()
    return {"images_per_s": batch * repeats / (time.perf_counter() - t0), "kernels": 1,
            "eval_tile": trainer.program.eval_tile, "eval_wg": trainer.program.eval_wg}


# ------------------------------------------------------ layer by layer
def lbl_run(name, spec, X, y, batch, lr):
    import hetnet as hn
    from hetnet.devices.opencl import OpenCLDevice
    dev = OpenCLDevice.from_spec(spec)
    model = build_model(name, dev)
    model.fit(X[:4 * batch], y[:4 * batch], batch_size=batch,
              optimizer=hn.SGD(lr=lr, momentum=0.9))
    hist = model.fit(X, y, epochs=1, batch_size=batch)
    return {"images_per_s": hist["images_per_s"][-1]}


def sequential_auto(name, spec, X, y, batch, lr):
    """``Sequential(fuse='auto')`` on the GPU: what the policy chose and
    fit's images/s (second epoch)."""
    import hetnet as hn
    from hetnet.devices.opencl import OpenCLDevice
    model = build_model(name, OpenCLDevice.from_spec(spec), fuse="auto")
    hist = model.fit(X, y, epochs=2, batch_size=batch, optimizer=hn.SGD(lr=lr, momentum=0.9))
    use, why = model.fusion.decisions[(batch, True)]
    return {"images_per_s": hist["images_per_s"][-1], "fused": bool(use), "reason": why}


def lbl_inference(spec, X, batch=1000, name="lenet5"):
    from hetnet.devices.opencl import OpenCLDevice
    dev = OpenCLDevice.from_spec(spec)
    model = build_model(name, dev)
    model.predict_logits(X[:batch], batch_size=batch)
    t0 = time.perf_counter()
    model.predict_logits(X[:10 * batch], batch_size=batch)
    return {"images_per_s": 10 * batch / (time.perf_counter() - t0),
            "note": "host data uploaded per batch, logits read back"}


# ---------------------------------------------------------------- torch
def torch_net(name, init):
    import torch
    from torch import nn
    if name == "lenet5":
        from _lenet5_common import torch_lenet5
        return torch_lenet5(init)
    if name == "lenet5_bn":
        return torch_lenet5_bn(init)
    net = nn.Sequential(nn.Linear(784, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                        nn.Linear(84, 10))
    with torch.no_grad():
        for k, m in enumerate([net[0], net[2], net[4]]):
            m.weight.copy_(torch.from_numpy(init[2 * k].T.copy()))
            m.bias.copy_(torch.from_numpy(init[2 * k + 1]))
    return net


def torch_logit_diff(model, X):
    """Largest |logit| difference between hetnet ``model`` (inference) and its
    PyTorch twin in eval mode on ``X``: the twin computes the same network."""
    import torch
    net = torch_net("lenet5_bn", model.get_weights()).cuda().eval()
    with torch.no_grad():
        ref = net(torch.from_numpy(X).cuda()).cpu().numpy()
    return float(np.abs(model.predict_logits(X) - ref).max())


def torch_lenet5_bn(init):
    """PyTorch LeNet-5-BN holding hetnet's weights ``init`` (get_weights
    order: each layer's parameters, then a BatchNorm's running statistics)."""
    import torch
    from torch import nn
    net = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120),
                        nn.BatchNorm1d(120), nn.ReLU(), nn.Linear(120, 84), nn.BatchNorm1d(84),
                        nn.ReLU(), nn.Linear(84, 10))
    k = 0
    with torch.no_grad():
        for m in net:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w, b = init[k], init[k + 1]
                m.weight.copy_(torch.from_numpy(w if w.ndim == 4 else w.T.copy()))
                m.bias.copy_(torch.from_numpy(b))
                k += 2
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                for t, a in zip((m.weight, m.bias, m.running_mean, m.running_var),
                                init[k:k + 4]):
                    t.copy_(torch.from_numpy(a))
                k += 4
    return net


def torch_train_loss_diff(name, spec, init, X, y):
    """|loss difference| on one batch in training mode (LeNet-5-BN: batch
    statistics) between the fused trainer and the PyTorch twin from the
    same weights: the twin trains the same network."""
    import torch
    import hetnet as hn  # noqa: F401
    from hetnet.devices.opencl import OpenCLDevice
    from hetnet.runtime.fused import FusedTrainer
    model = build_model(name, "numpy")
    model.set_weights(init)
    trainer = FusedTrainer(model, device=OpenCLDevice.from_spec(spec), batch_size=len(y))
    loss, _ = trainer.loss_and_gradients(X, y)
    net = torch_net(name, init).cuda().train()
    ref = torch.nn.functional.cross_entropy(net(torch.from_numpy(X).cuda()),
                                            torch.from_numpy(y.astype(np.int64)).cuda())
    return abs(loss - float(ref))


def torch_eager(name, init, X, y, batch, lr):
    import torch
    net = torch_net(name, init).cuda()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))

    def epoch(limit):
        order = torch.randperm(limit)
        for s in range(0, limit, batch):
            idx = order[s:s + batch]
            xb = Xt[idx].cuda(non_blocking=True)
            yb = yt[idx].cuda(non_blocking=True)
            opt.zero_grad(set_to_none=True)
            loss_fn(net(xb), yb).backward()
            opt.step()
    epoch(4 * batch)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    epoch(len(y))
    torch.cuda.synchronize()
    return {"images_per_s": len(y) / (time.perf_counter() - t0)}


def torch_graph(name, init, X, y, batch, lr):
    """The whole step (gather from the resident data, forward, loss,
    backward, SGD; BatchNorms in training mode, their running statistics
    moved in the graph) captured in one CUDA graph, replayed per step."""
    import torch
    net = torch_net(name, init).cuda()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xg, yg = torch.from_numpy(X).cuda(), torch.from_numpy(y.astype(np.int64)).cuda()
    idx = torch.zeros(batch, dtype=torch.int64, device="cuda")
    total = torch.zeros((), device="cuda")

    def step():
        opt.zero_grad(set_to_none=False)
        loss = loss_fn(net(Xg[idx]), yg[idx])
        loss.backward()
        opt.step()
        total.add_(loss.detach())
    graph = capture_cuda_graph(step)
    n = len(y) // batch * batch

    def epoch():
        order = torch.randperm(len(y), device="cuda")
        for s in range(0, n, batch):
            idx.copy_(order[s:s + batch])
            graph.replay()
    epoch()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    epoch()
    torch.cuda.synchronize()
    return {"images_per_s": n / (time.perf_counter() - t0),
            "note": "full batches only; per step one index copy + one graph replay"}


def torch_inference(init, X, batch=1000, repeats=20, name="lenet5"):
    import torch
    net = torch_net(name, init).cuda().eval()
    xb = torch.from_numpy(X[:batch]).cuda()
    out = {}
    with torch.no_grad():
        net(xb)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            net(xb)
        torch.cuda.synchronize()
        out["eager"] = batch * repeats / (time.perf_counter() - t0)
        graph = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            net(xb)
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(graph):
            net(xb)
        graph.replay()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            graph.replay()
        torch.cuda.synchronize()
        out["graph"] = batch * repeats / (time.perf_counter() - t0)
    return out


# ------------------------------------------------------------- accuracy
def accuracy_run(spec, epochs=5, batch=64, lr=0.05, seeds=(42, 1, 2)):
    """LeNet-5 on the Fashion-MNIST sample: fused and layer by layer from the
    same weights, the same per-epoch orders, SGD(momentum 0.9), for each
    seed (initial weights and orders); the spread over seeds shows how much
    one run's accuracy moves with rounding-level differences."""
    import hetnet as hn
    from hetnet.datasets import load_fashion_mnist
    from hetnet.devices.opencl import OpenCLDevice
    from hetnet.runtime.fused import FusedTrainer
    X, y = load_fashion_mnist("train", source="sample")
    Xte, yte = load_fashion_mnist("test", source="sample")
    X, Xte = np.ascontiguousarray(X, np.float32), np.ascontiguousarray(Xte, np.float32)
    dev = OpenCLDevice.from_spec(spec)
    runs = []
    for seed in seeds:
        fused = FusedTrainer(build_model("lenet5", "numpy", seed), device=dev,
                             batch_size=batch, optimizer=hn.SGD(lr=lr, momentum=0.9))
        ref = build_model("lenet5", dev, seed)
        ref.optimizer = hn.SGD(lr=lr, momentum=0.9)
        rng = np.random.default_rng(seed)
        fused.set_data(X, y)
        for _ in range(epochs):
            order = rng.permutation(len(y))
            fused.fit(epochs=1, shuffle=order)
            ref.fit(X[order], y[order], epochs=1, batch_size=batch, shuffle=False)
        runs.append({"seed": seed, "fused": fused.evaluate(Xte, yte)["accuracy"],
                     "layer_by_layer": ref.evaluate(Xte, yte)["accuracy"]})
    return {"data": f"fashion-mnist sample ({len(y)} train / {len(yte)} test)",
            "epochs": epochs, "batch": batch, "lr": lr, "runs": runs,
            "mean_fused": float(np.mean([r["fused"] for r in runs])),
            "mean_layer_by_layer": float(np.mean([r["layer_by_layer"] for r in runs]))}


def main():
    args = parse()
    from hetnet.devices.opencl import OpenCLDevice
    dev = OpenCLDevice.from_spec(args.device)
    torch_ok = not args.no_torch
    if torch_ok:
        try:
            import torch
            torch_ok = torch.cuda.is_available()
        except ImportError:
            torch_ok = False
    results = {"machine": machine(dev), "lr": args.lr,
               "momentum": 0.9, "images": args.images, "lbl_images": args.lbl_images,
               "peak_tflops": args.peak_tflops, "runs": []}
    if torch_ok:
        results["torch"] = torch.__version__
    for name in args.models:
        X, y = data(name, args.images)
        init = build_model(name, "numpy").get_weights()
        fwd_flops, train_flops = flops_per_image(build_model(name, "numpy"))
        for batch in args.batches:
            row = {"model": name, "batch_size": batch, "train_flops_per_image": train_flops}
            row["fused"] = f = fused_run(name, args.device, X, y, batch, args.lr)
            f["fraction_of_fp32_peak"] = f["tflops"] / args.peak_tflops
            for key, values, arg in (("fused_tiles", args.tiles, "tile"),
                                     ("fused_train_wgs", args.train_wgs, "train_wg")):
                for v in values:
                    if v == f[arg]:
                        continue
                    try:
                        rate = fused_run(name, args.device, X, y, batch, args.lr,
                                         profile=False, **{arg: v})["images_per_s"]
                    except Exception as exc:  # noqa: BLE001 - a variant that does not fit
                        rate = str(exc)
                    row.setdefault(key, {})[v] = rate
            row["layer_by_layer"] = lbl_run(name, args.device, X[:args.lbl_images],
                                            y[:args.lbl_images], batch, args.lr)
            line = (f"{name:6s} b{batch:<5d} fused {f['images_per_s']:11,.0f}/s "
                    f"(T={f['tile']}x{f['train_wg']}, {f['kernels_per_step']} kernels, host "
                    f"{f['host_us_per_step']:.1f} us, device {f['device_us_per_step']:.1f} us/step "
                    f"{ {k: round(v, 1) for k, v in f['kernel_us'].items()} }, "
                    f"{100 * f['fraction_of_fp32_peak']:.1f}% FP32)  layer-by-layer "
                    f"{row['layer_by_layer']['images_per_s']:9,.0f}/s")
            if args.sequential:
                row["sequential_auto"] = sa = sequential_auto(name, args.device, X, y, batch,
                                                              args.lr)
                line += f"  Sequential(auto) {sa['images_per_s']:11,.0f}/s ({sa['reason']})"
            if torch_ok:
                row["pytorch_eager"] = torch_eager(name, init, X[:args.lbl_images],
                                                   y[:args.lbl_images], batch, args.lr)
                row["pytorch_graph"] = torch_graph(name, init, X, y, batch, args.lr)
                row["fused_vs_graph"] = f["images_per_s"] / row["pytorch_graph"]["images_per_s"]
                if name == "lenet5_bn" and batch == args.batches[0]:
                    row["pytorch_train_loss_diff"] = torch_train_loss_diff(
                        name, args.device, init, X[:batch], y[:batch])
                line += (f"  torch eager {row['pytorch_eager']['images_per_s']:9,.0f}/s "
                         f"graph {row['pytorch_graph']['images_per_s']:10,.0f}/s "
                         f"(fused/graph {row['fused_vs_graph']:.2f}x)")
            for key in ("fused_tiles", "fused_train_wgs"):
                if key in row:
                    line += f"  {key[6:]} " + str({k: v if isinstance(v, str) else round(v)
                                                    for k, v in row[key].items()})
            print(line, flush=True)
            results["runs"].append(row)
            write_results(results, "fused_gpu", args)   # a run cut short keeps its rows
    if "lenet5" in args.models:
        X, _ = data("lenet5", 10000)
        inf = {"batch": 1000, "fused": fused_inference(args.device, X),
               "layer_by_layer": lbl_inference(args.device, X)}
        if torch_ok:
            inf["pytorch"] = torch_inference(build_model("lenet5", "numpy").get_weights(), X)
            inf["fused_vs_best_torch"] = inf["fused"]["images_per_s"] / max(inf["pytorch"].values())
        sweep = {}
        for t in args.eval_tiles or [inf["fused"]["eval_tile"]]:
            for w in args.eval_wgs or [inf["fused"]["eval_wg"]]:
                if (t, w) == (inf["fused"]["eval_tile"], inf["fused"]["eval_wg"]):
                    continue
                try:
                    sweep[f"T{t}xWG{w}"] = fused_inference(args.device, X, eval_tile=t,
                                                           eval_wg=w)["images_per_s"]
                except Exception as exc:  # noqa: BLE001 - a variant that does not fit
                    sweep[f"T{t}xWG{w}"] = str(exc)[:200]
        if sweep:
            inf["fused_sweep"] = sweep
        results["inference_lenet5"] = inf
        print("lenet5 inference b1000:", json.dumps(inf), flush=True)
        bn = {"batch": 1000, "fused": fused_inference(args.device, X, name="lenet5_bn"),
              "layer_by_layer": lbl_inference(args.device, X, name="lenet5_bn")}
        if torch_ok:
            net_bn = build_model("lenet5_bn", "numpy")
            bn["pytorch"] = torch_inference(net_bn.get_weights(), X, name="lenet5_bn")
            bn["fused_vs_best_torch"] = bn["fused"]["images_per_s"] / max(bn["pytorch"].values())
            bn["pytorch_max_abs_logit_diff"] = torch_logit_diff(net_bn, X[:256])
        results["inference_lenet5_bn"] = bn
        print("lenet5-bn inference b1000:", json.dumps(bn), flush=True)
    if args.accuracy:
        results["accuracy"] = acc = accuracy_run(args.device)
        print("accuracy:", json.dumps(acc), flush=True)
    write_results(results, "fused_gpu", args)

if __name__ == "__main__":
    main()
