"""One cell (or all cells) of the benchmark matrix: policy x model x batch size.

    python benchmarks/bench_matrix.py --policy auto --model lenet5 --batch 64
    python benchmarks/bench_matrix.py --all [--policies cpu gpu auto] [--record] [--machine h100]

A cell measures, on random data of the model's input shape (throughput does
not depend on the values):
- training throughput: images / wall time of one epoch of ``fit`` on a data
  set the same for every policy of the cell, sized for the fastest policy to
  train ``--min-seconds`` on it (the slower ones take longer),
  after one warm-up pass that plans, calibrates and compiles; the median of
  ``--rounds`` rounds, which with ``--all`` alternate between the policies
  of the same model and batch size, their timed fits back to back within
  a round (the host's speed drifts; a cell run alone on another minute is
  not comparable within 5%);
- inference throughput: images / wall time of ``predict`` at that batch size,
  the same way;
- the plan (device per step), its predicted step time (for ``auto``
  corrected by the in-step factors it measured while planning; the
  prediction from the cost tables alone beside it), the step time of
  ``fit``'s training loop (its ``History.time_s`` over its steps: the
  input checks and shuffling before the loop are not steps; median of the
  rounds) and the step time measured by ``model.explain`` (steps run as
  ``fit`` runs them, batches gathered from a shuffled 64 MB array; the
  median of five windows, after the rounds), all for training;
- the host's speed: :func:`hetnet.sched.hostspeed.probe` before every round of
  every policy, and (``auto``) the median of the probes taken while it
  planned, so a prediction can be compared with the rounds that ran at the
  host speed it was made at;
- (``auto``) a plan made again before every round, as a fresh ``fit`` would
  (``model.plan(batch, refresh=True)``, outside the timed fit, and like
  every policy's round after two untimed steps): its predicted step time
  beside that round's fit step time, each plan held to the steps it was
  made for (``--keep-plan``: the first plan throughout).
The ``gpu`` policy on a machine without an OpenCL GPU records why and skips.
Results: one file per machine, its cells keyed ``<policy>-<model>-b<batch>``,
benchmarks/local/matrix/<machine>.json (``--record``:
benchmarks/results/matrix/<machine>.json, the committed one; ``<machine>``
the GPU's short name or ``cpu<cores>``, or ``--machine``).  A run replaces
the cells it measured and keeps the others; each cell says when and from
which commit it was made.  ``--note`` sets the file's note (what the JSON
cannot say: how the run was made); a recording without one drops the old
note, which described the run it replaces.  ``tox -e report``
(benchmarks/report.py) gathers the recorded files into benchmarks/REPORT.md.
"""

import argparse
import itertools
import json
import time

import numpy as np

from _common import add_output_args, machine, output_path, provenance

MODELS = ("mlp", "lenet5", "convnet")
BATCHES = (1, 16, 64, 256, 1024)
POLICIES = ("cpu", "gpu", "auto")


def build(model_name, policy):
    import hetnet as hn
    if model_name == "mlp":
        return hn.models.mlp([784, 120, 84, 10], seed=0, device=policy), (784,)
    if model_name == "lenet5":
        return hn.models.lenet5(seed=0, device=policy), (1, 28, 28)
    return hn.models.convnet(seed=0, device=policy), (1, 28, 28)


def timed_fit(model, X, y, batch, steps=None):
    """Wall seconds of one epoch of ``fit``; with ``steps``, also the
    seconds per step of its training loop (``History.time_s``: the steps
    alone, without the input checks and shuffling before them)."""
    t0 = time.perf_counter()
    history = model.fit(X, y, epochs=1, batch_size=batch,
                        optimizer=None if model.optimizer else "sgd")
    elapsed = time.perf_counter() - t0
    return elapsed if steps is None else (elapsed, history["time_s"][0] / steps)


def timed_predict(model, X, batch):
    t0 = time.perf_counter()
    model.predict(X, batch_size=batch)
    return time.perf_counter() - t0


def run_cells(policies, model_name, batch, min_seconds=0.125, rounds=24, replan=True):
    """The cells of one model and batch size, one per policy.  The policies'
    timed runs are interleaved, round by round, and each cell reports the
    median of its rounds: the host's speed drifts over minutes (on the H100
    machine the same cell measured 3x apart minutes apart), and
    interleaving gives every policy the same conditions."""
    import hetnet as hn
    from hetnet.sched.hostspeed import probe
    cells, live = {}, {}
    rng = np.random.default_rng(0)
    for policy in policies:
        cell = cells[policy] = {"policy": policy, "model": model_name, "batch_size": batch,
                                "rounds": rounds}
        try:
            model, shape = build(model_name, policy)
        except Exception as exc:      # e.g. 'gpu' with no GPU: say why, measure nothing
            cell["skipped"] = f"{type(exc).__name__}: {exc}"
            continue
        warm = max(2 * batch, 64)
        X = rng.random((warm,) + shape, dtype=np.float32)
        y = rng.integers(0, 10, warm)
        model.fit(X, y, epochs=1, batch_size=batch, optimizer=hn.SGD(lr=1e-3, momentum=0.9))
        per_image = timed_fit(model, X, y, batch) / warm           # plan, compile, then time
        live[policy] = (model, shape, per_image)
    if not live:
        return cells
    # one data set for every policy, sized for the fastest to train min_seconds
    # on it: with a set per policy, a fit's fixed costs (input checks,
    # shuffling, the first step's waits) weighed differently in each
    fastest = min(per_image for _, _, per_image in live.values())
    n = int(min(max(batch * 4, min_seconds / max(fastest, 1e-7)), 200_000))
    n = max(batch, (n // batch) * batch)
    shape = next(iter(live.values()))[1]
    X, y = rng.random((n,) + shape, dtype=np.float32), rng.integers(0, 10, n)
    n_inf = min(n, max(batch * 4, 256))
    for model, _, _ in live.values():
        model.predict(X[:batch], batch_size=batch)                 # plan inference at this size
    replanned = {p: {"predicted_ms": [], "table_ms": [], "host_probe_us": [], "devices": []}
                 for p in live if p == "auto" and replan}
    # the plan auto made before the rounds (its re-plans replace it)
    first = {p: training_plan(live[p][0], batch) for p in replanned}
    train, infer, steps, probes = ({p: [] for p in live} for _ in range(4))
    orders = itertools.cycle(itertools.permutations(live))
    for _ in range(rounds):
        order = next(orders)     # every order in turn: none always follows the CPU's
        for policy in order:     # threads, which keep spinning a while after its steps
            model = live[policy][0]
            if policy in replanned:      # as a fresh fit would: planned now, for these steps
                record_plan(replanned[policy], training_plan(model, batch, refresh=True))
            # two untimed steps first, every policy alike: right after a re-plan
            # the first steps lay the moved parameters out again, a cost of
            # planning, which the rounds leave out (on the H100 host auto's fit
            # right after re-planning ran 10% fewer images/s than with its plan
            # kept, the same placement: benchmarks/results/replan/h100.json)
            model.fit(X[:2 * batch], y[:2 * batch], epochs=1, batch_size=batch)
        # then the policies' timed fits back to back, and their predicts: the
        # host's speed moves from one second to the next (its probe by up to
        # 2x between rounds on the H100 host), so the fits a round compares
        # run as close together in time as they can
        for policy in order:
            model = live[policy][0]
            probes[policy].append(1e6 * probe())     # the host's speed for this round
            elapsed, step_s = timed_fit(model, X, y, batch, steps=n // batch)
            train[policy].append(n / elapsed)
            steps[policy].append(1e3 * step_s)
        for policy in order:
            infer[policy].append(n_inf / timed_predict(live[policy][0], X[:n_inf], batch))
    for policy, (model, _, _) in live.items():
        cell = cells[policy]
        cell["train_images_per_s"] = float(np.median(train[policy]))
        cell["train_images_per_s_rounds"] = train[policy]
        cell["train_images"] = n
        # the step time training ran at: fit's loop over its steps, median of the rounds
        cell["fit_step_ms"] = float(np.median(steps[policy]))
        cell["fit_step_ms_rounds"] = steps[policy]
        cell["infer_images_per_s"] = float(np.median(infer[policy]))
        cell["infer_images_per_s_rounds"] = infer[policy]
        # hetnet.sched.hostspeed.probe before each round, and (auto) while planning
        cell["host_probe_us_rounds"] = probes[policy]
        plan = model.explain(batch, training=True, repeats=3)
        cell["plan"] = [{"step": s.name, "device": s.device,
                         "predicted_ms": 1e3 * (s.predicted_s + s.transfer_s),
                         "measured_ms": 1e3 * s.measured_s, "bytes_moved": s.bytes_moved}
                        for s in plan.steps]
        cell["measured_step_ms"] = 1e3 * plan.measured_step_s
        cell["step_ms_from_throughput"] = 1e3 * batch / cell["train_images_per_s"]
        # the plan made before the rounds: its prediction against fit's median
        # (re-planned: 'plan' above is the last round's placement, explained)
        plan = first.get(policy, plan)
        cell["predicted_step_ms"] = 1e3 * plan.predicted_step_s
        # auto's predictions are corrected by the in-step factors of its planning steps
        cell["table_step_ms"] = table_ms(plan)
        cell["reason"] = plan.reason
        cell["plan_host_probe_us"] = None if plan.host_probe_s is None else 1e6 * plan.host_probe_s
        # what auto timed per round while choosing (the first round a warm-up)
        cell["confirm_rounds_ms"] = None if plan.confirm_rounds_s is None else {
            label: [1e3 * t for t in ts] for label, ts in plan.confirm_rounds_s.items()}
        if policy in replanned:     # each round's own plan, beside fit_step_ms_rounds
            cell["round_plans"] = replanned[policy]
        inf_plan = model.plan(batch, training=False)
        cell["inference_plan"] = [d.name for d in inf_plan.devices]
    return cells


def training_plan(model, batch, refresh=False):
    """The model's training plan at ``batch``, with predicted times: 'auto'
    with one device only (no GPU) has nothing to choose and plans without
    them; then the cost tables predict the placement it uses, as explain's
    table does."""
    plan = model.plan(batch, training=True, refresh=refresh)
    if not plan.has_predictions:
        # the scheduler places a Chain (the model's steps and a measure callable);
        # the model offers no public call for a plan with predictions of its own
        plan = model.placement.plan(model._chain(), batch, True, measure_costs=True)
    return plan


def table_ms(plan):
    """The plan's step time from the cost tables alone, in ms (a plan
    without in-step factors has no other: its prediction)."""
    return 1e3 * (plan.table_step_s if plan.table_step_s is not None else plan.predicted_step_s)


def record_plan(into, plan):
    """One round's plan: its predicted step time (and the tables' alone),
    the host probe while it was made, and its placement ('c'/'g' per step)."""
    into["predicted_ms"].append(1e3 * plan.predicted_step_s)
    into["table_ms"].append(table_ms(plan))
    into["host_probe_us"].append(None if plan.host_probe_s is None else 1e6 * plan.host_probe_s)
    into["devices"].append("".join("c" if d.name == "cpu" else "g" for d in plan.devices))


def save_cell(cell, args, first):
    """Put ``cell`` into its machine's results file (see the module
    docstring), written whole after every cell so that a run cut short
    keeps what it measured; ``first``: this run's first cell, which drops
    the old note unless ``--note`` gives one.  Returns the file's path."""
    path = output_path("matrix", args, cell["machine"])
    data = json.loads(path.read_text()) if path.exists() else {}
    note = data.get("note")
    if args.note is not None:
        note = args.note
    elif first and note:
        print(f"{path}: its note described the run these cells replace; dropped "
              f"(give --note to describe this one)")
        note = None
    key = f"{cell['policy']}-{cell['model']}-b{cell['batch_size']}"
    out = {"benchmark": "matrix", "machine_name": path.stem}
    if note:
        out["note"] = note
    out["cells"] = dict(sorted(dict(data.get("cells", {}), **{key: cell}).items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", choices=POLICIES)
    p.add_argument("--model", choices=MODELS)
    p.add_argument("--batch", type=int)
    p.add_argument("--all", action="store_true", help="every cell of the matrix")
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    add_output_args(p)
    p.add_argument("--note", default=None,
                   help="the results file's note: how this run was made")
    p.add_argument("--min-seconds", type=float, default=0.125,
                   help="seconds of training per timed round, for the fastest policy "
                        "(default 0.125)")
    p.add_argument("--rounds", type=int, default=24,
                   help="timed rounds per cell, interleaved across policies in every order in "
                        "turn; the median counts (default 24: many short rounds pair the "
                        "policies closer in time than a few long ones)")
    p.add_argument("--keep-plan", action="store_true",
                   help="auto keeps the plan it made before the rounds (default: it plans "
                        "again before every round, as a fresh fit would, and each plan's "
                        "prediction is held to that round's steps)")
    args = p.parse_args()
    if args.all:
        groups = [(args.policies, m, b) for m in args.models for b in args.batches]
    elif args.policy and args.model and args.batch:
        groups = [([args.policy], args.model, args.batch)]
    else:
        p.error("give --policy, --model and --batch, or --all")
    info, made, path = None, provenance(), None
    for policies, model_name, batch in groups:
        cells = run_cells(policies, model_name, batch, args.min_seconds, args.rounds,
                          replan=not args.keep_plan)
        for policy, cell in cells.items():
            info = info or machine()
            cell["machine"] = info
            cell["made"] = made
            path = save_cell(cell, args, first=path is None)
            if "skipped" in cell:
                print(f"{policy:>4} {model_name:>7} b{batch:<5} skipped: {cell['skipped'][:100]}",
                      flush=True)
                continue
            print(f"{policy:>4} {model_name:>7} b{batch:<5} train {cell['train_images_per_s']:>10,.0f}"
                  f" img/s  infer {cell['infer_images_per_s']:>10,.0f} img/s  step pred "
                  f"{cell['predicted_step_ms']:8.3f} ms fit {cell['fit_step_ms']:8.3f} ms "
                  f"explain {cell['measured_step_ms']:8.3f} ms  "
                  f"[{' '.join(sorted(set(s['device'][:12] for s in cell['plan'])))}]", flush=True)
    if path is not None:
        print(f"written {path}")

if __name__ == "__main__":
    main()
