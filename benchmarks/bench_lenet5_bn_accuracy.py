"""LeNet-5 with BatchNorm on full Fashion-MNIST at 32x32: Adam with one-cycle, 20 epochs.

    python benchmarks/bench_lenet5_bn_accuracy.py [--device gpu] [--epochs 20] [--batch 64]
        [--max-lr 0.003 | --lr-find] [--record]

The second thesis's protocol for its image models: the 28x28 images padded to 32x32,
``hn.models.lenet5(batch_norm=True, input_size=32)``, Adam driven by
``hn.schedules.OneCycle(max_lr)`` (the peak from ``model.lr_find`` with ``--lr-find``),
trained on the 60,000 training images and scored on the 10,000 test images after every epoch.
Prints and records the test accuracy per epoch, the final one, and the training images/s.
"""

import argparse

from _common import add_output_args, machine, write_results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="hetnet device (cpu, gpu, auto)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--max-lr", type=float, default=0.003)
    ap.add_argument("--lr-find", action="store_true", help="the LR finder's suggestion as the peak")
    ap.add_argument("--seed", type=int, default=42)
    add_output_args(ap)
    args = ap.parse_args()

    import hetnet as hn
    from hetnet.datasets import load_fashion_mnist
    X, y = load_fashion_mnist("train", source="full", size=32)
    Xt, yt = load_fashion_mnist("test", source="full", size=32)
    model = hn.models.lenet5(batch_norm=True, input_size=32, device=args.device, seed=args.seed)
    max_lr = args.max_lr
    if args.lr_find:
        found = model.lr_find(X, y, batch_size=args.batch, optimizer=hn.Adam(lr=1e-3))
        max_lr = float(found.suggestion)
        print(f"lr_find suggestion: {max_lr:.3g}")
    schedule = hn.schedules.OneCycle(max_lr)
    hist = model.fit(X, y, epochs=args.epochs, batch_size=args.batch,
                     optimizer=hn.Adam(lr=max_lr), lr_schedule=schedule,
                     validation_data=(Xt, yt), verbose=0)
    accs = [float(a) for a in hist["val_accuracy"]]
    for e, (loss, acc, ips) in enumerate(zip(hist["loss"], accs, hist["images_per_s"]), 1):
        print(f"epoch {e:2d}: loss {loss:.4f}  test accuracy {acc:.4f}  {ips:,.0f} img/s")
    final = model.evaluate(Xt, yt)
    print(f"final test accuracy {final['accuracy']:.4f} (target >= 0.910)")
    write_results({"machine": machine(), "device": args.device, "epochs": args.epochs,
                   "batch": args.batch, "max_lr": max_lr, "lr_find": args.lr_find,
                   "seed": args.seed, "test_accuracy_per_epoch": accs,
                   "train_loss_per_epoch": [float(v) for v in hist["loss"]],
                   "images_per_s_per_epoch": [float(v) for v in hist["images_per_s"]],
                   "final_test_accuracy": float(final["accuracy"]),
                   "final_test_loss": float(final["loss"])},
                  f"lenet5_bn_accuracy_{args.device}", args)


if __name__ == "__main__":
    main()
