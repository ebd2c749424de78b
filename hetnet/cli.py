"""``python -m hetnet`` (also the ``hetnet`` command): train, evaluate, devices, info."""

import argparse
import json
import sys
import time


def _add_train(sub):
    p = sub.add_parser("train", help="train LeNet-5 on Fashion-MNIST (the main job)",
                       description="Train LeNet-5 on Fashion-MNIST: the full set if it is "
                       "installed (HETNET_DATA, datasets/, /usr/share/datasets), else the "
                       "small sample shipped in datasets/. Prints per-epoch loss, test "
                       "accuracy and images/s, and saves the model.")
    p.add_argument("--source", choices=("auto", "full", "sample"), default="auto",
                   help="which copy of Fashion-MNIST to use (default: auto = full if found)")
    p.add_argument("--epochs", type=int, default=5, help="passes over the training set (default 5)")
    p.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default 64)")
    p.add_argument("--lr", type=float, default=0.02, help="SGD learning rate (default 0.02)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N training images (default: all)")
    p.add_argument("--device", default="cpu", help="cpu, gpu, opencl:P:D, auto (default cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: HETNET_NUM_THREADS, OMP_NUM_THREADS or all)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--out", default="lenet5-fashion.hetnet.npz",
                   help="where to save the trained model (default lenet5-fashion.hetnet.npz)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="evaluate a saved model on the Fashion-MNIST test set")
    p.add_argument("model", help="a file written by `train` or Sequential.save")
    p.add_argument("--source", choices=("auto", "full", "sample"), default="auto",
                   help="which copy of Fashion-MNIST to use (default auto)")
    p.add_argument("--device", default="cpu", help="device to run on (default cpu)")


def _device(name, threads):
    from .devices import get_device
    if threads is not None:
        if name != "cpu":
            raise SystemExit("--threads applies to --device cpu only")
        from .devices.cpu import CPUDevice
        return CPUDevice(num_threads=threads)
    return get_device(name)


def cmd_train(args):
    from . import SGD, models
    from .datasets import load_fashion_mnist, find_dataset
    where = find_dataset("fashion-mnist", source=args.source)
    X, y = load_fashion_mnist("train", source=args.source)
    Xte, yte = load_fashion_mnist("test", source=args.source)
    if args.limit is not None:
        X, y = X[:args.limit], y[:args.limit]
    device = _device(args.device, args.threads)
    model = models.lenet5(seed=args.seed, device=device)
    print(f"hetnet: LeNet-5 on Fashion-MNIST ({_describe(where)}): {len(y)} training, "
          f"{len(yte)} test images; device {device.name}"
          + (f", {device.num_threads} threads" if hasattr(device, "num_threads") else ""))
    t0 = time.perf_counter()
    hist = model.fit(X, y, epochs=args.epochs, batch_size=args.batch_size,
                     optimizer=SGD(lr=args.lr, momentum=args.momentum),
                     validation_data=(Xte, yte), verbose=0 if args.quiet else 1,
                     callbacks=[_EpochPrinter()])
    acc = hist["val_accuracy"][-1]
    print(f"final test accuracy {acc:.4f} after {hist.epochs} epochs "
          f"({time.perf_counter() - t0:.1f} s)")
    model.save(args.out)
    print(f"model saved to {args.out} (read it back with hetnet.load)")
    return 0


class _EpochPrinter:
    def on_epoch_end(self, model, epoch, logs):
        print(f"epoch {epoch + 1}: loss {logs['loss']:.4f}  test accuracy "
              f"{logs['val_accuracy']:.4f}  {logs['images_per_s']:,.0f} images/s", flush=True)


def _describe(where):
    path, kind = where
    return f"{kind} set in {path}"


def cmd_evaluate(args):
    from .io import load
    from .datasets import load_fashion_mnist
    model = load(args.model, device=args.device)
    Xte, yte = load_fashion_mnist("test", source=args.source)
    result = model.evaluate(Xte, yte)
    print(json.dumps(result))
    return 0


def cmd_devices(args):
    from .devices import list_devices
    for d in list_devices():
        print(f"{d['name']:<40} {d['kind']:<12} {d['details']}")
    return 0


def cmd_info(args):
    from .info import build_info
    for k, v in build_info().items():
        print(f"{k}: {v}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="hetnet", description="Train CNNs/MLPs on CPU and OpenCL devices.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_evaluate(sub)
    sub.add_parser("devices", help="list the devices hetnet can use")
    sub.add_parser("info", help="build and thread settings (OpenMP, threads, BLAS)")
    return parser


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "devices": cmd_devices, "info": cmd_info}


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"hetnet {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
