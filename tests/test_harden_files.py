"""Crafted and damaged files: hn.load, load_estimator and the CLI name the
file and the field, never a raw KeyError/TypeError, never a huge allocation,
never a pickle (issue 23)."""

import io as _io
import json
import warnings
import zipfile

import numpy as np
import pytest

import hetnet as hn
from hetnet.cli import main
from hetnet.model import io


def model():
    return hn.Sequential([hn.Conv2D(1, 2, 3, padding=1), hn.ReLU(), hn.MaxPool2D(2),
                          hn.Flatten(), hn.Dense(8, 3)], seed=0, device="cpu",
                         input_shape=(1, 4, 4))


def write(path, config, arrays):
    out = dict(arrays)
    if config is not None:
        out["config"] = np.array(config if isinstance(config, str) else json.dumps(config))
    np.savez(path, **out)
    return path


def good_parts():
    m = model()
    cfg = dict(m.get_config(), format=io.FORMAT, hetnet_version=hn.__version__)
    return cfg, {f"w{i:04d}": w for i, w in enumerate(m.get_weights())}


def crafted(tmp_path):
    cfg, ws = good_parts()
    cases = {}

    def case(name, config=cfg, arrays=ws):
        cases[name] = write(tmp_path / f"{name}.npz", config, arrays)

    case("no-config", None)
    case("not-json", "{not json")
    case("deep-json", "[" * 100000 + "]" * 100000)
    case("config-list", [1, 2])
    case("bad-format", dict(cfg, format="other/9"))
    case("no-layers", {k: v for k, v in cfg.items() if k != "layers"})
    case("layers-str", dict(cfg, layers="Dense"))
    case("layers-empty", dict(cfg, layers=[]))
    case("layer-not-dict", dict(cfg, layers=[1]))
    case("layer-unknown", dict(cfg, layers=[{"class": "os.system", "config": {}}]))
    case("layer-kwargs", dict(cfg, layers=[{"class": "Dense", "config": {"bogus": 1}}]))
    case("layer-config-list", dict(cfg, layers=[{"class": "Dense", "config": [1]}]))
    case("layer-inf", dict(cfg, layers=[{"class": "Flatten", "config": {}},
                                       {"class": "Dense", "config": {"in_features": 1e400,
                                                                     "out_features": 3}}]))
    case("huge-dense", dict(cfg, input_shape=[100000], layers=[
        {"class": "Dense", "config": {"in_features": 100000, "out_features": 5000}}]))
    case("bad-loss", dict(cfg, loss="hinge"))
    case("loss-list", dict(cfg, loss=["mse"]))
    case("seed-str", dict(cfg, seed="x"))
    case("seed-neg", dict(cfg, seed=-1))
    case("shape-float", dict(cfg, input_shape=[1, 4.5, 4]))
    case("shape-str", dict(cfg, input_shape="1x4x4"))
    case("shape-mismatch", dict(cfg, input_shape=[1, 6, 6]))
    case("missing-weight", cfg, {k: v for k, v in ws.items() if k != "w0003"})
    case("extra-weight", cfg, dict(ws, w0099=np.zeros(3, np.float32)))
    case("weight-shape", cfg, dict(ws, w0000=np.zeros((3, 3), np.float32)))
    case("weight-nan", cfg, dict(ws, w0000=np.full(ws["w0000"].shape, np.nan, np.float32)))
    case("weight-int", cfg, dict(ws, w0000=ws["w0000"].astype(np.int64)))
    case("config-array", None, dict(ws, config=np.zeros(3)))
    (tmp_path / "pickle.npz").write_bytes(b"")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cases["obj-npy"] = tmp_path / "obj.npy"
    (tmp_path / "text.npz").write_text("hello")
    cases["text"] = tmp_path / "text.npz"
    cases["empty"] = tmp_path / "pickle.npz"
    buf = tmp_path / "truncated.npz"
    buf.write_bytes(write(tmp_path / "full.npz", cfg, ws).read_bytes()[:300])
    cases["truncated"] = buf
    with zipfile.ZipFile(tmp_path / "objarr.npz", "w") as zf:
        b = _io.BytesIO()
        np.save(b, np.array([object()], dtype=object), allow_pickle=True)
        zf.writestr("w0000.npy", b.getvalue())
        zf.writestr("config.npy", _np_bytes(np.array(json.dumps(cfg))))
    cases["object-array"] = tmp_path / "objarr.npz"
    return cases


def _np_bytes(a):
    b = _io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def test_crafted_model_files_give_clear_errors(tmp_path):
    import tracemalloc
    for name, path in crafted(tmp_path).items():
        tracemalloc.start()
        with pytest.raises(ValueError) as info:
            hn.load(path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        msg = str(info.value)
        assert str(path) in msg, (name, msg)
        assert "allow_pickle" not in msg, (name, msg)
        assert peak < 64 << 20, (name, peak)


def test_crafted_files_on_the_command_line(tmp_path, capsys):
    for name, path in crafted(tmp_path).items():
        assert main(["evaluate", str(path), "--source", "sample", "--threads", "1"]) == 2, name
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, (name, err)


def test_good_file_still_loads(tmp_path):
    m = model()
    m.save(tmp_path / "m.npz")
    back = hn.load(tmp_path / "m.npz")
    for a, b in zip(back.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def estimator_file(tmp_path):
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    X, y = rng.random((30, 4)), np.array(["a", "b", "c"] * 10)
    est = hn.HetNetClassifier(hidden_layer_sizes=(5,), max_iter=2, n_threads=1,
                              random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # two epochs do not converge: not the point here
        est.fit(X, y)
    path = tmp_path / "est.npz"
    est.save(path)
    return est, path, X


def test_hn_load_returns_the_estimator(estimator_file):
    est, path, X = estimator_file
    back = hn.load(path)
    assert type(back) is type(est)
    np.testing.assert_array_equal(back.predict(X), est.predict(X))


def _rewrite(path, out, change):
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    cfg = json.loads(str(arrays["config"]))
    change(cfg, arrays)
    arrays["config"] = np.array(json.dumps(cfg))
    np.savez(out, **arrays)
    return out


@pytest.mark.parametrize("change", [
    lambda c, a: c["estimator"]["attributes"].update(predict="gotcha"),
    lambda c, a: c["estimator"]["attributes"].update(__class__="x"),
    lambda c, a: c["estimator"]["params"].update(bogus=1),
    lambda c, a: c["estimator"].update(params=[1]),
    lambda c, a: c["estimator"]["attributes"].update(history_=5),
    lambda c, a: a.update(classes=np.array(["a", "b"])),
    lambda c, a: c["estimator"]["attributes"].update(n_outputs_=7),
])
def test_load_estimator_accepts_only_known_fields(estimator_file, tmp_path, change):
    from hetnet.estimators import load_estimator
    _, path, _ = estimator_file
    bad = _rewrite(path, tmp_path / "bad.npz", change)
    with pytest.raises(ValueError, match="bad.npz"):
        load_estimator(bad)
