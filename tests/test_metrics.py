"""Metrics (hetnet.metrics) against scikit-learn's, evaluate(metrics=), and
the mean-absolute-error loss on every device."""

import numpy as np
import pytest
from sklearn import metrics as skm

import hetnet as hn
from hetnet import metrics as hm

from conftest import assert_close


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("weighted", [False, True])
def test_classification_metrics_match_sklearn(rng, weighted):
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 5, 200))  # 4: never true
    w = rng.random(200) if weighted else None
    assert hm.accuracy(y_true, y_pred, w) == pytest.approx(
        skm.accuracy_score(y_true, y_pred, sample_weight=w), rel=1e-12)
    expected = skm.balanced_accuracy_score(y_true, y_pred, sample_weight=w)
    assert hm.balanced_accuracy(y_true, y_pred, w) == pytest.approx(expected, rel=1e-12)
    ind_t, ind_p = rng.integers(0, 2, (50, 3)), rng.integers(0, 2, (50, 3))
    assert hm.accuracy(ind_t, ind_p) == pytest.approx(skm.accuracy_score(ind_t, ind_p))


@pytest.mark.parametrize("k,weighted", [(1, False), (3, False), (3, True)])
def test_regression_metrics_match_sklearn(rng, k, weighted):
    t = rng.standard_normal((80, k))
    p = t + 0.3 * rng.standard_normal((80, k))
    w = rng.random(80) if weighted else None
    if k == 1:
        t, p = t[:, 0], p[:, 0]
    for ours, theirs in ((hm.r2, skm.r2_score), (hm.mean_absolute_error, skm.mean_absolute_error),
                         (hm.mean_squared_error, skm.mean_squared_error)):
        assert ours(t, p, w) == pytest.approx(theirs(t, p, sample_weight=w), rel=1e-10)


def test_r2_of_a_constant_target_is_sklearns():
    t = np.c_[np.ones(5), np.arange(5.0)]
    for p in (t.copy(), t + 0.1):
        assert hm.r2(t, p) == pytest.approx(skm.r2_score(t, p))


def test_evaluate_classification():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0.3).astype(int) + (X[:, 2] > 1).astype(int)
    model = hn.models.mlp([6, 16, 3], seed=0, device="cpu")
    model.fit(X, y, epochs=5, batch_size=32, optimizer=hn.Adam(0.01))
    w = rng.random(300)
    res = model.evaluate(X, y, sample_weight=w, metrics=("accuracy", "balanced_accuracy"))
    pred = model.predict(X)
    assert res["accuracy"] == pytest.approx(skm.accuracy_score(y, pred, sample_weight=w))
    assert res["balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(y, pred, sample_weight=w))
    assert res["loss"] == pytest.approx(model.evaluate(X, y, sample_weight=w)["loss"], rel=1e-6)
    assert set(model.evaluate(X, y)) == {"loss", "accuracy"}           # the default, as before
    with pytest.raises(ValueError, match="'r2' is for regression"):
        model.evaluate(X, y, metrics=["r2"])
    with pytest.raises(ValueError, match="unknown metric"):
        model.evaluate(X, y, metrics=["f1"])


def test_evaluate_binary_and_regression():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((120, 4)).astype(np.float32)
    yb = (X[:, 0] > 0).astype(np.float32)
    clf = hn.models.mlp([4, 8, 1], seed=0, loss="binary_cross_entropy")
    clf.fit(X, yb, epochs=3, batch_size=16, optimizer=hn.Adam(0.01))
    res = clf.evaluate(X, yb, metrics="balanced_accuracy")
    assert res["balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(yb, clf.predict(X)))
    yr = np.c_[X[:, 0] - X[:, 1], X[:, 2]].astype(np.float32)
    reg = hn.models.mlp([4, 8, 2], seed=0, loss="mse")
    reg.fit(X, yr, epochs=5, batch_size=16, optimizer=hn.Adam(0.01))
    res = reg.evaluate(X, yr, metrics=("r2", "mae", "mse"))
    pred = reg.predict(X)
    assert res["r2"] == pytest.approx(skm.r2_score(yr, pred), rel=1e-5)
    assert res["mae"] == pytest.approx(skm.mean_absolute_error(yr, pred), rel=1e-5)
    assert res["mse"] == pytest.approx(skm.mean_squared_error(yr, pred), rel=1e-5)
    assert res["mse"] == pytest.approx(res["loss"], rel=1e-4)     # the mse loss is the mse
    with pytest.raises(ValueError, match="is for classification"):
        reg.evaluate(X, yr, metrics=["accuracy"])


# ------------------------------------------------------------------ the mae loss
@pytest.mark.parametrize("weighted", [False, True])
def test_mae_op(device, ref, rng, weighted):
    p, t = rng.standard_normal((37, 3)).astype(np.float32), rng.standard_normal((37, 3))
    t = t.astype(np.float32)
    t[0, 0] = p[0, 0]                                        # a tie: gradient 0
    w = rng.random(37).astype(np.float32) if weighted else None
    loss_ref, g_ref = ref.mae(p, t, w)
    loss, g = device.mae(device.asarray(p), device.asarray(t),
                         None if w is None else device.asarray(w))
    assert_close(device.to_host(loss), loss_ref, rtol=1e-5, what="mae loss")
    assert_close(device.to_host(g), g_ref, rtol=1e-6, what="mae grad")
    assert device.to_host(g)[0, 0] == 0


def test_mae_gradient_by_finite_differences(rng):
    """Central differences of the loss (float64 arithmetic) in every entry;
    the loss is linear away from p == t, so a step smaller than every
    |p - t| gives the gradient exactly up to rounding."""
    from hetnet.devices.reference import NumpyDevice
    ref = NumpyDevice()
    p = rng.standard_normal((6, 2))
    t = p + rng.choice([-1, 1], p.shape) * (0.1 + rng.random(p.shape))
    w = rng.random(6)
    _, g = ref.mae(p, t, w)
    eps = 1e-3

    def loss(q):
        return (w * np.abs(q - t).sum(axis=1)).sum() / q.size

    num = np.zeros_like(p)
    for idx in np.ndindex(p.shape):
        a, b = p.copy(), p.copy()
        a[idx] += eps
        b[idx] -= eps
        num[idx] = (loss(a) - loss(b)) / (2 * eps)
    assert_close(g, num, rtol=1e-5, what="mae gradient")
    assert ref.mae(p, t, w)[0][0] == pytest.approx(loss(p), rel=1e-6)


def test_model_with_mae_loss_gradients_by_finite_differences():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((16, 3)).astype(np.float32)
    y = rng.standard_normal((16, 2)).astype(np.float32) * 3     # far from the outputs: no kinks
    model = hn.models.mlp([3, 4, 2], seed=0, loss="mae", device="numpy", activation=hn.Tanh)
    loss, grads = model.loss_and_gradients(X, y)
    weights = model.get_weights()
    eps = 1e-2
    for k in range(len(weights)):
        num = np.zeros_like(weights[k], dtype=np.float64)
        for idx in np.ndindex(weights[k].shape):
            vals = []
            for sign in (1, -1):
                ws = [w.copy() for w in weights]
                ws[k][idx] += sign * eps
                model.set_weights(ws)
                vals.append(model.loss_and_gradients(X, y)[0])
            num[idx] = (vals[0] - vals[1]) / (2 * eps)
        assert_close(grads[k], num, rtol=2e-3, atol=1e-4, what=f"mae param {k}")
    model.set_weights(weights)
    model.fit(X, y, epochs=30, batch_size=16, optimizer=hn.Adam(0.05))
    assert model.evaluate(X, y)["loss"] < loss
