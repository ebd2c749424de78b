"""The README's headline figures, made from the recorded results (never typed by hand).

    python benchmarks/readme_figures.py           # rewrite README.md's figures section
    python benchmarks/readme_figures.py --check   # exit 1 if README.md differs from the results

Each row reads one file under ``benchmarks/results/`` and says what ran, on which machine and
under which environment (the BLAS kernel, and whether ``OPENBLAS_CORETYPE`` pinned it), with
the command that records it.  A row whose file is absent is left out.  The section is the text
between ``<!-- figures:begin -->`` and ``<!-- figures:end -->`` in README.md;
``tests/test_readme_figures.py`` holds the README to this script.
"""

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"


def _load(rel):
    path = RESULTS / rel
    return json.loads(path.read_text()) if path.exists() else None


def _host(m):
    """The CPU side of a machine record: model, cores, BLAS kernel, OpenBLAS pinning."""
    host = m.get("host", m)
    env = host.get("env", {})
    blas = host.get("hetnet", {}).get("blas", "BLAS unknown")
    pinned = ("OPENBLAS_CORETYPE=" + env["OPENBLAS_CORETYPE"]) if "OPENBLAS_CORETYPE" in env \
        else "OPENBLAS_CORETYPE unset"
    return f"{host.get('cpu', '?')}, {host.get('cpus_available', '?')} cores, {blas}, {pinned}"


def _gpu(m):
    """The GPU of a result's machine record, whichever layout it has (the
    device at the top, a ``gpu`` record, or a ``gpus`` list)."""
    gpu = m.get("gpu") or (m.get("gpus") or [{}])[0]
    name = m.get("device") or gpu.get("device") or "?"
    driver = m.get("driver") or gpu.get("driver") or "?"
    return f"{name}, driver {driver}"


def _k(v):
    return f"{v:,.0f}"


def _cmd(data, default):
    made = data.get("made") or {}
    return made.get("command") or data.get("command") or default


def _recorded(default):
    """The command a result file says made it (``made.command`` or ``command``), else
    ``default``."""
    return lambda data: _cmd(data, default)


def _fixed(command):
    """``command`` whatever the file says (for a file whose recorded command is not the one
    that records it again)."""
    return lambda data: command


# Each extractor takes a result file's data and gives ``[(what, figures), ...]``, one pair a
# row (none when the file holds nothing to show).

def _lenet5_cpu(d):
    figs = "; ".join(f"b{r['batch_size']}: {_k(r['hetnet']['images_per_s'])} img/s vs "
                     f"PyTorch {_k(r['pytorch']['images_per_s'])} ({r['speedup']:.2f}x), "
                     f"accuracy {r['hetnet']['test_accuracy']:.2%} / "
                     f"{r['pytorch']['test_accuracy']:.2%}" for r in d["runs"])
    return [("LeNet-5, full Fashion-MNIST, 5 epochs, one-cycle SGD, CPU "
             f"({d['threads']} threads both)", figs)]


def _lenet5_gpu(d):
    figs = "; ".join(f"b{r['batch_size']}: {_k(r['hetnet']['images_per_s'])} img/s vs "
                     f"PyTorch eager {_k(r['pytorch_eager']['images_per_s'])} "
                     f"({r['ratio_vs_pytorch']:.2f}x)" for r in d["runs"])
    return [("LeNet-5, full Fashion-MNIST, 5 epochs, GPU (OpenCL; PyTorch CUDA)", figs)]


def _mlp_sklearn(d):
    figs = "; ".join(f"b{r['batch_size']}: {_k(r['hetnet_summary']['images_per_s_median'])} "
                     f"vs {_k(r['sklearn_summary']['images_per_s_median'])} img/s "
                     f"({r['speedup']:.2f}x, median of paired seeds)" for r in d["runs"])
    return [("HetNetClassifier vs scikit-learn MLPClassifier, 784-120-84-10, 3 epochs", figs)]


def _gemm(d):
    main = [x for x in d["square"] if x["kernel"] == "main" and x["n"] == 4096]
    return [("OpenCL SGEMM, n = 4096 (float32)", f"{main[0]['gflops'] / 1000:.1f} TFLOP/s")
            ] if main else []


def _fused_gpu(d):
    out = []
    names = {"lenet5": "LeNet-5", "mlp": "MLP 784-120-84-10", "lenet5_bn": "LeNet-5-BN"}
    for model in names:
        runs = [r for r in d["runs"] if r["model"] == model]
        figs = "; ".join(
            f"b{r['batch_size']}: {_k(r['fused']['images_per_s'])} img/s "
            f"({r['fused']['kernels_per_step']} kernels a step) vs layer by layer "
            f"{_k(r['layer_by_layer']['images_per_s'])}, PyTorch eager "
            f"{_k(r['pytorch_eager']['images_per_s'])}, one CUDA graph "
            f"{_k(r['pytorch_graph']['images_per_s'])} ({r['fused_vs_graph']:.2f}x)"
            for r in runs)
        if runs:
            out.append((f"{names[model]} training, "
                        "fused step (fuse='always'), SGD-momentum, GPU", figs))
    figs = "; ".join(
        f"{label}: {_k(inf['fused']['images_per_s'])} img/s (1 kernel) vs PyTorch eager "
        f"{_k(inf['pytorch']['eager'])}, CUDA graph {_k(inf['pytorch']['graph'])} "
        f"({inf['fused_vs_best_torch']:.2f}x the faster)"
        for label, inf in (("LeNet-5", d.get("inference_lenet5")),
                           ("LeNet-5-BN (BatchNorm folded)", d.get("inference_lenet5_bn")))
        if inf and "pytorch" in inf)
    if figs:
        out.append(("Inference, fused, batch 1000, GPU", figs))
    return out


def _thesis_models(device):
    def extract(d):
        figs = "; ".join(
            f"{r['model']} b{r['batch']}: {_k(r['hetnet_median'])} img/s"
            + "".join(f", {_k(r[k + '_median'])} PyTorch {k[6:].replace('_', ' ')} "
                      f"({r['ratio_to_' + k]:.2f}x)" for k in ("torch_eager", "torch_graph")
                      if r.get(k))
            for r in d["rows"])
        return [(f"LeNet-5-BN and ResNet-15 at 32x32, SGD-momentum, {device.upper()}"
                 + (f" ({d['threads']} threads both)" if device == "cpu" else ""), figs)]
    return extract


def _lenet5_bn_accuracy(d):
    return [(f"LeNet-5-BN, full Fashion-MNIST at 32x32, Adam + one-cycle, {d['epochs']} epochs",
             f"test accuracy {d['final_test_accuracy']:.2%}")]


def _fused_accuracy(d):
    figs = "; ".join(f"seed {r['seed']}: {r['always']:.2%} vs {r['never']:.2%}" for r in d["runs"])
    return [(f"LeNet-5, full Fashion-MNIST, {d['epochs']} epochs, b{d['batch']}: test accuracy "
             "fused vs layer by layer, same initial weights",
             f"{figs}; mean {d['mean_fused']:.2%} vs {d['mean_layer_by_layer']:.2%} "
             f"({d['mean_difference_points']:+.2f} points)")]


def _optimizers(device):
    def extract(d):
        steps = d["devices"][device]["fit_step"]
        figs = ", ".join(f"{k} {v['ratio_to_sgd_momentum_median']:.2f}"
                         for k, v in steps.items() if k != "sgd_momentum")
        return [("Each optimiser's fit step over SGD-momentum's (MLP, batch 64, paired rounds), "
                 + device.upper(), figs)]
    return extract


def _shade_mealpy(d):
    figs = ", ".join(f"{k}: {v['hetnet']['median_error']:.2g}"
                     f" vs {v['mealpy']['median_error']:.2g}, {v['speedup_per_eval']:.0f}x less time"
                     for k, v in d["functions"].items())
    c = d["config"]
    return [(f"SHADE vs mealpy's, D={c['dim']}, population {c['pop_size']}, "
             f"{c['evals']:,} evaluations, {c['seeds']} seeds (median final error)", figs)]


def _population(device):
    def extract(d):
        def row(r):
            fused = r.get("population_fused_cand_img_per_s")    # the CPU's fused pass
            if fused is not None:
                # a search takes the faster of the two (fuse='auto'): that one first
                paths = sorted([(fused, "fused", r["fused_population_over_inference"]),
                                (r["population_cand_img_per_s"], "batched layer by layer",
                                 r["population_over_inference"])], reverse=True)
                (best, how, ratio), (other, other_how, _) = paths
                return (f"{r['model']}: {_k(best)} candidate-images/s {how} ({_k(other)} "
                        f"{other_how}), {ratio:.2f}x plain inference")
            return (f"{r['model']}: {_k(r['population_cand_img_per_s'])} candidate-images/s, "
                    f"{r['population_over_inference']:.2f}x plain inference")
        figs = "; ".join(row(r) for r in d["rows"])
        return [(f"Population pass, P=10 candidates over the same images, {device.upper()}", figs)]
    return extract


def _fused_cpu(d):
    figs = "; ".join(
        f"b{r['batch_size']}: {_k(r['fused_images_per_s']['median'])} img/s fused vs "
        f"{_k(r['layer_images_per_s']['median'])} layer by layer, PyTorch "
        f"{_k(r['torch_images_per_s']['median'])} ({r['fused_over_torch']['median']:.2f}x)"
        for r in d["runs"])
    return [(f"LeNet-5 training step fused on the CPU, {d['threads']} threads both, medians of "
             f"{d['rounds']} interleaved rounds", figs)]


def _thesis_cell(d):
    return [(f"A thesis cell: LeNet-5 at 32x32, {d['train_images']:,} Fashion-MNIST images, "
             f"{d['strategy']}, {d['evals']:,} evaluations of the training loss",
             f"{d['wall_s']:.1f} s; test accuracy {d['test_accuracy']:.2%}")]


def _distributed(d):
    figs = "; ".join(f"{k}: {v['distributed_over_single']:.2f}x "
                     f"({_k(v['distributed_images_per_s'])} vs {_k(v['single_images_per_s'])} img/s)"
                     for k, v in d["models"].items())
    return [(f"Data parallel: {d['ranks']} MPI ranks x 1 thread vs 1 process x "
             f"{d['threads']} threads, batch {d['batch']}", figs)]


#: The README's rows, in order: (file under results/, how its machine is described,
#: the command that records it, the extractor of its rows).
SOURCES = (
    ("lenet5_cpu/cpu2.json", _host,
     _recorded("python benchmarks/bench_lenet5_cpu.py --record"), _lenet5_cpu),
    ("lenet5_gpu/h100.json", _gpu,
     _recorded("python benchmarks/bench_lenet5_gpu.py --record"), _lenet5_gpu),
    ("mlp_sklearn/cpu2.json", _host,
     _recorded("python benchmarks/bench_mlp_sklearn.py --record"), _mlp_sklearn),
    ("gemm/h100.json", _gpu, _fixed("python benchmarks/bench_gemm.py --record"), _gemm),
    ("fused_gpu/h200.json", _gpu,
     _recorded("python benchmarks/bench_fused_gpu.py --record"), _fused_gpu),
    ("fused_gpu/h200_lenet5_bn.json", _gpu,
     _recorded("python benchmarks/bench_fused_gpu.py --models lenet5_bn"), _fused_gpu),
    ("fused_cpu/cpu2.json", _host,
     _recorded("python benchmarks/bench_fused_cpu.py --record"), _fused_cpu),
    ("thesis_models_cpu/cpu2.json", _host,
     _recorded("python benchmarks/bench_thesis_models.py --device cpu --record"),
     _thesis_models("cpu")),
    ("thesis_models_gpu/h200.json", _gpu,
     _recorded("python benchmarks/bench_thesis_models.py --device gpu --record"),
     _thesis_models("gpu")),
    ("lenet5_bn_accuracy_gpu/h200.json", _gpu,
     _recorded("python benchmarks/bench_lenet5_bn_accuracy.py --device gpu --record"),
     _lenet5_bn_accuracy),
    ("fused_accuracy/h200.json", _gpu,
     _recorded("python benchmarks/bench_fused_accuracy.py --record"), _fused_accuracy),
    ("optimizers/cpu2.json", _host,
     _recorded("python benchmarks/bench_optimizers.py --record"), _optimizers("cpu")),
    ("optimizers/h200.json", _gpu,
     _recorded("python benchmarks/bench_optimizers.py --record"), _optimizers("gpu")),
    ("shade_mealpy/cpu2.json", _host,
     _recorded("python benchmarks/bench_shade_mealpy.py --record"), _shade_mealpy),
    ("population/cpu2.json", _host,
     _recorded("python benchmarks/bench_population.py --record"), _population("cpu")),
    ("population/h200.json", _gpu,
     _recorded("python benchmarks/bench_population.py --record"), _population("gpu")),
    ("thesis_cell/h200.json", _gpu,
     _recorded("python benchmarks/bench_thesis_cell.py --device gpu --record"), _thesis_cell),
    ("thesis_cell/cpu2.json", _host,
     _recorded("python benchmarks/bench_thesis_cell.py --device cpu --record"), _thesis_cell),
    ("distributed/cpu2.json", _host,
     _recorded("python benchmarks/bench_distributed.py --record"), _distributed),
)


def rows():
    """``(what, machine and environment, figures, file, command)`` for every result present."""
    out = []
    for path, machine, command, extract in SOURCES:
        d = _load(path)
        if d:
            out += [(what, machine(d["machine"]), figs, path, command(d))
                    for what, figs in extract(d)]
    return out


def render():
    lines = [BEGIN, "",
             "Made by `python benchmarks/readme_figures.py` from the files named, which record "
             "the machine, the environment and the command; machines shared with other work "
             "move such figures by 20-60% between minutes.", "",
             "| what | machine and environment | figures | file | command |",
             "|---|---|---|---|---|"]
    for what, where, figs, path, cmd in rows():
        lines.append(f"| {what} | {where} | {figs} | `benchmarks/results/{path}` | `{cmd}` |")
    lines += ["", END]
    return "\n".join(lines)


def updated(text):
    """README text with its figures section replaced by :func:`render`'s."""
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} section")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + render() + tail


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date")
    args = ap.parse_args()
    text = README.read_text()
    new = updated(text)
    if args.check:
        if new != text:
            print("README.md's figures differ from benchmarks/results/: run "
                  "python benchmarks/readme_figures.py")
            sys.exit(1)
        return
    README.write_text(new)
    print("README.md figures written")


if __name__ == "__main__":
    main()
