"""Callbacks: the hooks Sequential calls, ProgressBar, EarlyStopping."""

import io
import pickle

import numpy as np
import pytest

import hetnet as hn
from hetnet.callbacks import Callback, EarlyStopping, ProgressBar
from hetnet.devices.cpu import CPUDevice

HOOKS = ("on_fit_begin", "on_epoch_begin", "on_batch_end", "on_epoch_end", "on_fit_end")


def data(n=100, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, 6)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 1).astype(np.int64)
    return X, y


def model(seed=0):
    return hn.models.mlp([6, 8, 2], seed=seed, device=CPUDevice(num_threads=1))


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_fit_begin(self, model):
        self.calls.append(("fit_begin",))

    def on_epoch_begin(self, model, epoch):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_end(self, model, batch):
        self.calls.append(("batch_end", batch))

    def on_epoch_end(self, model, epoch, logs):
        self.calls.append(("epoch_end", epoch, sorted(logs)))

    def on_fit_end(self, model, history):
        self.calls.append(("fit_end", history.epochs))


def test_base_callback_has_every_hook_and_does_nothing():
    cb = Callback()
    for hook in HOOKS:
        assert callable(getattr(cb, hook))
    m = model()
    X, y = data()
    w0 = m.build((6,)).get_weights()
    assert not cb.on_epoch_end(m, 0, {"loss": 1.0})
    m.fit(X, y, epochs=2, batch_size=32, callbacks=[cb])   # runs, changes nothing by itself
    assert any((a != b).any() for a, b in zip(w0, m.get_weights()))


def test_sequential_calls_hooks_in_order():
    X, y = data(100)
    rec = Recorder()
    model().fit(X, y, epochs=2, batch_size=32, validation_data=(X, y), callbacks=[rec])
    batches = [("batch_end", b) for b in range(4)]     # 32+32+32+4
    logs = ["images_per_s", "loss", "time_s", "val_accuracy", "val_loss"]
    assert rec.calls == ([("fit_begin",), ("epoch_begin", 0)] + batches
                         + [("epoch_end", 0, logs), ("epoch_begin", 1)] + batches
                         + [("epoch_end", 1, logs), ("fit_end", 2)])


def test_epoch_end_true_stops():
    class StopAfterOne(Callback):
        def on_epoch_end(self, model, epoch, logs):
            return True

    X, y = data()
    hist = model().fit(X, y, epochs=5, callbacks=[StopAfterOne(), Recorder()])
    assert hist.epochs == 1


# --------------------------------------------------------- EarlyStopping
class FakeModel:
    """Weights are the epoch number: shows which epoch's weights are loaded."""

    def __init__(self):
        self.epoch = 0
        self.loaded = None

    def get_weights(self):
        return [np.array([self.epoch])]

    def set_weights(self, weights):
        self.loaded = int(weights[0][0])


def run(cb, values, key="val_loss"):
    m = FakeModel()
    cb.on_fit_begin(m)
    stopped_at = None
    for epoch, v in enumerate(values):
        m.epoch = epoch
        if cb.on_epoch_end(m, epoch, {key: v}):
            stopped_at = epoch
            break
    cb.on_fit_end(m, None)
    return stopped_at, m.loaded


def test_early_stopping_patience_and_restore():
    cb = EarlyStopping(patience=2)
    stopped, loaded = run(cb, [1.0, 0.5, 0.6, 0.7, 0.1])
    assert stopped == 3 and cb.stopped_epoch == 3
    assert cb.best == 0.5 and cb.best_epoch == 1 and loaded == 1


def test_early_stopping_min_delta_counts_but_best_is_best():
    # 0.5 -> 0.49 is better but not by min_delta: the wait goes on, yet the
    # weights put back are those of the best epoch (2)
    cb = EarlyStopping(patience=2, min_delta=0.05)
    stopped, loaded = run(cb, [1.0, 0.5, 0.49, 0.495])
    assert (stopped, loaded) == (3, 2)
    assert cb.best == 0.49 and cb.best_epoch == 2 and cb.wait == 2


def test_early_stopping_mode_auto_and_max():
    assert EarlyStopping("val_accuracy").resolved_mode == "max"
    assert EarlyStopping("val_score").resolved_mode == "max"
    assert EarlyStopping("loss").resolved_mode == "min"
    cb = EarlyStopping("val_accuracy", patience=1)
    stopped, loaded = run(cb, [0.5, 0.9, 0.8], key="val_accuracy")
    assert stopped == 2 and loaded == 1


def test_early_stopping_no_restore_when_last_is_best_or_disabled():
    stopped, loaded = run(EarlyStopping(patience=3), [3.0, 2.0, 1.0])
    assert stopped is None and loaded is None           # last epoch is the best
    stopped, loaded = run(EarlyStopping(patience=1, restore_best_weights=False), [1.0, 2.0])
    assert stopped == 1 and loaded is None


def test_early_stopping_reset_between_fits():
    cb = EarlyStopping(patience=1)
    run(cb, [1.0, 2.0])
    stopped, _ = run(cb, [5.0, 4.0, 3.0])
    assert stopped is None and cb.best == 3.0


def test_early_stopping_errors():
    with pytest.raises(ValueError, match="epoch logs hold"):
        run(EarlyStopping("val_loss"), [1.0], key="loss")
    with pytest.raises(ValueError, match="NaN"):
        run(EarlyStopping("loss"), [float("nan")], key="loss")
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError, match="min_delta"):
        EarlyStopping(min_delta=-1)


def test_early_stopping_with_sequential_restores_weights():
    X, y = data(200)
    Xv, yv = data(60, seed=1)
    weights = []

    class Keep(Callback):
        def on_epoch_end(self, model, epoch, logs):
            weights.append(model.get_weights())

    m = model()
    es = EarlyStopping("val_loss", patience=2)
    hist = m.fit(X, y, epochs=40, batch_size=8, validation_data=(Xv, yv),
                 optimizer=hn.SGD(lr=0.5, momentum=0.9), callbacks=[es, Keep()])
    best = int(np.argmin(hist["val_loss"]))
    assert es.best_epoch == best and es.stopped_epoch == hist.epochs - 1 > best
    for got, want in zip(m.get_weights(), weights[best]):
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------ ProgressBar
def test_progress_bar_counts_images_and_shows_logs():
    X, y = data(100)
    out = io.StringIO()
    model().fit(X, y, epochs=2, batch_size=32,
                callbacks=[ProgressBar(n_samples=100, batch_size=32, file=out)])
    text = out.getvalue()
    assert "epoch 1" in text and "epoch 2" in text
    assert "100/100" in text and "img" in text and "loss=" in text and "images_per_s=" in text


def test_progress_bar_counts_batches_without_sizes():
    X, y = data(100)
    out = io.StringIO()
    bar = ProgressBar(file=out)
    model().fit(X, y, epochs=2, batch_size=32, callbacks=[bar])
    text = out.getvalue()
    assert "batch" in text and "4/4" in text    # the length is learnt in epoch 1


def test_progress_bar_pickles_without_its_terminal_bar():
    bar = ProgressBar(n_samples=10, batch_size=5, file=io.StringIO())
    bar.on_epoch_begin(None, 0)
    state = bar.__getstate__()
    assert state["_bar"] is None
    bar.on_epoch_end(None, 0, {"loss": 1.0})
    copy = pickle.loads(pickle.dumps(ProgressBar(n_samples=10, batch_size=5)))
    assert copy.n_samples == 10
