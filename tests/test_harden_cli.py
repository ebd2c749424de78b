"""The command line on a user's mistakes: one line on stderr, exit status 2,
no traceback, and nothing trained for nothing (issue 23)."""

import os

import numpy as np
import pytest

from hetnet.cli import main

FAST = ["--source", "sample", "--threads", "1"]


@pytest.fixture(scope="module")
def mlp_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "mlp.hetnet.npz"
    assert main(["train", *FAST, "--arch", "mlp", "--hidden", "16", "--limit", "200",
                 "--epochs", "1", "--quiet", "--out", str(path)]) == 0
    return path


def one_line_error(capsys, match):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and match in lines[0], err
    return lines[0]


@pytest.mark.parametrize("where", ["dir", "nofolder"])
def test_train_out_checked_before_training(tmp_path, capsys, where):
    out = tmp_path if where == "dir" else tmp_path / "missing" / "m.npz"
    assert main(["train", *FAST, "--arch", "mlp", "--limit", "100", "--epochs", "1",
                 "--quiet", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "final test accuracy" not in captured.out      # refused before training
    assert "Traceback" not in captured.err and "--out" in captured.err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_train_out_read_only(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert main(["train", *FAST, "--arch", "mlp", "--limit", "100", "--quiet",
                     "--out", str(folder / "m.npz")]) == 2
        one_line_error(capsys, "not writable")
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("lr", ["inf", "nan", "-1"])
def test_train_bad_lr(tmp_path, capsys, lr):
    assert main(["train", *FAST, "--arch", "mlp", "--limit", "100", "--quiet", "--lr", lr,
                 "--schedule", "constant", "--out", str(tmp_path / "m.npz")]) == 2
    one_line_error(capsys, "lr")


def test_predict_output_a_directory(mlp_file, tmp_path, capsys):
    assert main(["predict", str(mlp_file), "--source", "sample", "--limit", "3",
                 "--output", str(tmp_path)]) == 2
    one_line_error(capsys, str(tmp_path))


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("hetnet ")


def test_devices_lists_opencl_ids(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "(" not in out.split()[0]
    for line in out.splitlines():
        if "opencl" in line and "unavailable" not in line:
            assert line.split()[0].startswith("opencl:")
            assert "('" not in line


def test_evaluate_plot_confusion(mlp_file, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    import json
    png = tmp_path / "confusion.png"
    assert main(["evaluate", str(mlp_file), "--source", "sample", "--threads", "1",
                 "--plot", str(png)]) == 0
    result = json.loads(capsys.readouterr().out)
    cm = np.array(result["confusion_matrix"])
    assert cm.shape == (10, 10) and png.stat().st_size > 1000
    assert result["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert len(result["per_class_accuracy"]) == 10
