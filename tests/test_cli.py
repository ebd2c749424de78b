"""The command line: every subcommand runs on the shipped sample, --help
documents every flag, --plot writes a PNG or says how to get matplotlib."""

import argparse
import builtins
import json
import subprocess
import sys

import numpy as np
import pytest

import hetnet as hn
from hetnet.cli import build_parser, main

FAST = ["--source", "sample", "--threads", "1"]


def subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("name", ["train", "evaluate", "predict", "bench", "devices", "info"])
def test_every_flag_is_documented(name, capsys):
    sub = subcommands()[name]
    assert sub.description
    for action in sub._actions:
        assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for action in sub._actions:
        for flag in action.option_strings:
            assert flag in text


def test_main_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in ("train", "evaluate", "predict", "bench", "devices", "info"):
        assert name in text


@pytest.fixture(scope="module")
def mlp_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "mlp.hetnet.npz"
    assert main(["train", *FAST, "--arch", "mlp", "--hidden", "32", "--limit", "600",
                 "--epochs", "2", "--quiet", "--out", str(path)]) == 0
    return path


def test_train_saves_a_loadable_model(mlp_file, capsys):
    model = hn.load(mlp_file)
    assert model.input_shape == (784,) and model.count_params() == 784 * 32 + 32 + 32 * 10 + 10


def test_train_lenet5_prints_epochs(tmp_path, capsys):
    out = tmp_path / "lenet.npz"
    assert main(["train", *FAST, "--limit", "200", "--epochs", "1", "--batch-size", "50",
                 "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "LeNet-5" in text and "epoch 1: loss" in text and "final test accuracy" in text
    assert hn.load(out).input_shape == (1, 28, 28)


@pytest.mark.parametrize("optimizer", ["shade-ils", "shade-gd"])
def test_train_with_a_metaheuristic(tmp_path, capsys, optimizer):
    """The metaheuristics from the main job: --max-evals evaluations over the
    epochs, the trained weights saved; the same run as fit with the same search."""
    out = tmp_path / "mh.npz"
    assert main(["train", *FAST, "--arch", "mlp", "--hidden", "16", "--limit", "300",
                 "--optimizer", optimizer, "--max-evals", "40", "--pop-size", "6",
                 "--epochs", "2", "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{optimizer}: population 6, 40 evaluations" in text and "epoch 2: loss" in text
    saved = hn.load(out)
    # the same search through the API gives the saved weights
    from hetnet.metaheuristics import BY_NAME
    X, y = hn.datasets.load_fashion_mnist("train", source="sample", flatten=True)
    Xte, yte = hn.datasets.load_fashion_mnist("test", source="sample", flatten=True)
    from hetnet.cli import _build_network, _device
    model = _build_network("mlp", [16], 42, _device("cpu", 1))
    cls, hybrid = BY_NAME[optimizer]
    model.fit(X[:300], y[:300], optimizer=cls(pop_size=6, gd=hn.optim.Adam(lr=0.001)
                                              if hybrid else None),
              max_evals=40, epochs=2, batch_size=64, validation_data=(Xte, yte), verbose=0)
    for a, b in zip(saved.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_train_metaheuristic_needs_an_evaluation_per_epoch(tmp_path, capsys):
    assert main(["train", *FAST, "--optimizer", "shade", "--max-evals", "2", "--epochs", "3",
                 "--out", str(tmp_path / "m.npz")]) == 2
    assert "--max-evals 2 is fewer than --epochs 3" in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()


def test_evaluate(mlp_file, capsys):
    assert main(["evaluate", str(mlp_file), "--source", "sample"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"loss", "accuracy"} and 0.3 < result["accuracy"] <= 1


def test_predict_to_stdout_and_files(mlp_file, tmp_path, capsys):
    assert main(["predict", str(mlp_file), "--source", "sample", "--limit", "5"]) == 0
    lines = capsys.readouterr().out.split()
    assert len(lines) == 5 and all(0 <= int(v) <= 9 for v in lines)

    from hetnet.datasets import load_fashion_mnist
    X, _ = load_fashion_mnist("test", source="sample")
    images = tmp_path / "images.npy"
    np.save(images, (X[:7, 0] * 255).round().astype(np.uint8))     # (n, H, W) uint8 pixels
    out = tmp_path / "p.npy"
    assert main(["predict", str(mlp_file), "--input", str(images), "--proba",
                 "--output", str(out)]) == 0
    proba = np.load(out)
    assert proba.shape == (7, 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    expected = hn.load(mlp_file).predict_proba(X[:7].reshape(7, -1))
    np.testing.assert_allclose(proba, expected, atol=1e-2)      # pixels rounded to uint8

    csv_in, csv_out = tmp_path / "rows.csv", tmp_path / "labels.csv"
    np.savetxt(csv_in, X[:3].reshape(3, -1), delimiter=",")
    assert main(["predict", str(mlp_file), "--input", str(csv_in), "--output", str(csv_out)]) == 0
    assert len(csv_out.read_text().split()) == 3


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_predict_estimator_file_gives_its_labels(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from hetnet.estimators import HetNetClassifier
    from hetnet.datasets import load_fashion_mnist
    X, y = load_fashion_mnist("train", source="sample", flatten=True)
    names = np.array(["top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                      "sneaker", "bag", "boot"])
    clf = HetNetClassifier(hidden_layer_sizes=(16,), max_iter=2, n_threads=1, random_state=0)
    path = clf.fit(X[:500], names[y[:500]]).save(tmp_path / "clf.npz")
    assert main(["predict", str(path), "--source", "sample", "--limit", "4", "--threads", "1"]) == 0
    labels = capsys.readouterr().out.split()
    assert len(labels) == 4 and set(labels) <= set(names)
    assert main(["evaluate", str(path), "--source", "sample", "--threads", "1"]) == 2
    assert "not Fashion-MNIST's class indices" in capsys.readouterr().err
    path = clf.fit(X[:500], y[:500]).save(tmp_path / "clf_idx.npz")
    assert main(["evaluate", str(path), "--source", "sample", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == pytest.approx(clf.score(*load_fashion_mnist(
        "test", source="sample", flatten=True)))


def test_bench_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", *FAST, "--arch", "mlp", "--limit", "512", "--batch-sizes", "32", "128",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["batch_size"] for r in result["runs"]] == [32, 128]
    assert all(r["train_images_per_s"] > 0 and r["inference_images_per_s"] > 0
               for r in result["runs"])
    assert "openmp" in result["build"]
    assert "train img/s" in capsys.readouterr().out


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "m.hetnet.npz"
    assert main(["train", *FAST, "--arch", "mlp", "--limit", "200", "--epochs", "2", "--quiet",
                 "--out", str(out), "--plot"]) == 0
    png = tmp_path / "m-curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bench_png = tmp_path / "bench.png"
    assert main(["bench", *FAST, "--arch", "mlp", "--limit", "256", "--batch-sizes", "64",
                 "--plot", str(bench_png)]) == 0
    assert bench_png.read_bytes()[:4] == b"\x89PNG"


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    out = tmp_path / "never.npz"
    assert main(["train", *FAST, "--out", str(out), "--plot"]) == 2
    err = capsys.readouterr().err
    assert "matplotlib" in err and "hetnet[plot]" in err
    assert not out.exists()          # refused before training, not after
    assert main(["bench", *FAST, "--plot"]) == 2


@pytest.mark.parametrize("argv, match", [
    (["train", "--epochs", "0"], "--epochs must be at least 1"),
    (["train", "--device", "gpu", "--threads", "2"], "--threads applies"),
    (["evaluate", "no-such-model.npz"], "no model file"),
    (["predict", "no-such-model.npz"], "no model file"),
    (["bench", "--batch-sizes", "0"], "--batch-sizes must be at least 1"),
])
def test_errors_exit_2_with_a_message(argv, match, capsys):
    assert main(argv) == 2
    assert match in capsys.readouterr().err


def test_predict_bad_input_file(mlp_file, tmp_path, capsys):
    bad = tmp_path / "x.bin"
    bad.write_bytes(b"1234")
    assert main(["predict", str(mlp_file), "--input", str(bad)]) == 2
    assert "cannot tell the format" in capsys.readouterr().err
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 5), dtype=np.float32))
    assert main(["predict", str(mlp_file), "--input", str(wrong)]) == 2
    assert "per-sample shape" in capsys.readouterr().err


def test_devices_and_info(capsys):
    assert main(["devices"]) == 0
    assert "cpu" in capsys.readouterr().out
    assert main(["info"]) == 0
    assert "openmp:" in capsys.readouterr().out


def test_devices_is_callable_and_still_the_subpackage():
    # hn.devices() lists the devices; the name must not hide hetnet.devices.*
    found = hn.devices()
    assert found[0]["name"] == "cpu" and found == hn.devices.list_devices()
    done = subprocess.run([sys.executable, "-c", "import hetnet.devices.cpu as c; "
                           "print(c.CPUDevice.__name__)"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "CPUDevice", done.stderr


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "hetnet", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "predict" in done.stdout


def test_plan_prints_the_placement_table(capsys):
    from hetnet.cli import main
    assert main(["plan", "--arch", "mlp", "--batch-size", "8", "--device", "cpu",
                 "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "plan for batch 8 (training)" in out and "total per step" in out
    assert out.count("Dense") == 3
    assert main(["plan", "--batch-size", "0"]) == 2
