"""LeNet-5 training on an OpenCL GPU: hetnet beside PyTorch eager on the
same GPU.

Both train the same LeNet-5 (ReLU, max-pool; conv1 padded to keep 28x28)
from the same initial weights with SGD (momentum 0.9) and the same one-cycle
schedule as the CPU benchmark (peak 0.05 at batch 64, sqrt-scaled).
Reported per batch size: training images/s (images in an epoch over its wall
time, shuffling, batch assembly and upload included; the first epoch, which
builds the kernels, is reported but left out of the mean), test accuracy
after the last epoch, kernels launched per step, host time to enqueue one
step (as trained: kernels enqueued from C where built) and device time of
one step (OpenCL profiling events, which need pyopencl's enqueue: measured
on a second, profiling device, whose own host time is
``profiled_host_enqueue_us``).

    python benchmarks/bench_lenet5_gpu.py [--device gpu] [--batches 64 256]
                                          [--epochs 5] [--record] [--machine NAME]

Data: full Fashion-MNIST (``HETNET_DATA`` or the usual places); with
``--allow-sample`` the shipped sample tiled to ``--images`` images, for
throughput only (its accuracy is not comparable).
Results: benchmarks/local/lenet5_gpu/<machine>.json (``--record``:
benchmarks/results/lenet5_gpu/<machine>.json; ``--out``: that path).
"""

import argparse
import statistics
import time

import numpy as np

from _common import add_output_args, machine, write_results
from _lenet5_common import schedule, torch_accuracy, torch_lenet5, torch_train


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="gpu")
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--images", type=int, default=60000)
    p.add_argument("--allow-sample", action="store_true")
    p.add_argument("--lr", type=float, default=0.05,
                   help="peak one-cycle learning rate at batch 64 (scaled by sqrt(batch/64))")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--overlap-uploads", choices=("on", "off", "default"), default="default",
                   help="batch uploads on a second queue, overlapping earlier steps "
                        "(default: the device's default, on for GPUs)")
    add_output_args(p)
    return p.parse_args()


def load_data(n, allow_sample):
    from hetnet.datasets import load_fashion_mnist
    try:
        X, y = load_fashion_mnist("train", source="full")
        Xte, yte = load_fashion_mnist("test", source="full")
        return X, y, Xte, yte, "fashion-mnist full"
    except Exception:  # noqa: BLE001
        if not allow_sample:
            raise
    X, y = load_fashion_mnist("train", source="sample")
    Xte, yte = load_fashion_mnist("test", source="sample")
    source = f"fashion-mnist sample ({len(y)} images) tiled"
    reps = -(-n // len(y))
    X, y = np.concatenate([X] * reps)[:n], np.concatenate([y] * reps)[:n]
    return np.ascontiguousarray(X, dtype=np.float32), y.astype(np.int64), Xte, yte, source


def step_profile(model, dev, X, y, batch, steps=50):
    """Kernels per step, host enqueue time per step, device time per step."""
    steps = max(1, min(steps, len(y) // batch))
    events = []
    launch = dev._launch

    def counting(*args):
        evt = launch(*args)
        events.append(evt)
        return evt
    dev._launch = counting
    try:
        batches = [model._batch_to_device(X, y.astype(np.int32), None, np.arange(i, i + batch))
                   for i in range(0, steps * batch, batch)]
        dev.synchronize()
        events.clear()
        t0 = time.perf_counter()
        for xb, yb, wb in batches:
            model.train_step(xb, yb, wb)
        host = (time.perf_counter() - t0) / steps
        dev.synchronize()
        wall = (time.perf_counter() - t0) / steps
        try:
            device = (events[-1].profile.end - events[0].profile.start) * 1e-9 / steps
            busy = sum(e.profile.end - e.profile.start for e in events) * 1e-9 / steps
        except Exception:  # noqa: BLE001
            device = busy = None
        return {"kernels_per_step": len(events) / steps, "host_enqueue_us": host * 1e6,
                "wall_us": wall * 1e6,
                "device_span_us": None if device is None else device * 1e6,
                "kernel_busy_us": None if busy is None else busy * 1e6}
    finally:
        del dev._launch


def hetnet_run(spec, X, y, Xte, yte, batch, epochs, lr, seed=42, overlap=False):
    """Train on a device without profiling, and time its steps' host and wall
    time; then the device time of steps on a profiling device."""
    import hetnet as hn
    from hetnet.devices.opencl import OpenCLDevice
    dev = OpenCLDevice.from_spec(spec, overlap_uploads=overlap)
    model = hn.models.lenet5(seed=seed, device=dev)
    model.build((1, 28, 28))
    init = model.get_weights()
    hist = model.fit(X, y, epochs=epochs, batch_size=batch, optimizer=hn.SGD(lr=lr, momentum=0.9),
                     lr_schedule=schedule(lr, batch))
    rates = hist["images_per_s"]
    accuracy = model.evaluate(Xte, yte)["accuracy"]
    prof = step_profile(model, dev, X, y, batch)
    # kernel events need pyopencl's enqueue (the C path makes none): device
    # time from a profiling device that enqueues through pyopencl
    pdev = OpenCLDevice.from_spec(spec, profiling=True, overlap_uploads=overlap,
                                  c_enqueue=False)
    pmodel = hn.models.lenet5(seed=seed, device=pdev)
    pmodel.build((1, 28, 28))
    pmodel.fit(X[:4 * batch], y[:4 * batch], batch_size=batch,
               optimizer=hn.SGD(lr=lr, momentum=0.9))
    timed = step_profile(pmodel, pdev, X, y, batch)
    prof.update({k: timed[k] for k in ("device_span_us", "kernel_busy_us")})
    prof["profiled_host_enqueue_us"] = timed["host_enqueue_us"]
    return init, {"images_per_s_per_epoch": rates,
                  "images_per_s": statistics.mean(rates[1:] if len(rates) > 1 else rates),
                  "test_accuracy": accuracy, "final_train_loss": hist["loss"][-1], "step": prof}


def torch_run(init, X, y, Xte, yte, batch, epochs, lr, seed=42):
    import torch
    if not torch.cuda.is_available():
        raise ImportError("no CUDA for PyTorch")
    net = torch_lenet5(init)
    rates = torch_train(net, X, y, batch, epochs, lr, "cuda", seed)
    return {"images_per_s_per_epoch": rates,
            "images_per_s": statistics.mean(rates[1:] if len(rates) > 1 else rates),
            "test_accuracy": torch_accuracy(net, Xte, yte, "cuda"),
            "torch": torch.__version__, "input": "host tensors gathered per batch, copied "
                                                 "with non_blocking=True (as hetnet)"}


def main():
    args = parse()
    from hetnet.devices.opencl import OpenCLDevice
    dev = OpenCLDevice.from_spec(args.device)
    X, y, Xte, yte, source = load_data(args.images, args.allow_sample)
    results = {"benchmark": "lenet5_gpu", "machine": machine(dev), "epochs": args.epochs,
               "schedule": {str(b): repr(schedule(args.lr, b)) for b in args.batches},
               "momentum": 0.9, "overlap_uploads": args.overlap_uploads, "images": len(y), "test_images": len(yte), "data": source,
               "runs": []}
    for batch in args.batches:
        init, h = hetnet_run(args.device, X, y, Xte, yte, batch, args.epochs, args.lr,
                             overlap={"on": True, "off": False}.get(args.overlap_uploads))
        row = {"batch_size": batch, "hetnet": h}
        s = h["step"]
        print(f"batch {batch:4d}  hetnet  {h['images_per_s']:10,.0f} images/s  "
              f"test accuracy {h['test_accuracy']:.4f}  "
              f"({s['kernels_per_step']:.0f} kernels/step, host {s['host_enqueue_us']:.0f} us, "
              f"wall {s['wall_us']:.0f} us, device span {s['device_span_us'] or 0:.0f} us, "
              f"kernels busy {s['kernel_busy_us'] or 0:.0f} us per step)", flush=True)
        if not args.no_torch:
            try:
                t = torch_run(init, X, y, Xte, yte, batch, args.epochs, args.lr)
            except ImportError as exc:
                print(f"PyTorch comparison skipped: {exc}")
                args.no_torch = True
            else:
                row["pytorch_eager"] = t
                row["ratio_vs_pytorch"] = h["images_per_s"] / t["images_per_s"]
                print(f"batch {batch:4d}  pytorch {t['images_per_s']:10,.0f} images/s  "
                      f"test accuracy {t['test_accuracy']:.4f}  "
                      f"(hetnet/pytorch {row['ratio_vs_pytorch']:.2f})", flush=True)
        results["runs"].append(row)
    write_results(results, "lenet5_gpu", args, indent=1)


if __name__ == "__main__":
    main()
