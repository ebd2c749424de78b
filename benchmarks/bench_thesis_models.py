"""Training throughput of the second thesis's image models, hetnet beside PyTorch.

    python benchmarks/bench_thesis_models.py [--models lenet5-bn resnet15] [--batch 64]
        [--images 8192] [--rounds 3] [--device cpu|gpu] [--threads 2] [--record]

LeNet-5 with BatchNorm (``hn.models.lenet5(batch_norm=True, input_size=32)``) and ResNet-15
(``hn.models.resnet15(input_size=32)``) train on random 1x32x32 images for one epoch per round,
SGD with momentum 0.9, batch 64 by default: hetnet's ``fit`` (shuffle, batch gather and upload
included) against PyTorch built from the same layer list (:func:`torch_twin`): eager, and on a
CUDA GPU also with the whole step (gather from the resident data, forward, loss, backward, SGD)
captured in one CUDA graph.  Rounds alternate the libraries; each figure is the median of the
rounds (training images per second) and ``ratio`` the median of the per-round ratios.  On the
CPU both libraries get ``--threads`` threads (PyTorch's ``set_num_threads``, hetnet's
``HETNET_NUM_THREADS``); the run drops ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` (recorded).
PyTorch is optional: without it only hetnet's figures are printed.
"""

import argparse
import os
import time

import numpy as np

from _common import (add_output_args, capture_cuda_graph, machine, run_without_openblas_pins,
                     write_results)


def hetnet_model(name, device, seed=42):
    import hetnet as hn
    if name == "lenet5-bn":
        return hn.models.lenet5(batch_norm=True, input_size=32, device=device, seed=seed)
    if name == "resnet15":
        return hn.models.resnet15(input_size=32, device=device, seed=seed)
    raise SystemExit(f"unknown model {name!r}; expected lenet5-bn or resnet15")


def torch_twin(layers):
    """A ``torch.nn.Sequential`` computing what hetnet's (built) ``layers`` do,
    with hetnet's initial weights, so both train the same network."""
    import torch
    from torch import nn
    import hetnet as hn

    def conv(layer):
        m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                      stride=layer.stride, padding=layer.pad, bias=layer.bias)
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(layer.get_weights()[0]))
            if m.bias is not None:
                m.bias.copy_(torch.from_numpy(layer.get_weights()[1]))
        return m

    def dense(layer):
        w = layer.get_weights()
        m = nn.Linear(w[0].shape[0], w[0].shape[1], bias=len(w) > 1)
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(w[0].T.copy()))
            if m.bias is not None:
                m.bias.copy_(torch.from_numpy(w[1]))
        return m

    class Residual(nn.Module):
        def __init__(self, branch, shortcut):
            super().__init__()
            self.branch, self.shortcut = branch, shortcut

        def forward(self, x):
            return self.branch(x) + (x if self.shortcut is None else self.shortcut(x))

    def one(layer):
        if isinstance(layer, hn.Conv2D):
            return conv(layer)
        if isinstance(layer, hn.Dense):
            return dense(layer)
        if isinstance(layer, hn.BatchNorm2D):
            return nn.BatchNorm2d(layer.params["gamma"].shape[0], eps=layer.eps,
                                  momentum=layer.momentum)
        if isinstance(layer, hn.BatchNorm1D):
            return nn.BatchNorm1d(layer.params["gamma"].shape[0], eps=layer.eps,
                                  momentum=layer.momentum)
        if isinstance(layer, hn.MaxPool2D):
            return nn.MaxPool2d(layer.size, layer.stride, padding=layer.padding)
        if isinstance(layer, hn.AvgPool2D):
            return nn.AvgPool2d(layer.size, layer.stride, padding=layer.padding)
        if isinstance(layer, hn.GlobalAvgPool2D):
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        if isinstance(layer, hn.Dropout):
            return nn.Dropout(layer.p)
        if isinstance(layer, hn.Flatten):
            return nn.Flatten()
        if isinstance(layer, hn.ReLU):
            return nn.ReLU()
        if isinstance(layer, hn.Residual):
            return Residual(many(layer.branch),
                            many(layer.shortcut) if layer.shortcut else None)
        raise TypeError(f"no PyTorch twin for {layer!r}")

    def many(ls):
        return nn.Sequential(*[one(layer) for layer in ls])
    return many(layers)


def hetnet_epoch(model, X, y, batch):
    import hetnet as hn
    hist = model.fit(X, y, epochs=1, batch_size=batch, optimizer=model.optimizer
                     or hn.SGD(lr=0.01, momentum=0.9))
    return len(y) / hist["time_s"][-1]


def torch_eager_epoch(net, opt, X, y, batch, dev):
    import torch
    loss_fn = torch.nn.CrossEntropyLoss()
    n = len(y) // batch * batch
    order = torch.randperm(len(y))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        idx = order[s:s + batch]
        xb, yb = X[idx].to(dev, non_blocking=True), y[idx].to(dev, non_blocking=True)
        opt.zero_grad(set_to_none=True)
        loss_fn(net(xb), yb).backward()
        opt.step()
    sync()
    return n / (time.perf_counter() - t0)


class TorchGraphStep:
    """The whole training step captured in one CUDA graph, replayed per batch
    (the data resident on the GPU, the batch's indices copied in)."""

    def __init__(self, net, opt, Xg, yg, batch):
        import torch
        self.torch, self.Xg, self.yg, self.batch = torch, Xg, yg, batch
        loss_fn = torch.nn.CrossEntropyLoss()
        self.idx = torch.zeros(batch, dtype=torch.int64, device="cuda")

        def step():
            opt.zero_grad(set_to_none=False)
            loss_fn(net(Xg[self.idx]), yg[self.idx]).backward()
            opt.step()
        self.graph = capture_cuda_graph(step)

    def epoch(self):
        torch, n = self.torch, len(self.yg) // self.batch * self.batch
        order = torch.randperm(len(self.yg), device="cuda")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for s in range(0, n, self.batch):
            self.idx.copy_(order[s:s + self.batch])
            self.graph.replay()
        torch.cuda.synchronize()
        return n / (time.perf_counter() - t0)


def run(name, args):
    import hetnet as hn
    rng = np.random.default_rng(0)
    X = rng.random((args.images, 1, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, args.images).astype(np.int64)
    model = hetnet_model(name, args.device)
    model.optimizer = hn.SGD(lr=0.01, momentum=0.9)
    row = {"model": name, "batch": args.batch, "images": args.images,
           "parameters": model.count_params(), "hetnet": [], "torch_eager": [], "torch_graph": []}
    hetnet_epoch(model, X[:4 * args.batch], y[:4 * args.batch], args.batch)    # builds kernels
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        dev = torch.device("cuda" if args.device == "gpu" else "cpu")
        if dev.type == "cpu":
            torch.set_num_threads(args.threads)
        net = torch_twin(model.layers).to(dev)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        if dev.type == "cuda":
            Xt, yt = Xt.pin_memory(), yt.pin_memory()
        torch_eager_epoch(net, opt, Xt[:4 * args.batch], yt[:4 * args.batch], args.batch, dev)
        graph = None
        if dev.type == "cuda":
            gnet = torch_twin(model.layers).to(dev)
            gopt = torch.optim.SGD(gnet.parameters(), lr=0.01, momentum=0.9)
            graph = TorchGraphStep(gnet, gopt, Xt.to(dev), yt.to(dev), args.batch)
    for r in range(args.rounds):
        row["hetnet"].append(hetnet_epoch(model, X, y, args.batch))
        if torch is not None:
            row["torch_eager"].append(torch_eager_epoch(net, opt, Xt, yt, args.batch, dev))
            if graph is not None:
                row["torch_graph"].append(graph.epoch())
    for key in ("hetnet", "torch_eager", "torch_graph"):
        if row[key]:
            row[key + "_median"] = float(np.median(row[key]))
    for key in ("torch_eager", "torch_graph"):
        if row[key]:
            row["ratio_to_" + key] = float(np.median(np.array(row["hetnet"]) / np.array(row[key])))
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["lenet5-bn", "resnet15"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--images", type=int, default=8192, help="images per timed epoch")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for both libraries")
    add_output_args(ap)
    args = ap.parse_args()
    if args.device == "cpu":
        os.environ["HETNET_NUM_THREADS"] = str(args.threads)
        run_without_openblas_pins()
    results = {"machine": machine(), "device": args.device, "threads": args.threads,
               "optimizer": "SGD(lr=0.01, momentum=0.9)", "rows": []}
    for name in args.models:
        row = run(name, args)
        results["rows"].append(row)
        print(f"{name} b{args.batch}: hetnet {row['hetnet_median']:,.0f} img/s"
              + "".join(f", {k} {row[k + '_median']:,.0f} (hetnet/{k} {row['ratio_to_' + k]:.2f})"
                        for k in ("torch_eager", "torch_graph") if row[k]), flush=True)
    write_results(results, f"thesis_models_{args.device}", args)


if __name__ == "__main__":
    main()
