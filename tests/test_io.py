"""Saving and loading: plain arrays + JSON, exact round trip, pickles refused."""

import json
import pickle
import zipfile

import numpy as np
import pytest

import hetnet as hn


def trained_model():
    rng = np.random.default_rng(0)
    X = rng.random((40, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, 40)
    model = hn.Sequential([hn.Conv2D(1, 3, 3, padding="same"), hn.ReLU(), hn.MaxPool2D(2),
                           hn.Flatten(), hn.Dense(48, 16, init="glorot"), hn.Tanh(),
                           hn.Dense(16, 4)], seed=3)
    model.fit(X, y, epochs=2, batch_size=8, optimizer=hn.SGD(0.05, momentum=0.9))
    return model, X


def test_save_load_exact(tmp_path):
    model, X = trained_model()
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = hn.load(path)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.predict_proba(X), loaded.predict_proba(X))
    assert [repr(layer) for layer in loaded.layers] == [repr(layer) for layer in model.layers]


def test_file_is_plain_arrays_and_json(tmp_path):
    model, _ = trained_model()
    path = tmp_path / "m.npz"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        names = sorted(z.namelist())
    assert names[-1] == "w0005.npy" and "config.npy" in names
    with np.load(path, allow_pickle=False) as data:
        config = json.loads(str(data["config"]))
    assert config["format"] == "hetnet-model/1"
    assert config["layers"][0]["class"] == "Conv2D"


class Boom:
    def __reduce__(self):
        return (print, ("pickle payload executed",))


def test_pickle_payload_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.npz"
    np.savez(path, config=np.array([Boom()], dtype=object), w0000=np.zeros(3))
    with pytest.raises(ValueError):
        hn.load(path)
    assert "executed" not in capsys.readouterr().out


def test_raw_pickle_file_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ValueError, match="not a hetnet model file"):
        hn.load(path)
    assert "executed" not in capsys.readouterr().out


def test_unknown_layer_class_is_refused(tmp_path):
    config = {"format": "hetnet-model/1", "loss": "cross_entropy", "input_shape": [4],
              "layers": [{"class": "os.system", "config": {}}]}
    path = tmp_path / "bad.npz"
    np.savez(path, config=np.array(json.dumps(config)))
    with pytest.raises(ValueError, match="unknown layer class"):
        hn.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file"):
        hn.load(tmp_path / "nope.npz")
