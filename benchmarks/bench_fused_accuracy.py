"""Test accuracy of the fused training step against the layer-by-layer one, full Fashion-MNIST.

    python benchmarks/bench_fused_accuracy.py [--epochs 5] [--batch 64] [--seeds 42 1 2] [--record]

LeNet-5 trained on the 60,000 training images with ``Sequential(fuse="always")`` and with
``fuse="never"`` on the GPU, from the same initial weights (the seed), SGD with momentum 0.9;
the test accuracy on the 10,000 test images after ``--epochs`` epochs.  The issue's criterion:
the two within 0.3 points.
"""

import argparse

import numpy as np

from _common import add_output_args, machine, write_results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    ap.add_argument("--device", default="gpu")
    add_output_args(ap)
    args = ap.parse_args()
    import hetnet as hn
    from hetnet.datasets import load_fashion_mnist
    X, y = load_fashion_mnist("train", source="full")
    Xt, yt = load_fashion_mnist("test", source="full")
    runs = []
    for seed in args.seeds:
        row = {"seed": seed}
        for fuse in ("always", "never"):
            model = hn.models.lenet5(device=args.device, seed=seed, fuse=fuse)
            hist = model.fit(X, y, epochs=args.epochs, batch_size=args.batch,
                             optimizer=hn.SGD(lr=args.lr, momentum=0.9))
            row[fuse] = float(model.evaluate(Xt, yt)["accuracy"])
            row[fuse + "_images_per_s"] = float(np.median(hist["images_per_s"][1:]
                                                          or hist["images_per_s"]))
        row["difference_points"] = 100 * (row["always"] - row["never"])
        runs.append(row)
        print(f"seed {seed}: fused {row['always']:.4f}, layer by layer {row['never']:.4f} "
              f"({row['difference_points']:+.2f} points)", flush=True)
    mean = {k: float(np.mean([r[k] for r in runs])) for k in ("always", "never")}
    print(f"mean: fused {mean['always']:.4f}, layer by layer {mean['never']:.4f}")
    write_results({"machine": machine(), "epochs": args.epochs, "batch": args.batch,
                   "lr": args.lr, "runs": runs, "mean_fused": mean["always"],
                   "mean_layer_by_layer": mean["never"],
                   "mean_difference_points": 100 * (mean["always"] - mean["never"])},
                  "fused_accuracy", args)


if __name__ == "__main__":
    main()
