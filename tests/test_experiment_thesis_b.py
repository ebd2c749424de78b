"""``hetnet experiment thesis-b``: the grid, its outputs and its errors (quick protocol)."""

import json

import numpy as np
import pytest

from hetnet import cli
from hetnet.datasets import DatasetNotFoundError
from hetnet.experiments import thesis_b
from hetnet.experiments.thesis_b import (Data, ExperimentError, PartNotAvailableError,
                                         plan_grid, run_thesis_b)


@pytest.fixture
def mnist_absent(monkeypatch):
    """MNIST reported absent whatever this machine holds (the cells' reason is the loader's)."""
    real = thesis_b.load_data

    def load(name, protocol):
        if name == "mnist":
            raise DatasetNotFoundError("the full set of mnist not found; searched: nowhere")
        return real(name, protocol)
    monkeypatch.setattr(thesis_b, "load_data", load)


def test_quick_cli_writes_json_and_markdown(tmp_path, mnist_absent, capsys):
    out = tmp_path / "res"
    rc = cli.main(["experiment", "thesis-b", "--part", "gradient", "--quick", "--quiet",
                   "--datasets", "breast-cancer", "fashion-mnist", "mnist",
                   "--device", "cpu", "--out", str(out)])
    assert rc == 0
    assert "cells run" in capsys.readouterr().out
    results = json.loads((out / "gradient.json").read_text())
    assert results["part"] == "gradient" and results["quick"] is True
    cells = {(c["dataset"], c["model"], c["strategy"]): c for c in results["cells"]}
    expected = {(d, m, s) for d, m in [("breast-cancer", "mlp-1"), ("fashion-mnist", "lenet5"),
                                       ("mnist", "lenet5")]
                for s in ("nag", "rmsprop", "adam")}
    assert set(cells) == expected
    for (d, m, s), c in cells.items():
        if d == "mnist":
            assert c["status"] == "not run: data absent"
            assert "searched: nowhere" in c["reason"]
            continue
        assert c["status"] == "ok", c
        assert c["metric"] == ("balanced_accuracy" if d == "breast-cancer" else "accuracy")
        for key in ("train_loss", "test_loss", "val_loss", "score", "seconds", "lr"):
            assert isinstance(c[key], float) and np.isfinite(c[key]), (key, c)
        assert 0.0 <= c["score"] <= 1.0
        assert c["batch_size"] in (32, 64)
        assert [r["batch_size"] for r in c["per_batch_size"]] == [32, 64]
        # the chosen batch size is the one with the lowest best validation loss
        ran = [r for r in c["per_batch_size"] if "val_loss" in r]
        assert min(ran, key=lambda r: r["val_loss"])["batch_size"] == c["batch_size"]
        assert 1 <= c["best_epoch"] <= 2
    md = (out / "gradient.md").read_text()
    assert "| model | strategy | batch |" in md
    assert "| balanced accuracy |" in md and "| accuracy |" in md
    assert md.count("not run: data absent") == 3
    assert md.count("| mlp-1 |") == 3 and md.count("| lenet5 |") == 6


def test_regression_cell_reports_r2(monkeypatch):
    rng = np.random.default_rng(0)

    def split(n):
        X = rng.standard_normal((n, 6)).astype(np.float32)
        return X, (X @ np.arange(1, 7, dtype=np.float32) * 0.3).astype(np.float32)

    def load(name, protocol):
        assert name == "boston-housing"
        return Data(name, "tabular", "regression", split(200), split(40), split(60), 1)
    monkeypatch.setattr(thesis_b, "load_data", load)
    results = run_thesis_b(datasets=["boston-housing"], models=["mlp-1"], strategies=["adam"],
                           quick=True, progress=False)
    (cell,) = results["cells"]
    assert cell["status"] == "ok" and cell["metric"] == "r2" and cell["task"] == "regression"
    assert np.isfinite(cell["score"]) and cell["score"] <= 1.0
    assert "R²" in thesis_b.markdown_table(results)


def test_best_validation_weights_are_reported(monkeypatch):
    # the cell's validation loss is the best epoch's, not the last one's
    results = run_thesis_b(datasets=["breast-cancer"], models=["mlp-2"], strategies=["nag"],
                           quick=True, progress=False)
    (cell,) = results["cells"]
    chosen = next(r for r in cell["per_batch_size"] if r["batch_size"] == cell["batch_size"])
    assert cell["val_loss"] == pytest.approx(chosen["val_loss"], rel=1e-5)


def test_grid_design():
    assert thesis_b.PARTS["all"] == thesis_b.PARTS["gradient"] + thesis_b.PARTS["metaheuristic"]
    cells = plan_grid("gradient")
    assert len(cells) == 4 * 4 * 3 + 3 * 3 * 3      # tabular x MLPs + images x ConvNets, x 3
    assert all(thesis_b.MODELS[m].family == thesis_b.DATASETS[d][0] for d, m, _ in cells)
    assert {s for _, _, s in cells} == {"nag", "rmsprop", "adam"}


def test_metaheuristic_part_quick_through_the_cli(tmp_path, capsys):
    out = tmp_path / "mh"
    rc = cli.main(["experiment", "thesis-b", "--part", "metaheuristic", "--quick", "--quiet",
                   "--datasets", "breast-cancer", "fashion-mnist", "--out", str(out)])
    assert rc == 0
    assert "8 of 8 cells run" in capsys.readouterr().out
    res = json.loads((out / "metaheuristic.json").read_text())
    cells = res["cells"]
    assert {c["strategy"] for c in cells} == set(thesis_b.PARTS["metaheuristic"])
    protocol = thesis_b.QUICK
    for c in cells:
        assert c["status"] == "ok", c
        assert 0 < c["evals"] <= protocol.max_evals
        assert c["curve"]["evals"] == sorted(c["curve"]["evals"])
        assert c["curve"]["evals"][-1] == c["evals"]
        # the best-so-far training loss never rises
        assert all(b <= a + 1e-12 for a, b in zip(c["curve"]["loss"], c["curve"]["loss"][1:]))
        assert np.isfinite(c["test_loss"]) and 0 <= c["score"] <= 1
        hybrid = c["strategy"].endswith("-gd")
        assert (c["batch_size"] == protocol.gd_batch_size) is hybrid
    # the same seed: every strategy starts from the same population, so SHADE's
    # first record is the best of the same initial individuals for both of its forms
    by = {(c["dataset"], c["strategy"]): c for c in cells}
    for d in ("breast-cancer", "fashion-mnist"):
        assert by[(d, "shade")]["curve"]["loss"][0] == by[(d, "shade-gd")]["curve"]["loss"][0]
    assert sorted(res["plots"]) == ["metaheuristic_breast-cancer_mlp-1.png",
                                    "metaheuristic_fashion-mnist_lenet5.png"]
    for name in res["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "metaheuristic.md").read_text()
    assert "| mlp-1 | shade-ils |" in md and "population 10, 60 evaluations" in md


def test_all_part_has_both_halves(tmp_path):
    res = run_thesis_b(part="all", datasets=["breast-cancer"], quick=True, progress=False,
                       out=tmp_path)
    assert [c["strategy"] for c in res["cells"]] == list(thesis_b.PARTS["all"])
    assert all(c["status"] == "ok" for c in res["cells"])
    assert (tmp_path / "all.json").exists() and (tmp_path / "all_breast-cancer_mlp-1.png").exists()
    md = (tmp_path / "all.md").read_text()
    assert "Gradient descent:" in md and "Metaheuristics:" in md


def test_a_part_with_a_strategy_hetnet_lacks_says_so(monkeypatch, tmp_path, capsys):
    """A strategy without a trainer is refused before any work, and nothing is written."""
    import dataclasses
    lacking = dataclasses.replace(thesis_b.STRATEGIES["shade"], train=None)
    monkeypatch.setitem(thesis_b.STRATEGIES, "shade", lacking)
    with pytest.raises(PartNotAvailableError, match="not available yet"):
        run_thesis_b(part="metaheuristic")
    rc = cli.main(["experiment", "thesis-b", "--part", "metaheuristic", "--quick",
                   "--out", str(tmp_path)])
    assert rc == 2
    assert "not available yet" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())        # nothing written, no fake results


def test_bad_arguments(capsys):
    with pytest.raises(ExperimentError, match="unknown models 'vgg'"):
        run_thesis_b(models=["vgg"])
    with pytest.raises(ExperimentError, match="unknown part"):
        run_thesis_b(part="both")
    with pytest.raises(ExperimentError, match="unknown strategies 'shade'"):
        plan_grid("gradient", strategies=["shade"])       # a strategy of another part
    with pytest.raises(ExperimentError, match="no cell: models lenet5 run on image sets"):
        plan_grid("gradient", datasets=["breast-cancer"], models=["lenet5"])
    assert cli.main(["experiment", "thesis-b", "--models", "lenet5", "--datasets",
                     "breast-cancer", "--quick"]) == 2
    assert "no cell" in capsys.readouterr().err
    assert cli.main(["experiment", "thesis-b", "--epochs", "0", "--quick"]) == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["experiment", "thesis-b", "--models", "vgg"])
    assert "invalid choice: 'vgg'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["experiment", "thesis-c"])


# --- interrupted runs and --resume ------------------------------------------------------------
RESUMABLE = dict(part="metaheuristic", datasets=["breast-cancer"], models=["mlp-1"],
                 strategies=["shade", "shade-ils-gd"], progress=False)


def _interrupt_at_epoch(monkeypatch, epoch, cell):
    """The fit of ``cell`` stops (as a killed job would) right after epoch
    ``epoch``'s checkpoint."""
    from hetnet.callbacks import ModelCheckpoint
    real = ModelCheckpoint.on_epoch_end

    def on_epoch_end(self, model, e, logs):
        real(self, model, e, logs)
        if e + 1 == epoch and cell in self.path:
            raise KeyboardInterrupt
    monkeypatch.setattr(ModelCheckpoint, "on_epoch_end", on_epoch_end)


def test_an_interrupted_grid_resumes_where_it_stopped(tmp_path, monkeypatch):
    import dataclasses
    protocol = dataclasses.replace(thesis_b.QUICK, epochs=3, max_evals=90)
    whole = run_thesis_b(protocol=protocol, out=tmp_path / "whole", **RESUMABLE)
    assert not (tmp_path / "whole" / "checkpoints").exists()

    out = tmp_path / "cut"
    with monkeypatch.context() as m:
        _interrupt_at_epoch(m, 2, "shade-ils-gd")
        with pytest.raises(KeyboardInterrupt):
            run_thesis_b(protocol=protocol, out=out, **RESUMABLE)
    # the finished cell is on disk, the interrupted one pending, its search checkpointed
    partial = json.loads((out / "metaheuristic.json").read_text())
    assert [c["strategy"] for c in partial["cells"]] == ["shade"]
    assert partial["pending"] == ["breast-cancer mlp-1 shade-ils-gd"]
    assert "1 cells pending" in (out / "metaheuristic.md").read_text()
    stem = out / "checkpoints" / "breast-cancer_mlp-1_shade-ils-gd"
    assert all((stem.parent / (stem.name + s)).exists() for s in (".npz", "-best.npz", "-best.json"))

    # resuming keeps the finished cell as it was
    shade_before = partial["cells"][0]
    again = run_thesis_b(protocol=protocol, out=out, resume=True, **RESUMABLE)
    assert again["cells"][0] == shade_before
    assert "pending" not in again and not (out / "checkpoints").exists()
    cut, full = again["cells"][1], whole["cells"][1]
    assert cut["resumed"] is True and "resumed" not in full
    # the resumed search is the uninterrupted one (the CPU is deterministic)
    assert cut["curve"] == full["curve"]
    for key in ("best_epoch", "evals", "train_loss", "val_loss", "test_loss", "score"):
        assert cut[key] == full[key], key
    assert json.loads((out / "metaheuristic.json").read_text())["cells"][1]["resumed"] is True


def test_resume_keeps_finished_cells_and_refuses_other_settings(tmp_path, monkeypatch):
    import dataclasses
    first = run_thesis_b(out=tmp_path, quick=True, **RESUMABLE)

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished cell ran again")
    for name in RESUMABLE["strategies"]:
        monkeypatch.setitem(thesis_b.STRATEGIES, name,
                            dataclasses.replace(thesis_b.STRATEGIES[name], train=must_not_run))
    again = run_thesis_b(out=tmp_path, quick=True, resume=True, **RESUMABLE)
    assert again["cells"] == first["cells"]
    assert again["seconds"] >= first["seconds"]
    with pytest.raises(ExperimentError, match="another protocol"):
        run_thesis_b(out=tmp_path, protocol=dataclasses.replace(thesis_b.QUICK, epochs=3),
                     quick=True, resume=True, **RESUMABLE)
    with pytest.raises(ExperimentError, match="resume needs out"):
        run_thesis_b(quick=True, resume=True, **RESUMABLE)
    # a narrower resumed run adds its cells to the file's, in the grid's order
    narrower = dict(RESUMABLE, strategies=["shade-ils"])
    merged = run_thesis_b(out=tmp_path, quick=True, resume=True, **narrower)
    assert [c["strategy"] for c in merged["cells"]] == ["shade", "shade-ils", "shade-ils-gd"]
    assert merged["cells"][0] == first["cells"][0] and merged["cells"][2] == first["cells"][1]
    (tmp_path / "metaheuristic.json").write_text("{not json")
    with pytest.raises(ExperimentError, match="not a thesis-b results file"):
        run_thesis_b(out=tmp_path, quick=True, resume=True, **RESUMABLE)
    # --resume on an empty folder is a fresh run
    monkeypatch.undo()
    assert cli.main(["experiment", "thesis-b", "--part", "metaheuristic", "--quick", "--quiet",
                     "--datasets", "breast-cancer", "--strategies", "shade", "--resume",
                     "--out", str(tmp_path / "new")]) == 0


def test_cells_of_several_devices_say_which_ran_where():
    cells = [dict(dataset="fashion-mnist", model="lenet5", strategy=s, task="classification",
                  status="ok", metric="accuracy", batch_size=None, lr=None, best_epoch=1,
                  train_loss=1.0, test_loss=1.0, score=0.5, seconds=1.0, device=d)
             for s, d in (("shade", "gpu A"), ("shade-ils", "gpu B"))]
    import dataclasses
    results = {"part": "metaheuristic", "quick": False,
               "protocol": dataclasses.asdict(thesis_b.THESIS), "device": "gpu B",
               "seconds": 2.0, "cells": cells}
    md = thesis_b.markdown_table(results)
    assert "Devices: gpu A (lenet5 shade); gpu B (lenet5 shade-ils)" in md
    results["cells"] = cells[1:]
    assert "Device gpu B;" in thesis_b.markdown_table(results)
