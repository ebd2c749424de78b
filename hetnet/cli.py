"""``python -m hetnet`` (also the ``hetnet`` command).

Subcommands: ``train`` (the main job: LeNet-5 or an MLP on Fashion-MNIST),
``evaluate`` (a saved model on the test set), ``experiment`` (the
training-techniques thesis's grid, :mod:`hetnet.experiments`), ``predict`` (labels or
probabilities for a file of images, or the test set), ``bench`` (training and
inference throughput per batch size), ``lr-find`` (the learning-rate range
test), ``devices`` and ``info``.  ``train``, ``bench`` and ``lr-find`` take ``--plot`` to draw their curves as a PNG (matplotlib, the
``plot`` extra).  ``hetnet COMMAND --help`` documents every flag.
"""

import argparse
import json
import os
import sys
import time

from .datasets import find_dataset, load_fashion_mnist, read_idx
from .devices import list_devices, resolve
from ._version import __version__
from .info import build_info
from .model import io, load, zoo as models
from .metaheuristics import BY_NAME
from .model.io import check_writable
from .optim import SGD, Adam
from .schedules import OneCycle

PLOT_HINT = "pip install 'hetnet[plot]' (or pip install matplotlib)"
ARCHS = ("lenet5", "mlp")


# --------------------------------------------------------- shared options
def _add_data(p):
    p.add_argument("--source", choices=("auto", "full", "sample"), default="auto",
                   help="which copy of Fashion-MNIST to use: the full set (HETNET_DATA, "
                        "datasets/, /usr/share/datasets), the sample shipped in datasets/, or "
                        "auto = full if found, else the sample (default auto)")


def _add_device(p, default="cpu"):
    p.add_argument("--device", default=default,
                   help=f"where to run: cpu, gpu, opencl, opencl:P:D (PYOPENCL_CTX numbering) "
                        f"or auto (default {default})")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads, --device cpu only (default: HETNET_NUM_THREADS, "
                        "OMP_NUM_THREADS or every CPU available)")


def _add_model(p):
    p.add_argument("--arch", choices=ARCHS, default="lenet5",
                   help="network: lenet5 (LeNet-5: conv-pool-conv-pool-120-84-10, ReLU) or "
                        "mlp (dense layers of --hidden sizes, ReLU) (default lenet5)")
    p.add_argument("--hidden", type=int, nargs="+", default=[120, 84], metavar="SIZE",
                   help="hidden layer sizes for --arch mlp (default 120 84)")


def _add_optimizer(p, lr_default_note="0.02 for sgd and nag, 0.001 for adam, adamw and rmsprop",
                   metaheuristics=False):
    choices = ("sgd", "nag", "adam", "adamw", "rmsprop")
    note = "optimiser (default sgd; nag: SGD with Nesterov momentum)"
    if metaheuristics:
        choices += tuple(BY_NAME)
        note = ("optimiser (default sgd; nag: SGD with Nesterov momentum; shade, shade-ils: "
                "the metaheuristics, --max-evals evaluations of the training loss; -gd: "
                "hybridised with an Adam epoch every 20 x --pop-size evaluations)")
    p.add_argument("--optimizer", choices=choices, default="sgd", help=note)
    p.add_argument("--lr", type=float, default=None,
                   help=f"learning rate (default {lr_default_note})")
    p.add_argument("--momentum", type=float, default=0.9,
                   help="SGD/NAG momentum (default 0.9; ignored by the others)")


def _add_schedule(p):
    p.add_argument("--schedule", choices=("onecycle", "constant"), default="onecycle",
                   help="learning-rate schedule: onecycle (warm up to --lr, then anneal; "
                        "--lr defaults to 0.05 for sgd) or constant (default onecycle)")


def _add_run(p, limit_help):
    """The options of a command that trains: a subset of the data, the device, the seed."""
    p.add_argument("--limit", type=int, default=None, metavar="N", help=limit_help)
    _add_device(p)
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")


def _add_saved_model(p):
    p.add_argument("model", help="a file written by `train`, Sequential.save or an estimator's save")


def _add_inference(p):
    _add_device(p)
    p.add_argument("--batch-size", type=int, default=256, help="inference batch size (default 256)")


def _add_plot(p, what):
    p.add_argument("--plot", nargs="?", const="", default=None, metavar="PNG",
                   help=f"write {what} as a PNG to this path (default path: beside the "
                        f"output, *.png); needs matplotlib: {PLOT_HINT}")


def _add_train(sub):
    p = sub.add_parser("train", help="train LeNet-5 (or an MLP) on Fashion-MNIST: the main job",
                       description="Train LeNet-5 (or an MLP) on Fashion-MNIST: the full set if "
                       "it is installed (HETNET_DATA, datasets/, /usr/share/datasets), else the "
                       "small sample shipped in datasets/. Prints per-epoch loss, test accuracy "
                       "and images/s, and saves the model (arrays + JSON; read it back with "
                       "hetnet.load or `hetnet evaluate`).")
    _add_data(p)
    _add_model(p)
    p.add_argument("--epochs", type=int, default=5, help="passes over the training set (default 5)")
    p.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default 64)")
    _add_optimizer(p, "0.05 for sgd with --schedule onecycle, 0.02 with constant, 0.001 for "
                      "adam and for the -gd hybrids' Adam", metaheuristics=True)
    p.add_argument("--max-evals", type=int, default=4200, metavar="N",
                   help="with a metaheuristic --optimizer: evaluations of the training loss, "
                        "spread over --epochs (default 4200, the thesis's)")
    p.add_argument("--pop-size", type=int, default=10, metavar="P",
                   help="with a metaheuristic --optimizer: its population (default 10)")
    _add_schedule(p)
    _add_run(p, "use only the first N training images (default: all)")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="where to save the trained model (default lenet5-fashion.hetnet.npz, "
                        "or mlp-fashion.hetnet.npz for --arch mlp)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel training over the ranks of an MPI job: start it with "
                        "`mpirun -n K hetnet train --distributed ...`; each rank takes a share of "
                        "every mini-batch (--batch-size is the global batch) on its own device "
                        "(--device auto, cpu or gpu: GPU i of the host for local rank i, else the "
                        "CPU with the rank's share of the cores); only rank 0 prints and saves. "
                        "Needs mpi4py (pip install 'hetnet[mpi]') and an MPI library")
    _add_plot(p, "the loss and test-accuracy curves per epoch")


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="evaluate a saved model on the Fashion-MNIST test set",
                       description="Evaluate a saved model (from `train`, Sequential.save or an "
                       "estimator's save) on the Fashion-MNIST test set; prints JSON with the "
                       "mean loss and the accuracy.")
    _add_saved_model(p)
    _add_data(p)
    _add_inference(p)
    p.add_argument("--plot", nargs="?", const="", default=None, metavar="PNG",
                   help="also write the confusion matrix as a PNG (default: beside the model, "
                   "-confusion.png) and add it and the per-class accuracy to the JSON; needs "
                   "matplotlib")


def _add_predict(sub):
    p = sub.add_parser("predict", help="predict labels (or probabilities) with a saved model",
                       description="Predict with a saved model. Input: --input FILE (.npy, "
                       ".npz with one array, .csv, or an IDX file such as "
                       "t10k-images-idx3-ubyte.gz), images (n, C, H, W) / (n, H, W) or rows "
                       "(n, features); uint8 pixels are scaled to [0, 1] as the dataset loaders "
                       "do. Without --input, the Fashion-MNIST test images. A model saved by a "
                       "scikit-learn estimator predicts its own class labels; a plain model "
                       "predicts class indices.")
    _add_saved_model(p)
    p.add_argument("--input", default=None, metavar="FILE",
                   help="images or rows to predict (default: the Fashion-MNIST test images)")
    _add_data(p)
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="predict only the first N inputs (default: all)")
    p.add_argument("--proba", action="store_true",
                   help="write class probabilities (one row per input) instead of labels")
    p.add_argument("--output", default=None, metavar="FILE",
                   help="write the predictions to FILE: .npy (array) or .csv/.txt (one line "
                        "per input); default: print to standard output")
    _add_inference(p)


def _add_bench(sub):
    p = sub.add_parser("bench", help="measure training and inference throughput per batch size",
                       description="Train a fresh network on Fashion-MNIST at each batch size and "
                       "report training images/s (images over epoch wall time, shuffling and "
                       "batch assembly included, mean over epochs), inference images/s on the "
                       "test set and test accuracy. For the comparisons with PyTorch and "
                       "scikit-learn see benchmarks/.")
    _add_data(p)
    _add_model(p)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256], metavar="B",
                   help="batch sizes to measure (default 64 256)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per batch size (default 1)")
    _add_optimizer(p)
    _add_run(p, "train on only the first N images (default: all)")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write the results, with the build info, as JSON to PATH")
    _add_plot(p, "images/s per batch size (default path: hetnet-bench.png, or beside --json)")


def _add_lr_find(sub):
    p = sub.add_parser("lr-find", help="the learning-rate range test: suggest a learning rate",
                       description="Train a fresh network on Fashion-MNIST for up to "
                       "--num-steps mini-batches while the learning rate grows exponentially "
                       "from --start-lr to --end-lr, stop when the smoothed loss passes four "
                       "times its best, and print the learning rate fastai's valley rule "
                       "suggests (hetnet.model.lrfind). No model is saved.")
    _add_data(p)
    _add_model(p)
    p.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default 64)")
    _add_optimizer(p, "the optimiser's own; the test sets it at every step")
    p.add_argument("--start-lr", type=float, default=1e-7, help="first learning rate (default 1e-7)")
    p.add_argument("--end-lr", type=float, default=10.0, help="last learning rate (default 10)")
    p.add_argument("--num-steps", type=int, default=100, help="most steps (default 100)")
    _add_run(p, "use only the first N training images (default: all)")
    _add_plot(p, "the loss against the learning rate (default path: lr-find.png)")


def _add_plan(sub):
    p = sub.add_parser("plan", help="show where each layer runs, with predicted and measured times",
                       description="Place a network's layers on the devices (the scheduler: "
                       "--device auto chooses per layer from costs measured on this machine) "
                       "and print the plan: layer, device, predicted ms, measured ms, bytes "
                       "moved, and the totals per step.")
    p.add_argument("--arch", choices=ARCHS + ("convnet",), default="lenet5",
                   help="network: lenet5, mlp (784-120-84-10) or convnet (32-64-128 channels) "
                        "(default lenet5)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size to plan for (default 64)")
    p.add_argument("--inference", action="store_true",
                   help="plan inference (forward only) instead of a training step")
    p.add_argument("--device", default="auto",
                   help="cpu, gpu, opencl:P:D, or auto (the scheduler's choice) (default auto)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per step (default 5)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="hetnet", description="Train CNNs/MLPs on CPU and OpenCL devices. "
        "`hetnet COMMAND --help` lists each command's flags.")
    parser.add_argument("--version", action="version", version=f"hetnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    _add_bench(sub)
    _add_lr_find(sub)
    _add_plan(sub)
    from .experiments.thesis_b import add_parser as add_experiment
    add_experiment(sub)
    sub.add_parser("devices", help="list the devices hetnet can use",
                   description="List the devices hetnet can use (the CPU, and each OpenCL "
                   "device, or why there is none).")
    sub.add_parser("info", help="build and thread settings (OpenMP, threads, BLAS)",
                   description="Print how hetnet was built and runs: OpenMP, threads, BLAS.")
    return parser


# ---------------------------------------------------------------- helpers
def _device(name, threads):
    # 'auto' stays a placement policy: the model places each layer
    return resolve(name, threads, allow_auto=True, threads_param="--threads")


def _describe_device(device):
    if isinstance(device, str):
        return f"{device} (each layer placed by the scheduler)"
    threads = getattr(device, "num_threads", None)
    return device.name + (f", {threads} threads" if threads else "")


def _check_positive(name, value):
    if value is not None and value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")


def _require_matplotlib():
    """Import matplotlib for --plot before any work is done, or say how to get it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(f"--plot needs matplotlib, which is not installed: {PLOT_HINT}") from None
    return plt


def _plot_confusion(plt, cm, path, title):
    """The confusion matrix as a heat map with the counts written in."""
    k = cm.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
    ax.imshow(cm, cmap="Blues")
    top = cm.max() if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{cm[i, j]:g}", ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > top / 2 else "black")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix, {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_path(requested, beside, suffix):
    if requested:
        return requested
    stem = beside
    for ext in (".npz", ".json"):
        if stem.endswith(ext):
            stem = stem[:-len(ext)]
    if stem.endswith(".hetnet"):
        stem = stem[:-len(".hetnet")]
    return f"{stem}{suffix}.png"


def _build_network(arch, hidden, seed, device):
    if arch == "lenet5":
        return models.lenet5(seed=seed, device=device)
    return models.mlp([784, *hidden, 10], seed=seed, device=device, input_shape=(784,))


def _load_data(split, source, arch):
    return load_fashion_mnist(split, source=source, flatten=(arch == "mlp"))


def _optimizer(args):
    from .optim import get_optimizer
    if args.optimizer in BY_NAME:
        cls, hybrid = BY_NAME[args.optimizer]
        gd = Adam(lr=0.001 if args.lr is None else args.lr) if hybrid else None
        return cls(pop_size=args.pop_size, gd=gd)
    if args.optimizer in ("sgd", "nag"):
        return get_optimizer(args.optimizer, lr=0.02 if args.lr is None else args.lr,
                             momentum=args.momentum)
    return get_optimizer(args.optimizer, lr=0.001 if args.lr is None else args.lr)


def _as_input(X, input_shape):
    """``X`` reshaped to the model's per-sample ``input_shape`` where only the
    layout differs (images for a flat model, rows for an image model)."""
    input_shape = tuple(input_shape)
    if tuple(X.shape[1:]) == input_shape:
        return X
    n_values = 1
    for s in input_shape:
        n_values *= s
    per_sample = X[0].size if len(X) else 0
    if per_sample != n_values:
        raise ValueError(f"the inputs have per-sample shape {tuple(X.shape[1:])}, but the model "
                         f"takes {input_shape}")
    return X.reshape((X.shape[0],) + input_shape)


def _load_any(path, device):
    """The model in ``path``: a scikit-learn estimator when the file holds
    one (and scikit-learn is installed), else a Sequential."""
    try:
        with io.open_npz(path) as data:
            has_estimator = "estimator" in io.read_config(data, os.fspath(path))
    except (OSError, ValueError):  # load() gives the proper error
        has_estimator = False
    if has_estimator:
        try:
            from .estimators import load_estimator
        except ImportError:
            pass
        else:
            return load_estimator(path, device=device)
    return load(path, device=device or "cpu")


def _sequential(model):
    return getattr(model, "model_", model)


# --------------------------------------------------------------- commands
def cmd_train(args):
    for name in ("epochs", "batch_size", "limit", "max_evals", "pop_size"):
        _check_positive("--" + name.replace("_", "-"), getattr(args, name))
    metaheuristic = args.optimizer in BY_NAME
    if metaheuristic and args.max_evals < args.epochs:
        raise ValueError(f"--max-evals {args.max_evals} is fewer than --epochs {args.epochs}: "
                       "every epoch needs at least one evaluation")
    plt = _require_matplotlib() if args.plot is not None else None
    out = args.out or f"{args.arch}-fashion.hetnet.npz"
    check_writable(out, "--out")     # before training, not after it
    ctx = None
    if args.distributed:
        from .distributed import init
        ctx = init(device=args.device if args.threads is None else _device(args.device, args.threads))
        device = ctx.device
        if not ctx.is_root:
            plt = None
    else:
        device = _device(args.device, args.threads)
    say = print if ctx is None else ctx.print
    where = find_dataset("fashion-mnist", source=args.source)
    X, y = _load_data("train", args.source, args.arch)
    Xte, yte = _load_data("test", args.source, args.arch)
    if args.limit is not None:
        X, y = X[:args.limit], y[:args.limit]
    model = _build_network(args.arch, args.hidden, args.seed, device)
    title = "LeNet-5" if args.arch == "lenet5" else "MLP " + "-".join(map(str, [784, *args.hidden, 10]))
    ranks = "" if ctx is None else f"; {ctx.size} ranks, rank 0 on"
    say(f"hetnet: {title} on Fashion-MNIST ({where.kind} set in {where.path}): {len(y)} "
        f"training, {len(yte)} test images{ranks}; device {_describe_device(device)}")
    t0 = time.perf_counter()
    schedule = None
    if metaheuristic:
        extra_fit = {"max_evals": args.max_evals}
        say(f"{args.optimizer}: population {args.pop_size}, {args.max_evals} evaluations of "
            f"the training loss in {args.epochs} epochs (--schedule does not apply)")
    else:
        extra_fit = {}
    if args.schedule == "onecycle" and not metaheuristic:
        if args.lr is None:
            args.lr = 0.05 if args.optimizer in ("sgd", "nag") else 0.001
        schedule = OneCycle(max_lr=args.lr)
    quiet = args.quiet or (ctx is not None and not ctx.is_root)
    extra = {} if ctx is None else {"distributed": ctx}
    hist = model.fit(X, y, epochs=args.epochs, batch_size=args.batch_size,
                     optimizer=_optimizer(args), validation_data=(Xte, yte),
                     verbose=0 if quiet else 1, callbacks=[_EpochPrinter(say)],
                     lr_schedule=schedule, **extra, **extra_fit)
    say(f"final test accuracy {hist['val_accuracy'][-1]:.4f} after {hist.epochs} epochs "
        f"({time.perf_counter() - t0:.1f} s)")
    if ctx is None:
        model.save(out)
    else:       # rank 0 writes, atomically; the others wait for it
        ctx.write(out, model.save)
    say(f"model saved to {out} (read it back with hetnet.load)")
    if plt is not None:
        path = _plot_path(args.plot, out, "-curves")
        _plot_history(plt, hist, path, f"{title}, Fashion-MNIST, batch {args.batch_size}")
        print(f"curves written to {path}")
    return 0


class _EpochPrinter:
    def __init__(self, say=print):
        self.say = say

    def on_epoch_end(self, model, epoch, logs):
        self.say(f"epoch {epoch + 1}: loss {logs['loss']:.4f}  test accuracy "
                 f"{logs['val_accuracy']:.4f}  {logs['images_per_s']:,.0f} images/s", flush=True)


def _plot_history(plt, hist, path, title):
    epochs = list(range(1, hist.epochs + 1))
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, hist["loss"], marker="o", label="training")
    if hist.get("val_loss"):
        ax_loss.plot(epochs, hist["val_loss"], marker="o", label="test")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    if hist.get("val_accuracy"):
        ax_acc.plot(epochs, hist["val_accuracy"], marker="o", color="C2")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="test accuracy")
    from matplotlib.ticker import MaxNLocator
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_evaluate(args):
    _check_positive("--batch-size", args.batch_size)
    plt = _require_matplotlib() if args.plot is not None else None
    plot_path = None
    if plt is not None:
        plot_path = _plot_path(args.plot, os.fspath(args.model), "-confusion")
        check_writable(plot_path, "--plot")
    model = _load_any(args.model, _device(args.device, args.threads))
    seq = _sequential(model)
    Xte, yte = _load_data("test", args.source, "lenet5")
    if model is seq and plt is not None:
        if seq.loss.name != "cross_entropy":
            raise ValueError(f"--plot draws a confusion matrix: {args.model} is not a classifier")
        result = seq.evaluate(_as_input(Xte, seq.input_shape), yte, batch_size=args.batch_size,
                              metrics=("accuracy", "confusion_matrix", "per_class_accuracy"))
        _plot_confusion(plt, result["confusion_matrix"], plot_path, os.path.basename(args.model))
        result = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in result.items()}
        print(f"confusion matrix written to {plot_path}", file=sys.stderr)
    elif model is seq:
        result = seq.evaluate(_as_input(Xte, seq.input_shape), yte, batch_size=args.batch_size)
    else:   # a scikit-learn estimator: its score (accuracy, or R^2 for a regressor)
        classes = getattr(model, "classes_", None)
        if classes is not None and not (classes.dtype.kind in "iu" and set(classes) <= set(range(10))):
            raise ValueError(f"{args.model} holds a classifier of the labels {classes.tolist()}, "
                             "not Fashion-MNIST's class indices 0..9")
        key = "accuracy" if classes is not None else "r2"
        result = {key: float(model.score(Xte.reshape(len(Xte), -1), yte))}
        if plt is not None:
            if classes is None:
                raise ValueError(f"--plot draws a confusion matrix: {args.model} is a regressor")
            import numpy as np
            from .metrics import confusion_matrix, per_class_accuracy
            pred = np.searchsorted(classes, model.predict(Xte.reshape(len(Xte), -1)))
            true = np.searchsorted(classes, yte)
            cm = confusion_matrix(true, pred, n_classes=len(classes))
            _plot_confusion(plt, cm, plot_path, os.path.basename(args.model))
            result["confusion_matrix"] = cm.tolist()
            result["per_class_accuracy"] = per_class_accuracy(true, pred,
                                                              n_classes=len(classes)).tolist()
            print(f"confusion matrix written to {plot_path}", file=sys.stderr)
    print(json.dumps(result))
    return 0


def _read_inputs(path):
    """Images or rows from a .npy/.npz/.csv/IDX file, as float32."""
    import numpy as np
    if not os.path.exists(path):
        raise FileNotFoundError(f"no input file at {path!r}")
    lower = path.lower()
    if lower.endswith(".npy"):
        X = np.load(path, allow_pickle=False)
    elif lower.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            if len(data.files) != 1:
                raise ValueError(f"{path!r} holds {len(data.files)} arrays ({data.files}); "
                                 "predict takes an .npz with exactly one")
            X = data[data.files[0]]
    elif lower.endswith((".csv", ".txt")):
        X = np.loadtxt(path, delimiter="," if lower.endswith(".csv") else None, ndmin=2)
    elif "idx" in os.path.basename(lower) or lower.endswith("ubyte"):
        X = read_idx(path)
    else:
        raise ValueError(f"cannot tell the format of {path!r}: expected .npy, .npz, .csv, .txt "
                         "or an IDX file (name containing 'idx')")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{path!r} holds {X.dtype} values, not numbers")
    if X.dtype == np.uint8:
        X = X.astype(np.float32) / 255.0
    if X.ndim == 3:   # (n, H, W): one channel
        X = X[:, None]
    return np.ascontiguousarray(X, dtype=np.float32)


def cmd_predict(args):
    import numpy as np
    _check_positive("--batch-size", args.batch_size)
    _check_positive("--limit", args.limit)
    model = _load_any(args.model, _device(args.device, args.threads))
    seq = _sequential(model)
    if args.input is not None:
        X = _read_inputs(args.input)
    else:
        X, _ = _load_data("test", args.source, "lenet5")
    if args.limit is not None:
        X = X[:args.limit]
    if model is seq:
        X = _as_input(X, seq.input_shape)
        if args.proba:
            pred = seq.predict_proba(X, batch_size=args.batch_size)
        else:
            pred = seq.predict(X, batch_size=args.batch_size)
    else:   # a scikit-learn estimator: its own labels
        X = X.reshape(len(X), -1)
        if args.proba:
            if not hasattr(model, "predict_proba"):
                raise ValueError(f"--proba needs a classifier; {args.model} holds a "
                                 f"{type(model).__name__}")
            pred = model.predict_proba(X)
        else:
            pred = model.predict(X)
    _write_predictions(np.asarray(pred), args.output)
    return 0


def _write_predictions(pred, output):
    import numpy as np
    if output is not None and output.lower().endswith(".npy"):
        np.save(output, pred, allow_pickle=False)
        print(f"{len(pred)} predictions written to {output}", file=sys.stderr)
        return
    fmt = "%.6g" if pred.dtype.kind == "f" else "%s"
    lines = (",".join(fmt % v for v in row) if pred.ndim > 1 else fmt % row for row in pred)
    if output is None:
        for line in lines:
            print(line)
        return
    with open(output, "w") as f:
        for line in lines:
            f.write(line + "\n")
    print(f"{len(pred)} predictions written to {output}", file=sys.stderr)


def cmd_bench(args):
    for name in ("epochs", "limit"):
        _check_positive("--" + name, getattr(args, name))
    for b in args.batch_sizes:
        _check_positive("--batch-sizes", b)
    plt = _require_matplotlib() if args.plot is not None else None
    device = _device(args.device, args.threads)
    X, y = _load_data("train", args.source, args.arch)
    Xte, yte = _load_data("test", args.source, args.arch)
    if args.limit is not None:
        X, y = X[:args.limit], y[:args.limit]
    print(f"hetnet bench: {args.arch} on {len(y)} training images, {args.epochs} epoch(s) per "
          f"batch size, device {_describe_device(device)}")
    print(f"{'batch':>6} {'train img/s':>12} {'infer img/s':>12} {'test acc':>9}")
    rows = []
    for batch in args.batch_sizes:
        model = _build_network(args.arch, args.hidden, args.seed, device)
        hist = model.fit(X, y, epochs=args.epochs, batch_size=batch, optimizer=_optimizer(args))
        t0 = time.perf_counter()
        acc = model.evaluate(Xte, yte, batch_size=max(batch, 256))["accuracy"]
        infer = len(yte) / (time.perf_counter() - t0)
        train = sum(hist["images_per_s"]) / hist.epochs
        rows.append({"batch_size": batch, "train_images_per_s": train,
                     "train_images_per_s_per_epoch": hist["images_per_s"],
                     "inference_images_per_s": infer, "test_accuracy": acc})
        print(f"{batch:>6} {train:>12,.0f} {infer:>12,.0f} {acc:>9.4f}", flush=True)
    if args.json:
        result = {"arch": args.arch, "hidden": args.hidden if args.arch == "mlp" else None,
                  "device": _describe_device(device), "epochs": args.epochs,
                  "train_images": len(y), "optimizer": args.optimizer, "runs": rows,
                  "build": build_info()}
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"results written to {args.json}")
    if plt is not None:
        path = _plot_path(args.plot, args.json or "hetnet-bench", "")
        _plot_bench(plt, rows, path, f"{args.arch} training on {_describe_device(device)}")
        print(f"plot written to {path}")
    return 0


def _plot_bench(plt, rows, path, title):
    labels = [str(r["batch_size"]) for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(labels, [r["train_images_per_s"] for r in rows], color="C0")
    ax.set(xlabel="batch size", ylabel="training images/s", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_lr_find(args):
    for name in ("batch_size", "num_steps", "limit"):
        _check_positive("--" + name.replace("_", "-"), getattr(args, name))
    plt = _require_matplotlib() if args.plot is not None else None
    device = _device(args.device, args.threads)
    X, y = _load_data("train", args.source, args.arch)
    if args.limit is not None:
        X, y = X[:args.limit], y[:args.limit]
    model = _build_network(args.arch, args.hidden, args.seed, device)
    result = model.lr_find(X, y, start_lr=args.start_lr, end_lr=args.end_lr,
                           num_steps=args.num_steps, batch_size=args.batch_size,
                           optimizer=_optimizer(args), seed=args.seed)
    print(f"hetnet lr-find: {args.arch}, {args.optimizer}, batch {args.batch_size}, "
          f"{len(result.lrs)} steps from {result.lrs[0]:.3g} to {result.lrs[-1]:.3g}"
          + (" (stopped: the loss diverged)" if result.stopped_early else ""))
    print(f"suggested learning rate (valley): {result.suggestion:.4g}")
    if plt is not None:
        path = args.plot or "lr-find.png"
        result.plot(path, f"{args.arch}, {args.optimizer}, batch {args.batch_size}")
        print(f"plot written to {path}")
    return 0


def cmd_devices(args):
    for d in list_devices():
        print(f"{d['name']:<40} {d['kind']:<12} {d['details']}")
    return 0


def cmd_info(args):
    for k, v in build_info().items():
        print(f"{k}: {v}")
    return 0


def cmd_plan(args):
    for name in ("batch_size", "repeats"):
        _check_positive("--" + name.replace("_", "-"), getattr(args, name))
    if args.arch == "lenet5":
        model = models.lenet5(seed=0, device=args.device, input_shape=(1, 28, 28))
    elif args.arch == "convnet":
        model = models.convnet(seed=0, device=args.device, input_shape=(1, 28, 28))
    else:
        model = models.mlp([784, 120, 84, 10], seed=0, device=args.device, input_shape=(784,))
    print(model.explain(args.batch_size, training=not args.inference, repeats=args.repeats))
    return 0


def cmd_experiment(args):
    from .experiments.thesis_b import main as run_experiment
    return run_experiment(args)


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "bench": cmd_bench, "lr-find": cmd_lr_find, "plan": cmd_plan,
            "devices": cmd_devices, "info": cmd_info, "experiment": cmd_experiment}


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, OSError, RuntimeError, ImportError, FloatingPointError) as exc:
        # a user's mistake (a path, a value, a file): one line, no traceback
        print(f"hetnet {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
