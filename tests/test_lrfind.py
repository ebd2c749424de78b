"""The learning-rate range test (hetnet.model.lrfind): fastai's schedule, smoothing,
stopping and valley rule, and the model left exactly as it was."""

import numpy as np
import pytest

import hetnet as hn
from hetnet.model.lrfind import _suggest, valley


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 10)).astype(np.float32)
    w = rng.standard_normal((10, 3))
    return X, (X @ w).argmax(axis=1)


def test_valley_is_fastais():
    # the longest strictly descending run: 0.9 0.8 0.7 0.5 0.4 0.3 (indices 1..7)
    losses = [1.0, 0.9, 0.95, 0.8, 0.7, 0.5, 0.45, 0.3, 0.6, 2.0]
    # fastai: lds at index 7 is 7 (1.0 0.9 0.8 0.7 0.5 0.45 0.3), max_start = 7 - 7 = 0,
    # sections = 7/3, idx = 0 + int(2.33) + int(1.17) = 3
    assert valley(losses) == 3
    assert valley([3.0, 2.0, 1.0]) == 0 + int(2 / 3) + int(1 / 3)
    assert valley([1.0]) == 0


def test_suggest_skips_the_ends_as_fastai():
    lrs = list(np.geomspace(1e-5, 1, 40))
    losses = list(np.r_[np.full(10, 2.0), np.linspace(2.0, 0.5, 20), np.linspace(0.6, 5, 10)])
    lr, k = _suggest(lrs, losses, 40)
    # kept: indices 4..34; the descent runs from index 9 (last 2.0) to 29
    kept = losses[4:35]
    assert k == 4 + valley(kept) and lr == lrs[k]
    assert 9 <= k <= 29


@pytest.mark.parametrize("opt", [lambda: hn.Adam(0.01), lambda: hn.SGD(0.1, momentum=0.9),
                                 lambda: hn.RMSProp(0.01, momentum=0.5)])
def test_weights_and_optimizer_state_restored_exactly(opt):
    X, y = _data()
    model = hn.models.mlp([10, 16, 3], seed=3, device="cpu")
    model.fit(X, y, epochs=1, batch_size=32, optimizer=opt())
    own = model.optimizer
    weights = model.get_weights()
    state = {i: tuple(np.array(a) for a in (st if isinstance(st, tuple) else (st,)))
             for i, st in own.state.items()}
    t, lr = own.t, own.lr
    result = model.lr_find(X, y, num_steps=30, batch_size=32)
    assert len(result.lrs) > 5
    assert model.optimizer is own and own.t == t and own.lr == lr
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    assert set(own.state) == set(state)
    for i, arrays in state.items():
        held = own.state[i] if isinstance(own.state[i], tuple) else (own.state[i],)
        for a, b in zip(held, arrays):
            np.testing.assert_array_equal(np.asarray(a), b)
    # training continues exactly as it would have without the test
    twin = hn.models.mlp([10, 16, 3], seed=3, device="cpu")
    twin.fit(X, y, epochs=1, batch_size=32, optimizer=opt())
    model.fit(X, y, epochs=1, batch_size=32)
    twin.fit(X, y, epochs=1, batch_size=32)
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_schedule_smoothing_and_a_sane_suggestion():
    X, y = _data(512)
    model = hn.models.mlp([10, 32, 3], seed=0, device="cpu")
    r = model.lr_find(X, y, start_lr=1e-5, end_lr=10, num_steps=80, batch_size=32,
                      optimizer=hn.SGD(0.1, momentum=0.9))
    n = len(r.lrs)
    np.testing.assert_allclose(r.lrs, 1e-5 * (10 / 1e-5) ** (np.arange(n) / 80), rtol=1e-12)
    avg, smooth = 0.0, []
    for i, raw in enumerate(r.raw_losses):              # fastai's AvgSmoothLoss
        avg = 0.98 * avg + 0.02 * raw
        smooth.append(avg / (1 - 0.98 ** (i + 1)))
    np.testing.assert_allclose(r.losses, smooth, rtol=1e-12)
    best = np.minimum.accumulate(r.losses)
    if r.stopped_early:
        assert r.losses[-1] > 4 * best[-2] or not np.isfinite(r.losses[-1])
    assert not (np.asarray(r.losses[:-1]) > 4 * best[:-1]).any()
    # this problem trains well with SGD-momentum between about 1e-3 and 1
    assert 1e-3 <= r.suggestion <= 1.0, r.suggestion
    assert r.lrs[r.suggestion_index] == r.suggestion
    # and a one-cycle run at the suggestion learns it
    model.fit(X, y, epochs=3, batch_size=32, optimizer=hn.SGD(r.suggestion, momentum=0.9),
              lr_schedule=hn.OneCycle(r.suggestion))
    assert model.evaluate(X, y)["accuracy"] > 0.8


def test_stops_when_the_loss_diverges():
    X, y = _data()
    model = hn.models.mlp([10, 16, 3], seed=0, device="numpy")
    r = model.lr_find(X, y, start_lr=1e-3, end_lr=1e4, num_steps=100, batch_size=32,
                      optimizer=hn.SGD(1.0))
    assert r.stopped_early and len(r.lrs) < 100


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    X, y = _data(64)
    r = hn.models.mlp([10, 3], seed=0).lr_find(X, y, num_steps=12, batch_size=16)
    path = tmp_path / "lr.png"
    r.plot(path)
    assert path.stat().st_size > 1000


@pytest.mark.parametrize("kwargs,match", [({"start_lr": 0}, "start_lr"),
                                          ({"end_lr": 1e-8}, "end_lr"),
                                          ({"num_steps": 0}, "num_steps"),
                                          ({"batch_size": 0}, "batch_size")])
def test_bad_arguments(kwargs, match):
    X, y = _data(32)
    with pytest.raises(ValueError, match=match):
        hn.models.mlp([10, 3], seed=0).lr_find(X, y, **kwargs)


def test_cli_lr_find(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from hetnet.cli import main
    path = tmp_path / "lr.png"
    rc = main(["lr-find", "--arch", "mlp", "--source", "sample", "--limit", "512",
               "--num-steps", "20", "--optimizer", "adam", "--plot", str(path)])
    out = capsys.readouterr().out
    assert rc == 0 and "suggested learning rate (valley):" in out and path.exists()
