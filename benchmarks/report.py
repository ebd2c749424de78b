"""Gather the recorded benchmark matrix (benchmarks/results/matrix/<machine>.json,
written by ``bench_matrix.py --record``) into benchmarks/REPORT.md: per machine, a table of training and inference
throughput by model, batch size and policy, how 'auto' compares with the
better of 'cpu' and 'gpu', and predicted vs measured step time; plus one plot
per machine and model of training throughput against batch size per policy
(benchmarks/plots/, when matplotlib is installed).

    python benchmarks/report.py           # the recorded results
    python benchmarks/report.py --local   # benchmarks/local/ into benchmarks/local/REPORT.md

Only recorded results make REPORT.md: a user's run (benchmarks/local/, which
git ignores) never enters it, and building the report twice from the same
results writes the same bytes (the plots too, for one matplotlib version).
"""

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
POLICIES = ("cpu", "gpu", "auto")


def load(root):
    """{machine: {(model, batch, policy): cell}} and {machine: note} from the
    matrix files under ``root``."""
    cells, notes = {}, {}
    for path in sorted((root / "matrix").glob("*.json")):
        data = json.loads(path.read_text())
        cells[path.stem] = {(c["model"], c["batch_size"], c["policy"]): c
                            for c in data.get("cells", {}).values()}
        if data.get("note"):
            notes[path.stem] = data["note"]
    return cells, notes


def made_label(cells):
    """When and from which commit the cells were made ("" for runs that did
    not record it): one line, or a list where the cells come from more
    than one run."""
    made = sorted({(c["made"].get("utc", "?")[:10], c["made"].get("commit") or "?")
                   for c in cells.values() if isinstance(c.get("made"), dict)})
    older = sum(not isinstance(c.get("made"), dict) for c in cells.values())
    if not made:
        return ""
    if len(made) == 1 and not older:
        return f" Recorded {made[0][0]} from commit {made[0][1]}."
    runs = [f"{d} (commit {c})" for d, c in made]
    if older:
        runs.append(f"{older} cells recorded before results said when")
    return " Its cells come from more than one run: " + "; ".join(runs) + "."


def _fmt(x, spec=",.0f"):
    return "–" if x is None else format(x, spec)


def _cpu_id_label(m):
    """' (family F model M stepping S)' where the run recorded it (runs made
    before benchmarks/_machine.py did show nothing)."""
    i = m.get("cpu_id") or {}
    if "cpu_family" not in i:
        return ""
    return f" (family {i['cpu_family']} model {i.get('model', '?')} stepping {i.get('stepping', '?')})"


def machine_section(tag, cells, note=None):
    any_cell = next(iter(cells.values()))
    m = any_cell.get("machine", {})
    lines = [f"## {tag}", "",
             f"CPU: {m.get('cpu', '?')}{_cpu_id_label(m)}, {m.get('cpus_available', '?')} cores available; "
             f"hetnet {m.get('hetnet', {}).get('version', '?') if isinstance(m.get('hetnet'), dict) else '?'}, "
             f"BLAS {m.get('hetnet', {}).get('blas', '?') if isinstance(m.get('hetnet'), dict) else '?'}; "
             f"{rounds_label(cells)} timed rounds per cell.{made_label(cells)}", ""]
    if note:                               # what the run's JSON cannot say
        lines += [note.strip(), ""]
    skipped = {c["skipped"].split(".")[0] for c in cells.values() if "skipped" in c}
    if skipped:
        lines += ["Skipped cells: " + "; ".join(sorted(skipped)), ""]
    lines += ["| model | batch | train cpu | train gpu | train auto | auto / best | "
              "infer cpu | infer gpu | infer auto | auto step (ms): pred (tables) / fit [explain] "
              "| each round's plan / its fit | auto plan |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    models = sorted({k[0] for k in cells}, key=["mlp", "lenet5", "convnet"].index)
    worst = None
    n_cells, within, same_plan_misses, misses, pred_ok, pred_n, table_ok = 0, 0, [], [], 0, 0, 0
    within_medians, matched_ok, matched_n, pred_misses = 0, 0, 0, []
    paired_ok, paired_n, rounds_ok, rounds_n, paired_misses = 0, 0, 0, 0, []
    reach, reach_n = 0, 0           # cells whose median's interval reaches 0.95
    for model in models:
        for batch in sorted({k[1] for k in cells if k[0] == model}):
            row = {p: cells.get((model, batch, p)) for p in POLICIES}
            tr = {p: (c or {}).get("train_images_per_s") for p, c in row.items()}
            inf = {p: (c or {}).get("infer_images_per_s") for p, c in row.items()}
            best = max([v for p, v in tr.items() if p != "auto" and v is not None], default=None)
            of_medians = tr["auto"] / best if best and tr["auto"] else None
            # auto's throughput over the best's, per round; and its median's interval
            throughput_ratios = paired_ratios(row)
            ratio, interval = of_medians, None
            if throughput_ratios is not None:
                ratio = float(np.median(throughput_ratios))
                interval = median_interval(throughput_ratios)
                reach_n += 1
                reach += interval[1] >= 0.95
            if of_medians is not None:
                within_medians += of_medians >= 0.95
            auto = row["auto"] or {}
            if ratio is not None:
                worst = ratio if worst is None else min(worst, ratio)
                n_cells += 1
                best_policy = max((p for p in tr if p != "auto" and tr[p] is not None),
                                  key=lambda p: tr[p])
                if ratio >= 0.95:
                    within += 1
                else:
                    label = f"{model} b{batch} ({ratio:.3f}"
                    if interval is not None:
                        label += f"; 90% interval of the median {interval[0]:.2f}-{interval[1]:.2f}"
                    label += ")"
                    best_devices = [s["device"] for s in row[best_policy].get("plan", [])]
                    same = [s["device"] for s in auto.get("plan", [])] == best_devices
                    rounds = (auto.get("round_plans") or {}).get("devices")
                    if rounds:      # re-planned every round: the same in every round
                        kinds = "".join("c" if d == "cpu" else "g" for d in best_devices)
                        same = all(r == kinds for r in rounds)
                    (same_plan_misses if same else misses).append(label)
            pm = "–"
            # measured: the step time of fit's loop over the rounds (older results: explain's)
            measured = auto.get("fit_step_ms", auto.get("measured_step_ms"))
            if "predicted_step_ms" in auto:
                table = auto.get("table_step_ms", auto["predicted_step_ms"])   # older results: none
                pm = f"{auto['predicted_step_ms']:.3f} ({table:.3f}) / {measured:.3f}"
                if "fit_step_ms" in auto:
                    pm += f" [{auto['measured_step_ms']:.3f}]"
            if measured:
                pred_ratio = auto["predicted_step_ms"] / measured
                pred_n += 1
                pred_ok += abs(pred_ratio - 1) <= 0.2
                table_ok += abs(table / measured - 1) <= 0.2
                matched = speed_matched(auto)
                if matched is not None:
                    matched_n += 1
                    matched_ok += abs(matched[0] - 1) <= 0.2
                probes = auto.get("host_probe_us_rounds")
                if abs(pred_ratio - 1) > 0.2 and auto.get("plan_host_probe_us") and probes:
                    pred_misses.append(
                        f"{model} b{batch}: {pred_ratio:.2f} of fit's median; host probe "
                        f"{auto['plan_host_probe_us']:.1f} µs while planning, "
                        f"{min(probes):.1f}-{max(probes):.1f} µs in the rounds; " +
                        (f"{matched[0]:.2f} of the {matched[1]} rounds at planning's speed"
                         if matched is not None else
                         f"fewer than {MIN_MATCHED} rounds at planning's speed"))
            # each round's plan: its prediction over that round's fit step
            prediction_ratios = replanned_ratios(auto)
            pr = "–"
            if prediction_ratios is not None:
                med = float(np.median(prediction_ratios))
                ok = sum(abs(r - 1) <= 0.2 for r in prediction_ratios)
                pr = f"{med:.2f} ({ok}/{len(prediction_ratios)})"
                paired_n += 1
                paired_ok += abs(med - 1) <= 0.2
                rounds_ok += ok
                rounds_n += len(prediction_ratios)
                if abs(med - 1) > 0.2:
                    paired_misses.append(f"{model} b{batch} ({med:.2f})")
            plan = plan_label(auto["plan"]) if "plan" in auto else "–"
            placements = set((auto.get("round_plans") or {}).get("devices", []))
            if len(placements) > 1:
                plan += f" (rounds: {len(placements)} placements)"
            lines.append(f"| {model} | {batch} | {_fmt(tr['cpu'])} | {_fmt(tr['gpu'])} | {_fmt(tr['auto'])} | "
                         f"{_fmt(ratio, '.2f')} | {_fmt(inf['cpu'])} | {_fmt(inf['gpu'])} | "
                         f"{_fmt(inf['auto'])} | {pm} | {pr} | {plan} |")
    lines.append("")
    b1 = {p: (cells.get(("lenet5", 1, p)) or {}).get("infer_images_per_s") for p in POLICIES}
    summary = {"rounds": rounds_label(cells), "cells": n_cells, "within": within,
               "worst": worst, "paired": (paired_ok, paired_n, rounds_ok, rounds_n),
               "first_plan": (pred_ok, pred_n),
               "lenet5_b1_infer": (b1["auto"], b1["gpu"]) if b1["auto"] and b1["gpu"] else None}
    if worst is not None:
        lines += [f"Lowest auto / best-of(cpu, gpu) training ratio over the cells: {worst:.2f}.",
                  f"auto within 5% of the better of cpu and gpu: {within} of {n_cells} cells "
                  f"(by the ratio of the policies' medians instead of paired rounds: "
                  f"{within_medians} of {n_cells})."]
        if reach_n:
            lines.append(f"Cells whose paired median's 90% bootstrap interval (over its rounds) "
                         f"reaches 0.95: {reach} of {reach_n}.")
        if same_plan_misses:
            lines.append("Below 5% with the very placement of the better policy (the difference "
                         "is the host's run-to-run noise; see each cell's "
                         "`train_images_per_s_rounds`): " + ", ".join(same_plan_misses) + ".")
        if misses:
            lines.append("Below 5% with another placement than the better policy's (where auto "
                         "re-planned every round: in at least one round): " + ", ".join(misses) + ".")
        lines += [f"auto's predicted step time within 20% of fit's: {pred_ok} of "
                  f"{pred_n} cells; from the cost tables alone (in brackets), before the "
                  f"in-step factors: {table_ok} of {pred_n}."]
        if paired_n:
            lines.append(
                f"Each round's own plan (auto planned again before every round, as a fresh "
                f"`fit` does) against that round's fit step: the median ratio within 20% in "
                f"{paired_ok} of {paired_n} cells" +
                (f" (not: {', '.join(paired_misses)})" if paired_misses else "") +
                f"; {rounds_ok} of {rounds_n} rounds within 20%.")
        if matched_n:
            lines.append(
                f"Against only the rounds that ran at the host speed auto planned at (the host "
                f"probe within {MATCH:.0%} of planning's; cells with {MIN_MATCHED}+ such rounds): "
                f"{matched_ok} of {matched_n} within 20%.")
        if pred_misses:
            lines += ["", "Predictions off by more than 20%, with the host's speed:", ""]
            lines += [f"- {m}" for m in pred_misses]
        lines.append("")
    return lines, summary


def rounds_label(cells):
    """The cells' timed rounds: "48", or "24-48" where a run mixed them."""
    counts = sorted({c.get("rounds", 1) for c in cells.values()})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def summary_table(summaries):
    """One line per run: the issue's three targets (auto within 5% of the
    better policy in every cell; predictions within 20%; batch-1 LeNet-5
    inference, auto at least 2x gpu)."""
    lines = ["| run | rounds | auto within 5% (lowest) | each round's plan within 20% "
             "(rounds within 20%) | first plan within 20% of fit's median | "
             "b1 LeNet-5 inference auto / gpu |", "|---|---:|---|---|---|---|"]
    for tag, s in summaries.items():
        if not s["cells"]:
            continue
        ok, n, rok, rn = s["paired"]
        infer = s["lenet5_b1_infer"]
        lines.append(
            f"| {tag} | {s['rounds']} | {s['within']}/{s['cells']} ({s['worst']:.2f}) | "
            + (f"{ok}/{n} ({rok}/{rn})" if n else "–") + " | "
            f"{s['first_plan'][0]}/{s['first_plan'][1]} | "
            + (f"{infer[0]:,.0f} / {infer[1]:,.0f} = {infer[0] / infer[1]:.1f}x" if infer else "–")
            + " |")
    return lines + [""]


#: a round runs at planning's host speed when its probe is within MATCH of
#: the planning probes' median
MATCH = 0.15
MIN_MATCHED = 4


def speed_matched(auto):
    """(predicted / median fit step of the rounds at planning's host speed,
    how many rounds those are, planning's probe in µs), or None without
    probes (older results) or with fewer than MIN_MATCHED such rounds.  The
    host's speed moves every CPU-bound step; this compares the prediction
    with the rounds that ran at the speed it was made at."""
    planned = auto.get("plan_host_probe_us")
    probes, steps = auto.get("host_probe_us_rounds"), auto.get("fit_step_ms_rounds")
    if not planned or not probes or not steps or len(probes) != len(steps):
        return None
    same = [t for p, t in zip(probes, steps) if abs(p / planned - 1) <= MATCH]
    if len(same) < MIN_MATCHED:
        return None
    return auto["predicted_step_ms"] / float(np.median(same)), len(same), planned


def replanned_ratios(auto):
    """Per timed round, the predicted step time of the plan auto made just
    before it over that round's fit step time; None unless the cell
    re-planned every round (``bench_matrix.py`` without ``--keep-plan``)."""
    plans, steps = auto.get("round_plans"), auto.get("fit_step_ms_rounds")
    if not plans or not steps or len(plans["predicted_ms"]) != len(steps):
        return None
    return [p / f for p, f in zip(plans["predicted_ms"], steps)]


def median_interval(values, level=0.9, resamples=4000):
    """A bootstrap interval for the median of ``values`` (rounds resampled
    with replacement; a fixed seed, so the report is the same every time):
    how far the median of this many noisy rounds can move by chance."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(values, (resamples, values.size)), axis=1)
    return tuple(np.quantile(medians, [(1 - level) / 2, (1 + level) / 2]))


def paired_ratios(row):
    """Per timed round, auto's throughput over the better of cpu's and
    gpu's *in the same round* (None unless the cell's rounds were
    interleaved, ``bench_matrix.py --all``): the host's speed drifts from
    round to round, and the policies of one round ran under the same
    conditions.  The cell's figure is their median."""
    rounds = {p: (c or {}).get("train_images_per_s_rounds") for p, c in row.items()}
    others = [r for p, r in rounds.items() if p != "auto" and r]
    if not rounds.get("auto") or not others or any(len(r) != len(rounds["auto"]) for r in others):
        return None
    return [a / max(r[i] for r in others) for i, a in enumerate(rounds["auto"])]


def plan_label(plan):
    """A plan in a few characters: "gpu", or the runs of steps per device
    ("gpu 1-8, cpu 9")."""
    kinds = ["cpu" if s["device"] == "cpu" else "gpu" for s in plan]
    if len(set(kinds)) == 1:
        return kinds[0]
    runs, start = [], 0
    for i in range(1, len(kinds) + 1):
        if i == len(kinds) or kinds[i] != kinds[start]:
            span = f"{start + 1}" if i - start == 1 else f"{start + 1}-{i}"
            runs.append(f"{kinds[start]} {span}")
            start = i
    return ", ".join(runs)


def plots(tag, cells, folder):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out = []
    folder.mkdir(parents=True, exist_ok=True)
    for model in sorted({k[0] for k in cells}):
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for policy, style in zip(POLICIES, ("o-", "s-", "^--")):
            pts = sorted((b, c["train_images_per_s"]) for (m, b, p), c in cells.items()
                         if m == model and p == policy and "train_images_per_s" in c)
            if pts:
                ax.plot(*zip(*pts), style, label=policy)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("training images/s")
        ax.set_title(f"{model} on {tag}")
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        path = folder / f"matrix-{tag}-{model}.png"
        # no date or version in the file: the same results give the same bytes
        fig.savefig(path, dpi=110, metadata={"Software": None})
        plt.close(fig)
        out.append(path)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--local", action="store_true",
                   help="report benchmarks/local/ (a user's unrecorded runs) into "
                        "benchmarks/local/REPORT.md instead")
    args = p.parse_args()
    root = HERE / ("local" if args.local else "results")
    out_dir = HERE / "local" if args.local else HERE
    cells, notes = load(root)
    lines = ["# Benchmark matrix", "",
             "Made by `python benchmarks/report.py` (`tox -e report`) from "
             f"`benchmarks/{root.name}/matrix/<machine>.json`; each cell is "
             "`benchmarks/bench_matrix.py --record` (`tox -e bench-<policy>-<model>-b<batch> "
             "-- --record`). Throughput in images/s on random data; "
             "'auto / best' is auto's training throughput over the better of cpu and gpu (the "
             "median over the timed rounds of that ratio within each round; where it falls below "
             "0.95, with a 90% bootstrap interval for that median); the "
             "predicted step time is the planner's (corrected by the in-step factors, each device's "
             "real step over its table prediction, that auto measures on this model while it "
             "plans; in brackets the cost tables' alone), made when auto planned, before the "
             "timed rounds; 'each round's plan / its fit': auto plans again before every "
             "timed round (`model.plan(batch, refresh=True)`, outside the timing, as a fresh "
             "`fit` would) and each plan's prediction is held to the round it was made for: "
             "the median over the rounds of that ratio (in brackets, the rounds within 20%); "
             "'fit' is the step time of `fit`'s training loop (`History.time_s` "
             "over its steps, the median of the timed rounds), the measure the 20% target is "
             "held to; in square brackets the step time `model.explain()` measured after the "
             "rounds (the same steps, five short windows). With "
             "`bench_matrix.py --all` each figure is the median of the cell's timed rounds (its "
             "`rounds`), the rounds of cpu, gpu and auto interleaved, in every order in turn, "
             "each fitting one data set shared by the three (sized for the fastest to train "
             "`--min-seconds` on it); within a round, the three timed fits run back to back, "
             "after the round's re-plan and untimed steps (runs made before this was so say "
             "it in their section). The host's speed is probed (`hetnet.sched.hostspeed.probe`, a fixed "
             "single-threaded product) before every round and while auto plans; where the rounds "
             "record it, the predictions are also held against the rounds that ran at the host "
             "speed auto planned at (`bench_host_speed.py` shows how far a shared host's speed "
             "moves).", ""]
    sections, summaries = [], {}
    for tag in sorted(cells):
        section, summaries[tag] = machine_section(tag, cells[tag], notes.get(tag))
        sections += section
        for path in plots(tag, cells[tag], out_dir / "plots"):
            sections += [f"![{path.stem}](plots/{path.name})", ""]
    lines += ["The runs, against the targets (each run's section below says how it was made):",
              ""] + summary_table(summaries) + sections
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "REPORT.md").write_text("\n".join(lines))
    print(f"written {out_dir / 'REPORT.md'} ({sum(len(c) for c in cells.values())} cells)")


if __name__ == "__main__":
    main()
