"""Checkpoints and resuming, ReduceLROnPlateau, CSVLogger (issue 23)."""

import csv

import numpy as np
import pytest

import hetnet as hn
from hetnet.callbacks import CSVLogger, ModelCheckpoint, ReduceLROnPlateau


def net(seed=3):
    return hn.Sequential([hn.Conv2D(1, 3, 3, padding=1), hn.ReLU(), hn.MaxPool2D(2),
                          hn.Flatten(), hn.Dropout(0.3), hn.Dense(12, 4), hn.ReLU(),
                          hn.Dense(4, 3)], seed=seed, device="cpu", input_shape=(1, 4, 4))


def data(n=40):
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, n)


@pytest.mark.parametrize("make_opt", [lambda: hn.Adam(0.01), lambda: hn.SGD(0.05, momentum=0.9),
                                      lambda: hn.RMSProp(0.01, momentum=0.5)])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, make_opt):
    X, y = data()
    kw = dict(epochs=5, batch_size=8, validation_data=(X[:10], y[:10]),
              lr_schedule=hn.OneCycle(max_lr=0.02))
    whole = net()
    h_whole = whole.fit(X, y, optimizer=make_opt(), **kw,
                        callbacks=[ModelCheckpoint(tmp_path / "c-{epoch}.npz")])
    # the run "crashed" after epoch 2: a new process builds the model and resumes
    again = net(seed=99)          # even another seed: the file holds everything
    h_again = again.fit(X, y, resume_from=tmp_path / "c-2.npz", **kw)
    for a, b in zip(again.get_weights(), whole.get_weights()):
        np.testing.assert_array_equal(a, b)
    for key in ("loss", "val_loss", "val_accuracy"):
        assert h_again[key] == h_whole[key], key
    assert again.optimizer.t == whole.optimizer.t
    # a checkpoint is a model file
    loaded = hn.load(tmp_path / "c-5.npz")
    np.testing.assert_array_equal(loaded.predict_logits(X), whole.predict_logits(X))


def test_resume_refuses_another_run(tmp_path):
    X, y = data()
    m = net()
    m.fit(X, y, epochs=2, batch_size=8, callbacks=[ModelCheckpoint(tmp_path / "c.npz")])
    with pytest.raises(ValueError, match="epochs=2"):
        net().fit(X, y, epochs=3, batch_size=8, resume_from=tmp_path / "c.npz")
    with pytest.raises(ValueError, match="batches"):
        net().fit(X, y, epochs=2, batch_size=4, resume_from=tmp_path / "c.npz")
    m.save(tmp_path / "plain.npz")
    with pytest.raises(ValueError, match="without training state"):
        net().fit(X, y, epochs=2, batch_size=8, resume_from=tmp_path / "plain.npz")
    other = hn.Sequential([hn.Flatten(), hn.Dense(16, 3)], device="cpu", input_shape=(1, 4, 4))
    with pytest.raises(ValueError):
        other.fit(X, y, epochs=2, batch_size=8, resume_from=tmp_path / "c.npz")


def test_checkpoint_every_and_best_only(tmp_path):
    X, y = data()
    every = ModelCheckpoint(tmp_path / "e-{epoch}.npz", every=2)
    best = ModelCheckpoint(tmp_path / "best.npz", save_best_only=True, monitor="val_loss")
    seen = []

    class Record(hn.callbacks.Callback if hasattr(hn, "callbacks") else object):
        pass

    net().fit(X, y, epochs=5, batch_size=8, validation_data=(X, y), callbacks=[every, best])
    assert sorted(p.name for p in tmp_path.glob("e-*.npz")) == ["e-2.npz", "e-4.npz"]
    assert (tmp_path / "best.npz").exists() and best.best is not None
    with pytest.raises(ValueError, match="monitors"):
        net().fit(X, y, epochs=1, callbacks=[ModelCheckpoint(tmp_path / "x.npz",
                                                              save_best_only=True)])
    with pytest.raises(ValueError, match="folder"):
        ModelCheckpoint(tmp_path / "missing" / "x.npz")
    with pytest.raises(ValueError, match="every"):
        ModelCheckpoint(tmp_path / "x.npz", every=0)
    assert not seen


def test_reduce_lr_on_plateau():
    X, y = data()
    cb = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=10.0, min_lr=0.01)
    m = net()
    m.fit(X, y, epochs=5, batch_size=8, optimizer=hn.SGD(0.08), callbacks=[cb])
    # min_delta 10: no epoch improves after the first, so the rate halves each epoch to 0.01
    assert [round(lr, 6) for _, lr in cb.reductions] == [0.04, 0.02, 0.01]
    assert m.optimizer.lr == pytest.approx(0.01)
    with pytest.raises(ValueError, match="factor"):
        ReduceLROnPlateau(factor=1.5)


def test_csv_logger(tmp_path):
    X, y = data()
    path = tmp_path / "log.csv"
    net().fit(X, y, epochs=3, batch_size=8, validation_data=(X, y), callbacks=[CSVLogger(path)])
    rows = list(csv.reader(open(path)))
    assert rows[0][:2] == ["epoch", "loss"] and "val_loss" in rows[0]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3"]
    net().fit(X, y, epochs=2, batch_size=8, validation_data=(X, y),
              callbacks=[CSVLogger(path, append=True)])
    rows = list(csv.reader(open(path)))
    assert len(rows) == 1 + 3 + 2


def test_save_checkpoint_needs_a_fit_in_progress(tmp_path):
    X, y = data()
    m = net()
    with pytest.raises(RuntimeError, match="fit in progress"):
        m.save_checkpoint(tmp_path / "c.npz")
    m.fit(X, y, epochs=1, batch_size=8)
    with pytest.raises(RuntimeError, match="fit in progress"):
        m.save_checkpoint(tmp_path / "c.npz")


# ------------------------------------------------------ metaheuristic fits
def mh_net(seed=3):
    return hn.Sequential([hn.Dense(6, 8), hn.BatchNorm1D(8), hn.ReLU(), hn.Dropout(0.2),
                          hn.Dense(8, 3)], seed=seed, device="cpu", input_shape=(6,))


def mh_data(n=40):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 6)).astype(np.float32), rng.integers(0, 3, n)


MH_FIT = dict(max_evals=90, epochs=5, batch_size=8)


@pytest.mark.parametrize("make_opt", [
    lambda: hn.SHADE(pop_size=6),
    lambda: hn.SHADEILS(pop_size=6, de_evals=12, ls_evals=6),
    lambda: hn.SHADE(pop_size=6, gd=hn.Adam(0.01), gd_every=12),
    lambda: hn.SHADEILS(pop_size=5, de_evals=10, ls_evals=5, gd=hn.SGD(0.05, momentum=0.9),
                        gd_every=10)], ids=["shade", "shade-ils", "shade-gd", "shade-ils-gd"])
def test_metaheuristic_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, make_opt):
    """The population, memories, archive, RNG, evaluation count, SHADE-ILS's
    phase and a hybrid's Adam/momentum state all travel in the checkpoint
    (BatchNorm and Dropout in the net: their state too)."""
    X, y = mh_data()
    val = (X[:10], y[:10])
    whole, opt_whole = mh_net(), make_opt()
    h_whole = whole.fit(X, y, optimizer=opt_whole, validation_data=val, **MH_FIT,
                        callbacks=[ModelCheckpoint(tmp_path / "c-{epoch}.npz")])
    again, opt_again = mh_net(seed=99), make_opt()
    h_again = again.fit(X, y, optimizer=opt_again, validation_data=val, **MH_FIT,
                        resume_from=tmp_path / "c-2.npz")
    # the searches end in the same state: population, losses, memories, RNG, counters
    state_whole, state_again = opt_whole.get_state(), opt_again.get_state()
    assert sorted(state_whole) == sorted(state_again)
    for key, value in state_whole.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(state_again[key], value, err_msg=key)
        else:
            assert state_again[key] == value, key
    for a, b in zip(again.get_weights(), whole.get_weights()):
        np.testing.assert_array_equal(a, b)
    for key in ("loss", "evals", "val_loss", "val_accuracy"):
        assert h_again[key] == h_whole[key], key
    assert h_again.n_evals == h_whole.n_evals == 90
    assert (h_again.result.nit, h_again.result.n_gd) == (h_whole.result.nit, h_whole.result.n_gd)
    np.testing.assert_array_equal(h_again.result.history["fun"], h_whole.result.history["fun"])
    # the file's weights are the best individual of its epoch (what the model held then)
    loaded = hn.load(tmp_path / "c-5.npz")
    np.testing.assert_array_equal(loaded.predict_logits(X), whole.predict_logits(X))


def test_metaheuristic_checkpoints_every_and_best_only(tmp_path):
    X, y = mh_data()
    every = ModelCheckpoint(tmp_path / "e-{epoch}.npz", every=2)
    best = ModelCheckpoint(tmp_path / "best.npz", save_best_only=True, monitor="val_loss")
    log = CSVLogger(tmp_path / "log.csv")
    m = mh_net()
    h = m.fit(X, y, optimizer=hn.SHADE(pop_size=6), validation_data=(X[:10], y[:10]),
              callbacks=[every, best, log], **MH_FIT)
    assert sorted(p.name for p in tmp_path.glob("e-*.npz")) == ["e-2.npz", "e-4.npz"]
    assert best.best == min(h["val_loss"])
    rows = list(csv.reader(open(tmp_path / "log.csv")))
    assert rows[0][:3] == ["epoch", "loss", "evals"] and len(rows) == 6, rows
    assert [int(r[2]) for r in rows[1:]] == h["evals"]
    with pytest.raises(RuntimeError, match="fit in progress"):
        m.save_checkpoint(tmp_path / "after.npz")


def test_metaheuristic_resume_refuses_another_run(tmp_path):
    X, y = mh_data()
    mh_net().fit(X, y, optimizer=hn.SHADE(pop_size=6), callbacks=[ModelCheckpoint(
        tmp_path / "s.npz")], **MH_FIT)
    path = tmp_path / "s.npz"
    with pytest.raises(ValueError, match="pop_size=6"):
        mh_net().fit(X, y, optimizer=hn.SHADE(pop_size=8), resume_from=path, **MH_FIT)
    with pytest.raises(ValueError, match="was written by a SHADE run"):
        mh_net().fit(X, y, optimizer=hn.SHADEILS(pop_size=6), resume_from=path, **MH_FIT)
    with pytest.raises(ValueError, match="max_evals=90"):
        mh_net().fit(X, y, optimizer=hn.SHADE(pop_size=6), resume_from=path,
                     **dict(MH_FIT, max_evals=100))
    with pytest.raises(ValueError, match="gd was none"):
        mh_net().fit(X, y, optimizer=hn.SHADE(pop_size=6, gd=hn.Adam()), resume_from=path,
                     **MH_FIT)
    with pytest.raises(ValueError, match=r"metaheuristic fit \(SHADE\)"):
        mh_net().fit(X, y, epochs=5, batch_size=8, resume_from=path)
    mh_net().fit(X, y, epochs=2, batch_size=8, callbacks=[ModelCheckpoint(tmp_path / "g.npz")])
    with pytest.raises(ValueError, match="written by a gradient fit"):
        mh_net().fit(X, y, optimizer=hn.SHADE(pop_size=6), resume_from=tmp_path / "g.npz",
                     **MH_FIT)
    # a gd that is a Python callable: checkpoints are written, resuming is refused
    opt = hn.SHADE(pop_size=6, gd=lambda x: x * 0.99, gd_every=12)
    mh_net().fit(X, y, optimizer=opt, callbacks=[ModelCheckpoint(tmp_path / "f.npz")], **MH_FIT)
    opt = hn.SHADE(pop_size=6, gd=lambda x: x * 0.99, gd_every=12)
    with pytest.raises(ValueError, match="Python callable, whose state"):
        mh_net().fit(X, y, optimizer=opt, resume_from=tmp_path / "f.npz", **MH_FIT)


def test_reduce_lr_on_plateau_with_metaheuristics():
    X, y = mh_data()
    cb = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=10.0)
    adam = hn.Adam(0.02)
    mh_net().fit(X, y, optimizer=hn.SHADE(pop_size=6, gd=adam, gd_every=12), callbacks=[cb],
                 **MH_FIT)
    # the hybrid's gradient optimizer is the rate it reduces: halved after epochs 2 to 5
    assert [round(lr, 6) for _, lr in cb.reductions] == [0.01, 0.005, 0.0025, 0.00125]
    assert adam.lr == pytest.approx(0.00125)
    with pytest.raises(ValueError, match="SHADE fit has none"):
        mh_net().fit(X, y, optimizer=hn.SHADE(pop_size=6), callbacks=[
            ReduceLROnPlateau(monitor="loss")], **MH_FIT)
