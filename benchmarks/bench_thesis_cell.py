"""One cell of the thesis's metaheuristic grid: LeNet-5 (32x32, Glorot) on
Fashion-MNIST, trained by SHADE-ILS for 4,200 evaluations of the training loss.

    python benchmarks/bench_thesis_cell.py [--device cpu] [--strategy shade-ils]
        [--train 10000] [--test 5000] [--max-evals 4200] [--source auto]
        [--record] [--machine NAME]

The thesis's protocol (section 6): ``thesis_image_split`` (seed 42; the test
images halved into validation and test), population 10, every evaluation a
loss over the whole training set, 20 epochs of 210 evaluations, the best
individual of each epoch kept and the one with the best validation loss
reported (``EarlyStopping`` restoring it, patience 20: it never stops early).
Reports the wall time of ``fit`` (target: <= 10 min on a 2-core CPU, <= 60 s
on a GPU) and the final training / test loss and accuracy.  On the CPU the
run drops ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` (which pin OpenBLAS to a
slower kernel on some machines; ``--keep-openblas-pins`` keeps them); the
kernel OpenBLAS chose is recorded under ``machine.blas_libraries`` and
``blas``.  ``--train 600
--test 200 --max-evals 40`` runs in seconds on the shipped sample.  Results:
benchmarks/local/thesis_cell/<machine>.json (``--record``:
benchmarks/results/thesis_cell/<machine>.json).
"""

import argparse
import time

from _common import add_output_args


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="hetnet device (cpu, gpu, auto, ...)")
    p.add_argument("--strategy", default="shade-ils",
                   choices=["shade", "shade-ils", "shade-gd", "shade-ils-gd"])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--train", type=int, default=10000)
    p.add_argument("--test", type=int, default=5000)
    p.add_argument("--max-evals", type=int, default=4200)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--source", default="auto", choices=["auto", "full", "sample"])
    p.add_argument("--keep-openblas-pins", action="store_true",
                   help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE from the environment")
    add_output_args(p)
    args = p.parse_args()
    if args.device == "cpu":
        from _common import run_without_openblas_pins
        run_without_openblas_pins(keep=args.keep_openblas_pins)
    import hetnet as hn
    from hetnet.callbacks import EarlyStopping
    from hetnet.datasets import thesis_image_split
    from _common import machine, write_results

    (Xtr, ytr), (Xva, yva), (Xte, yte) = thesis_image_split(
        args.dataset, seed=42, n_train=args.train, n_test=args.test, source=args.source)
    layers = hn.models.lenet5_layers(input_size=32)
    for layer in layers:
        if hasattr(layer, "init"):
            layer.init = "glorot"      # the thesis's initialisation
    model = hn.Sequential(layers, device=args.device, seed=42, input_shape=(1, 32, 32))
    gd = hn.Adam(lr=1e-3) if args.strategy.endswith("-gd") else None
    cls = hn.SHADEILS if args.strategy.startswith("shade-ils") else hn.SHADE
    opt = cls(pop_size=10, gd=gd)
    keep_best = EarlyStopping("val_loss", patience=args.epochs, restore_best_weights=True)
    t0 = time.perf_counter()
    history = model.fit(Xtr, ytr, optimizer=opt, max_evals=args.max_evals, epochs=args.epochs,
                        batch_size=64, validation_data=(Xva, yva), callbacks=[keep_best])
    wall = time.perf_counter() - t0
    train = model.evaluate(Xtr, ytr)
    test = model.evaluate(Xte, yte)
    out = {"dataset": args.dataset, "strategy": args.strategy, "device": model.out_device.name,
           "train_images": len(Xtr), "test_images": len(Xte), "max_evals": args.max_evals,
           "evals": history.n_evals, "params": model.count_params(), "wall_s": wall,
           "evals_per_s": history.n_evals / wall,
           "best_val_epoch": keep_best.best_epoch,
           "population_path": history.population_path,
           "gradient_path": history.gradient_path,
           "train_loss": train["loss"], "train_accuracy": train["accuracy"],
           "test_loss": test["loss"], "test_accuracy": test["accuracy"],
           "history": {k: list(v) for k, v in history.items()},
           "targets_s": {"cpu_2_cores": 600, "gpu": 60}}
    print(f"{args.strategy} on {out['device']}: {history.n_evals} evaluations of "
          f"{len(Xtr)} images in {wall:.1f} s ({out['evals_per_s']:.1f} evals/s); train loss "
          f"{train['loss']:.4f} acc {train['accuracy']:.4f}; test loss {test['loss']:.4f} "
          f"acc {test['accuracy']:.4f} (best validation at epoch {keep_best.best_epoch})")
    out["machine"] = machine()
    from hetnet.devices.cpu import blas_description
    out["blas"] = blas_description()
    write_results(out, "thesis_cell", args)


if __name__ == "__main__":
    main()
