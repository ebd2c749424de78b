"""LeNet-5 training on full Fashion-MNIST on the CPU: hetnet beside PyTorch.

Both train the same LeNet-5 (ReLU, max-pool; conv1 padded to keep 28x28) from
the same initial weights with SGD (momentum 0.9) and the same one-cycle
learning-rate schedule (peak 0.05 at batch 64, scaled by sqrt(batch/64): 0.1
at 256; PyTorch gets the identical function through LambdaLR) for 5 epochs
at batch 64 and 256, with the same number of threads. Reported: training
images/s (the mean over epochs of images / epoch wall time; the data is in
memory, shuffling and batch assembly included, evaluation excluded) and test
accuracy after the last epoch.

    python benchmarks/bench_lenet5_cpu.py [--threads 2] [--epochs 5] [--batches 64 256]

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, when set in the environment, pin
OpenBLAS to a slower kernel; unless --keep-openblas-env is given, the script
re-runs itself with both unset.  Which kernel ran is recorded (threadpoolctl).
Results: benchmarks/local/lenet5_cpu/<machine>.json
(``--record``: benchmarks/results/lenet5_cpu/<machine>.json).
"""

import argparse
import os

from _common import add_output_args
from _lenet5_common import schedule, torch_accuracy, torch_lenet5, torch_train  # noqa: E402


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    p.add_argument("--lr", type=float, default=0.05,
                   help="peak one-cycle learning rate at batch 64 (scaled by sqrt(batch/64))")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--keep-openblas-env", action="store_true",
                   help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE as they are")
    add_output_args(p)
    return p.parse_args()


def hetnet_run(X, y, Xte, yte, batch, epochs, lr, threads, seed=42):
    import hetnet as hn
    from hetnet.devices.cpu import CPUDevice
    model = hn.models.lenet5(seed=seed, device=CPUDevice(num_threads=threads))
    model.build((1, 28, 28))
    init = model.get_weights()
    hist = model.fit(X, y, epochs=epochs, batch_size=batch,
                     optimizer=hn.SGD(lr=lr, momentum=0.9), lr_schedule=schedule(lr, batch))
    acc = model.evaluate(Xte, yte)["accuracy"]
    return init, {"images_per_s_per_epoch": hist["images_per_s"],
                  "images_per_s": sum(hist["images_per_s"]) / epochs,
                  "test_accuracy": acc, "final_train_loss": hist["loss"][-1]}


def torch_run(init, X, y, Xte, yte, batch, epochs, lr, threads, seed=42):
    import torch
    torch.set_num_threads(threads)
    net = torch_lenet5(init)
    rates = torch_train(net, X, y, batch, epochs, lr, "cpu", seed)
    return {"images_per_s_per_epoch": rates, "images_per_s": sum(rates) / epochs,
            "test_accuracy": torch_accuracy(net, Xte, yte), "torch": torch.__version__}


def main():
    args = parse()
    from _common import run_without_openblas_pins, write_results
    run_without_openblas_pins(args.keep_openblas_env)
    os.environ["HETNET_NUM_THREADS"] = str(args.threads)
    from _common import machine
    from hetnet.datasets import load_fashion_mnist
    X, y = load_fashion_mnist("train", source="full")
    Xte, yte = load_fashion_mnist("test", source="full")
    results = {"benchmark": "lenet5_cpu", "threads": args.threads, "epochs": args.epochs,
               "schedule": {str(b): repr(schedule(args.lr, b)) for b in args.batches},
               "momentum": 0.9, "train_images": len(y), "test_images": len(yte),
               "runs": []}
    for batch in args.batches:
        init, h = hetnet_run(X, y, Xte, yte, batch, args.epochs, args.lr, args.threads)
        row = {"batch_size": batch, "hetnet": h}
        print(f"batch {batch:4d}  hetnet  {h['images_per_s']:9,.0f} images/s  "
              f"test accuracy {h['test_accuracy']:.4f}", flush=True)
        if not args.no_torch:
            try:
                t = torch_run(init, X, y, Xte, yte, batch, args.epochs, args.lr, args.threads)
            except ImportError:
                print("PyTorch not installed: comparison skipped (pip install torch==2.13.0)")
                args.no_torch = True
            else:
                row["pytorch"] = t
                row["speedup"] = h["images_per_s"] / t["images_per_s"]
                print(f"batch {batch:4d}  pytorch {t['images_per_s']:9,.0f} images/s  "
                      f"test accuracy {t['test_accuracy']:.4f}  (hetnet {row['speedup']:.2f}x)",
                      flush=True)
        results["runs"].append(row)
    results["machine"] = machine()   # after the runs: BLAS libraries are loaded by then
    write_results(results, "lenet5_cpu", args)


if __name__ == "__main__":
    main()
