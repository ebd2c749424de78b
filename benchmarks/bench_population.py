"""Population evaluation throughput against plain batched inference.

    python benchmarks/bench_population.py [--images 2000] [--pop 10] [--devices cpu,gpu]
                                          [--repeats 3] [--record] [--machine NAME]

For LeNet-5 (32x32, one channel) and an MLP (1024-256-128-10) on each device:
the loss of ``--pop`` candidate weight vectors over ``--images`` images
through the batched population pass (:mod:`hetnet.runtime.population`), the
same through the generic path (one candidate at a time), on the CPU the
fused population pass (:meth:`CPUFusedTrainer.population_loss`, what a
search there uses when it is faster), and plain batched inference
(``predict_logits``, batch ``--batch``; fused on the CPU where ``fuse='auto'``
measures it faster, ``inference_path`` says) over the same total number of
images (pop x images).  Throughputs are candidate-images per second, the
median of ``--repeats`` after one warm-up; the target is population >= 50%
of inference.  Results: benchmarks/local/population/<machine>.json
(``--record``: benchmarks/results/population/<machine>.json).
"""

import argparse
import time

import numpy as np

from _common import add_output_args, opencl_gpus


def _median_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _models(hn):
    return {"lenet5": (lambda dev: hn.models.lenet5(input_size=32, device=dev, seed=0),
                       (1, 32, 32)),
            "mlp": (lambda dev: hn.models.mlp([1024, 256, 128, 10], device=dev, seed=0),
                    (1024,))}


def bench(hn, name, make, shape, device, args):
    rng = np.random.default_rng(0)
    X = rng.random((args.images,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, args.images)
    model = make(device)
    model.build(shape)
    w = model.flat_weights()
    W = np.stack([w + 0.01 * rng.standard_normal(w.shape).astype(np.float32)
                  for _ in range(args.pop)])
    Xc, yt, sw = model._prepare(X, y)
    model._use_plan(args.images, training=True)
    rt = model.runtime
    total = args.pop * args.images

    def population(method):
        def run():
            with rt.session():
                rt.population_loss(W, Xc, yt, sw, method=method)
                rt.synchronize()
        return run

    t_batched = _median_time(population("batched"), args.repeats)
    t_generic = _median_time(population("generic"), args.repeats)
    t_fused = None
    if model.out_device.name == "cpu":
        # the search's CPU path where the chain fuses (hetnet.model.evolve picks
        # it by the same kind of timing): every candidate on each tile in cache
        from hetnet.runtime.fused_cpu import CPUFusedTrainer
        from hetnet.runtime.fused import FusionUnsupported
        try:
            tr = CPUFusedTrainer(model, batch_size=args.images).set_data(X, y)
        except FusionUnsupported as exc:
            print(f"{name}: no fused population pass ({exc})")
        else:
            t_fused = _median_time(lambda: tr.population_loss(W), args.repeats)
    X_all = np.concatenate([X] * args.pop)
    t_infer = _median_time(lambda: model.predict_logits(X_all, batch_size=args.batch),
                           args.repeats)
    row = {"model": name, "device": model.out_device.name, "pop": args.pop,
           "images": args.images, "params": model.count_params(),
           "population_cand_img_per_s": total / t_batched,
           "generic_cand_img_per_s": total / t_generic,
           "inference_img_per_s": total / t_infer,
           "population_over_inference": t_infer / t_batched,
           "population_over_generic": t_generic / t_batched}
    if t_fused is not None:
        row["population_fused_cand_img_per_s"] = total / t_fused
        row["fused_population_over_inference"] = t_infer / t_fused
    row["inference_path"] = model.fusion.decisions.get(
        (min(args.batch, X_all.shape[0]), False), (False, "layer by layer"))[1]
    print(f"{name:>7} on {row['device']:<12} population {row['population_cand_img_per_s']:10.0f}"
          f"  generic {row['generic_cand_img_per_s']:10.0f}  inference "
          f"{row['inference_img_per_s']:10.0f} cand-img/s   population/inference "
          f"{row['population_over_inference']:.2f}"
          + ("" if t_fused is None else
             f"   fused population {row['population_fused_cand_img_per_s']:10.0f} "
             f"({row['fused_population_over_inference']:.2f} of inference)"))
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000, help="images each candidate sees")
    p.add_argument("--pop", type=int, default=10, help="candidates (default 10)")
    p.add_argument("--batch", type=int, default=1000, help="inference batch size")
    p.add_argument("--devices", default=None,
                   help="comma-separated hetnet devices (default: cpu, and gpu when present)")
    p.add_argument("--models", default="lenet5,mlp")
    p.add_argument("--repeats", type=int, default=3)
    add_output_args(p)
    args = p.parse_args()
    import hetnet as hn
    from _common import machine, write_results
    devices = args.devices.split(",") if args.devices else (
        ["cpu"] + (["gpu"] if opencl_gpus() else []))
    models = _models(hn)
    rows = []
    for dev in devices:
        for name in args.models.split(","):
            make, shape = models[name]
            rows.append(bench(hn, name, make, shape, dev, args))
    write_results({"rows": rows, "target_population_over_inference": 0.5,
                   "machine": machine()}, "population", args)


if __name__ == "__main__":
    main()
