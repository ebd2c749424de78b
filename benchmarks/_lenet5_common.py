"""What the CPU and GPU LeNet-5 benchmarks share: the training recipe and the
PyTorch twin of hetnet's LeNet-5 (same layers, same initial weights)."""

import time


def schedule(lr, batch):
    """One-cycle learning rate, peak ``lr`` at batch 64 scaled by sqrt(batch/64)."""
    import hetnet as hn
    return hn.OneCycle(max_lr=lr * (batch / 64) ** 0.5)


def torch_lenet5(init):
    """PyTorch LeNet-5 holding hetnet's initial weights ``init`` (get_weights order)."""
    import torch
    from torch import nn
    net = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                        nn.Linear(84, 10))
    params = [m for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for k, m in enumerate(params):
            w, b = init[2 * k], init[2 * k + 1]
            m.weight.copy_(torch.from_numpy(w if w.ndim == 4 else w.T.copy()))
            m.bias.copy_(torch.from_numpy(b))
    return net


def torch_train(net, X, y, batch, epochs, lr, device="cpu", seed=42):
    """SGD (momentum 0.9) with :func:`schedule`; returns images/s per epoch.

    Batches are gathered from host tensors each step (and copied to the GPU
    with non_blocking=True), as hetnet does.
    """
    import numpy as np
    import torch
    from torch import nn
    torch.manual_seed(seed)
    dev = torch.device(device)
    net = net.to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=1.0, momentum=0.9)
    total = epochs * -(-len(y) // batch)
    sched = schedule(lr, batch)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: sched(step, total))
    loss_fn = nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rates = []
    for _ in range(epochs):
        sync()
        t0 = time.perf_counter()
        order = torch.randperm(len(yt))
        for s in range(0, len(yt), batch):
            idx = order[s:s + batch]
            xb, yb = Xt[idx].to(dev, non_blocking=True), yt[idx].to(dev, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
            lr_sched.step()
        sync()
        rates.append(len(yt) / (time.perf_counter() - t0))
    return rates


def torch_accuracy(net, X, y, device="cpu"):
    import torch
    dev = torch.device(device)
    with torch.no_grad():
        pred = torch.cat([net(torch.from_numpy(X[i:i + 1000]).to(dev)).argmax(1).cpu()
                          for i in range(0, len(X), 1000)]).numpy()
    return float((pred == y).mean())
