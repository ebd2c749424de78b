"""Bad input gets a clear error at the API, never a wrong answer or a crash in C."""

import numpy as np
import pytest

import hetnet as hn


@pytest.fixture
def model():
    return hn.Sequential([hn.Conv2D(1, 2, 3, padding=1), hn.ReLU(), hn.MaxPool2D(2),
                          hn.Flatten(), hn.Dense(8, 3)], seed=0, input_shape=(1, 4, 4))


def data(n=6):
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, n)


@pytest.mark.parametrize("X,match", [
    (np.zeros((6, 4, 4)), "per-sample shape"),
    (np.zeros(16), "at least 2-D"),
    (np.zeros((6, 1, 5, 5)), "per-sample shape"),
    (np.zeros((0, 1, 4, 4)), "empty"),
    (np.array([["a"] * 16] * 6), "numbers"),
])
def test_bad_X(model, X, match):
    with pytest.raises(ValueError, match=match):
        model.fit(X, np.zeros(len(X), dtype=int))
    with pytest.raises(ValueError, match=match):     # only the NaN scan is skipped
        model.fit(X, np.zeros(len(X), dtype=int), check_input=False)
    if X.ndim >= 2 and len(X):
        with pytest.raises(ValueError, match=match):
            model.predict(X)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_X(model, bad):
    X, y = data()
    X[2, 0, 1, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.fit(X, y)
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.predict(X)


@pytest.mark.parametrize("at", [0, (1 << 16) - 1, 1 << 16, 3 * (1 << 16) + 5, -1])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_all_finite_scans_every_block(at, bad):
    """The block-wise scan finds one bad value wherever it lies: at a block's
    first or last value, in a middle block, or in the short last block."""
    from hetnet._validation import all_finite
    X = np.ones((7, 1, 200, 200), dtype=np.float32)     # 4.27 blocks of 64k values
    assert all_finite(X) and all_finite(X[:1, :, :1, :3])
    X.reshape(-1)[at] = bad
    assert not all_finite(X)


@pytest.mark.parametrize("y,match", [
    (np.array([0, 1, 2, 3, 0, 1]), r"labels in \[0, 3\].*3 classes"),
    (np.array([0, 1, -1, 2, 0, 1]), "labels must be 0..2"),
    (np.array([0, 1, 2]), "3 entries but X has 6"),
    (np.array([0.5, 1, 2, 0, 1, 2]), "non-integer"),
    (np.eye(4)[[0, 1, 2, 3, 0, 1]], "4 columns"),
    (np.full((6, 3), 0.5), "one-hot"),
    (np.array([0, 1, np.nan, 2, 0, 1]), "NaN"),
])
def test_bad_labels(model, y, match):
    X, _ = data()
    with pytest.raises(ValueError, match=match):
        model.fit(X, y)


def test_dtypes_are_converted(model):
    X, y = data()
    X8 = (X * 255).astype(np.uint8)
    p_int = model.predict(X8)
    p_float = model.predict(X8.astype(np.float32))
    np.testing.assert_array_equal(p_int, p_float)
    model.fit(X.astype(np.float64), y.astype(np.uint8), epochs=1)


def test_non_contiguous_inputs(model):
    X, y = data(8)
    big = np.zeros((16, 1, 8, 8), dtype=np.float32)
    big[::2, :, ::2, ::2] = X
    strided = big[::2, :, ::2, ::2]
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(model.predict_proba(strided), model.predict_proba(X))
    fortran = np.asfortranarray(X)
    np.testing.assert_array_equal(model.predict_proba(fortran), model.predict_proba(X))
    l1, g1 = model.loss_and_gradients(strided, y[::-1][::-1])
    l2, g2 = model.loss_and_gradients(X, y)
    assert l1 == l2


def test_flattened_X_is_accepted(model):
    X, _ = data()
    np.testing.assert_array_equal(model.predict(X.reshape(6, -1)), model.predict(X))


@pytest.mark.parametrize("kwargs,match", [
    ({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"batch_size": 2.5}, "batch_size"),
    ({"sample_weight": np.ones(5)}, "sample_weight"),
    ({"sample_weight": -np.ones(6)}, "non-negative"),
    ({"optimizer": "lbfgs"}, "optimizer"),
    ({"validation_data": (np.zeros((2, 1, 4, 4)),)}, "pair"),
])
def test_bad_fit_arguments(model, kwargs, match):
    X, y = data()
    with pytest.raises(ValueError, match=match):
        model.fit(X, y, **kwargs)


@pytest.mark.parametrize("make,match", [
    (lambda: hn.Conv2D(1, 2, 4, padding="same"), "odd kernel"),
    (lambda: hn.Conv2D(0, 2, 3), "in_channels"),
    (lambda: hn.Conv2D(1, 2, 3, padding=-1), "padding"),
    (lambda: hn.Conv2D(1, 2, "x"), "kernel_size"),
    (lambda: hn.Dense(3, 0), "out_features"),
    (lambda: hn.Dense(3, 2, init="zeros"), "unknown init"),
    (lambda: hn.MaxPool2D(0), "MaxPool2D"),
    (lambda: hn.SGD(lr=-1), "lr"),
    (lambda: hn.SGD(lr=0.1, momentum=1.5), "momentum"),
    (lambda: hn.Sequential([hn.Dense(2, 2)], loss="hinge"), "unknown loss"),
    (lambda: hn.Sequential([], loss="mse"), "at least one layer"),
    (lambda: hn.Sequential([hn.Dense(2, 2)], device="tpu"), "unknown device"),
])
def test_bad_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_shape_mismatch_between_layers():
    with pytest.raises(ValueError, match="expected \\(10,\\)"):
        hn.Sequential([hn.Flatten(), hn.Dense(10, 2)], input_shape=(1, 4, 4))
    with pytest.raises(ValueError, match="Conv2D\\(3"):
        hn.Sequential([hn.Conv2D(3, 2, 3), hn.Flatten(), hn.Dense(8, 2)], input_shape=(1, 4, 4))
    with pytest.raises(ValueError, match="does not fit"):
        hn.Sequential([hn.Conv2D(1, 2, 5), hn.Flatten(), hn.Dense(8, 2)], input_shape=(1, 3, 3))
    with pytest.raises(TypeError, match="not a hetnet Layer"):
        hn.Sequential([hn.Dense(2, 2), "relu"])


def test_unbuilt_model_says_so():
    model = hn.Sequential([hn.Dense(4, 2)])     # no input_shape: zoo models build at once
    with pytest.raises(RuntimeError, match="no weights yet"):
        model.predict(np.zeros((1, 4)))
    with pytest.raises(RuntimeError, match="no weights yet"):
        model.get_weights()


def test_set_weights_checks_shapes(model):
    w = model.get_weights()
    with pytest.raises(ValueError, match="needs 4 arrays"):
        model.set_weights(w[:2])
    w[0] = np.zeros((3, 3))
    with pytest.raises(ValueError, match="expected shape"):
        model.set_weights(w)


def test_thread_count_variable(monkeypatch):
    from hetnet.devices.cpu import default_num_threads
    monkeypatch.setenv("HETNET_NUM_THREADS", "3")
    assert default_num_threads() == 3
    monkeypatch.setenv("HETNET_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="HETNET_NUM_THREADS"):
        default_num_threads()
    monkeypatch.delenv("HETNET_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert default_num_threads() == 1


def test_diverging_training_is_reported():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 3)).astype(np.float32) * 100
    model = hn.models.mlp([3, 8, 1], loss="mse", seed=0)
    with pytest.raises(FloatingPointError, match="diverged"):
        model.fit(X, X[:, 0] * 1e3, epochs=20, batch_size=50, optimizer=hn.SGD(lr=10.0))


def test_default_threads_leave_room_on_big_machines(monkeypatch):
    import os
    from hetnet.devices import cpu
    monkeypatch.delenv("HETNET_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for cpus, expected in ((1, 1), (2, 2), (8, 8), (16, 14), (64, 62)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cpus: set(range(n)))
        assert cpu.default_num_threads() == expected
