"""Property tests over the public API (hypothesis).

Malformed input gets only the documented exceptions (ValueError, TypeError,
or RuntimeError for an unbuilt model), never a crash, never a wrong answer
accepted silently; a valid input gets a valid answer.  Random small valid
networks give the same outputs on every device (numpy, cpu, opencl).
"""

import math

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import hetnet as hn  # noqa: E402

DOCUMENTED = (ValueError, TypeError)
FAST = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

_MODEL = {}


def model():
    if "m" not in _MODEL:
        m = hn.Sequential([hn.Conv2D(1, 2, 3, padding=1), hn.ReLU(), hn.MaxPool2D(2),
                           hn.Flatten(), hn.Dense(8, 3)], seed=0, device="cpu",
                          input_shape=(1, 4, 4))
        rng = np.random.default_rng(0)
        m.fit(rng.random((12, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, 12))
        _MODEL["m"] = m
    return _MODEL["m"]


numbers = st.one_of(st.integers(-10, 10 ** 6), st.floats(allow_nan=True, allow_infinity=True),
                    st.booleans(), st.none(), st.text(max_size=3), st.just([1, 2]))
dtypes = st.sampled_from([np.float32, np.float64, np.int32, np.uint8, np.bool_, np.complex64,
                          object, "U3"])
shapes = st.lists(st.integers(0, 5), min_size=0, max_size=5).map(tuple)


@st.composite
def arrays(draw):
    shape = draw(st.one_of(shapes, st.sampled_from([(6, 1, 4, 4), (6, 16), (1, 1, 4, 4)])))
    dtype = draw(dtypes)
    size = int(np.prod(shape)) if shape else 1
    if dtype in (object, "U3"):
        return np.array(["a"] * size, dtype=dtype).reshape(shape)
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    a = (rng.standard_normal(size) * draw(st.sampled_from([1.0, 1e3, 1e40]))).reshape(shape)
    if draw(st.booleans()) and size:
        a.reshape(-1)[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 0.0]))
    with np.errstate(all="ignore"):
        return a.astype(dtype)


def check_predictions(X, out, kind):
    """A valid answer for valid X: n rows, labels in range, probabilities."""
    n = X.shape[0]
    assert out.shape[0] == n
    if kind == "predict":
        assert out.dtype.kind == "i" and ((out >= 0) & (out < 3)).all()
    elif kind == "predict_proba":
        assert np.isfinite(out).all() and np.allclose(out.sum(axis=1), 1, atol=1e-5)
    else:
        assert np.isfinite(out).all()


@FAST
@given(X=st.one_of(arrays(), numbers), batch_size=st.one_of(st.just(256), numbers),
       kind=st.sampled_from(["predict", "predict_proba", "predict_logits"]))
def test_inference_on_malformed_input(X, batch_size, kind):
    m = model()
    try:
        out = getattr(m, kind)(X, batch_size=batch_size)
    except DOCUMENTED as exc:
        assert str(exc)
        return
    # accepted: then X must have been a finite array the model takes, and the answer valid
    Xa = np.asarray(X)
    assert Xa.shape[1:] in ((1, 4, 4), (16,)) and Xa.shape[0] > 0
    assert isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0
    with np.errstate(all="ignore"):
        assert np.isfinite(Xa.astype(np.float64)).all() and np.abs(Xa.astype(np.float64)).max(
            initial=0) < 3e38
    check_predictions(Xa, out, kind)


@FAST
@given(y=st.one_of(arrays(), numbers, st.lists(st.integers(-2, 4), min_size=0, max_size=8)),
       epochs=st.one_of(st.just(1), numbers), batch_size=st.one_of(st.just(4), numbers))
def test_fit_on_malformed_targets_and_counts(y, epochs, batch_size):
    m = hn.Sequential([hn.Flatten(), hn.Dense(16, 3)], seed=0, device="cpu",
                      input_shape=(1, 4, 4))
    X = np.random.default_rng(1).random((6, 1, 4, 4)).astype(np.float32)
    before = m.get_weights()
    try:
        m.fit(X, y, epochs=epochs, batch_size=batch_size)
    except DOCUMENTED as exc:
        assert str(exc)
        for a, b in zip(m.get_weights(), before):     # a refused fit trains nothing
            np.testing.assert_array_equal(a, b)
        return
    ya = np.asarray(y)
    assert ya.shape in ((6,), (6, 3)) and all(np.isfinite(w).all() for w in m.get_weights())
    if ya.ndim == 1:
        assert ((ya >= 0) & (ya < 3)).all() and (ya == np.round(ya)).all()


@FAST
@given(spoil=st.integers(0, 3), value=st.one_of(arrays(), numbers))
def test_set_weights_all_or_nothing(spoil, value):
    m = hn.Sequential([hn.Flatten(), hn.Dense(16, 3)], seed=0, device="cpu",
                      input_shape=(1, 4, 4))
    before = m.get_weights()
    new = [w + 1 for w in before][:2]
    new[spoil % 2] = value
    try:
        m.set_weights(new)
    except DOCUMENTED:
        for a, b in zip(m.get_weights(), before):
            np.testing.assert_array_equal(a, b)
        return
    v = np.asarray(value)
    assert v.shape == before[spoil % 2].shape and np.isfinite(v.astype(np.float64)).all()


@FAST
@given(args=st.tuples(numbers, numbers), which=st.sampled_from(["Dense", "Conv2D", "shape",
                                                               "SGD", "Adam", "RMSProp"]))
def test_constructors_refuse_bad_numbers(args, which):
    a, b = args
    try:
        if which == "Dense":
            layer = hn.Dense(a, b)
            assert layer.in_features >= 1 and layer.in_features == a
        elif which == "Conv2D":
            layer = hn.Conv2D(a, 2, b)
            assert layer.in_channels == a and min(layer.kernel_size) >= 1
        elif which == "shape":
            m = hn.Sequential([hn.Flatten(), hn.Dense(4, 2)], input_shape=(a, b))
            assert m.input_shape == (a, b)
        else:
            opt = getattr(hn, which)(lr=a, weight_decay=0.0 if b is None else b)
            assert math.isfinite(opt.lr) and opt.lr > 0 and math.isfinite(opt.weight_decay)
    except DOCUMENTED as exc:
        assert str(exc)


# ----------------------------------------------------------- devices agree
def _devices():
    from hetnet.devices.cpu import CPUDevice
    from hetnet.devices.reference import NumpyDevice
    devs = [("numpy", NumpyDevice()), ("cpu", CPUDevice(num_threads=2))]
    try:
        from conftest import make_device
        cl = make_device("opencl")
    except Exception:
        cl = None
    if cl is not None:
        devs.append(("opencl", cl))
    return devs


@st.composite
def networks(draw):
    c = draw(st.integers(1, 3))
    side = draw(st.sampled_from([4, 6, 8]))
    layers, shape = [], (c, side, side)
    if draw(st.booleans()):
        f, k = draw(st.integers(1, 4)), draw(st.sampled_from([1, 3]))
        layers += [hn.Conv2D(c, f, k, padding=k // 2),
                   draw(st.sampled_from([hn.ReLU, hn.Tanh, hn.Sigmoid]))()]
        shape = (f, side, side)
        if draw(st.booleans()):
            layers.append(hn.MaxPool2D(2))
            shape = (f, side // 2, side // 2)
    layers.append(hn.Flatten())
    width = int(np.prod(shape))
    for _ in range(draw(st.integers(0, 2))):
        h = draw(st.integers(1, 12))
        layers += [hn.Dense(width, h), draw(st.sampled_from([hn.ReLU, hn.Tanh]))()]
        width = h
    layers.append(hn.Dense(width, draw(st.integers(2, 5))))
    return layers, (c, side, side), draw(st.integers(0, 1000)), draw(st.integers(1, 9))


@settings(max_examples=12, deadline=None, derandomize=True)
@given(spec=networks())
def test_random_networks_agree_across_devices(spec):
    import copy
    layers, in_shape, seed, n = spec
    X = np.random.default_rng(seed).standard_normal((n, *in_shape)).astype(np.float32)
    outs = {}
    for name, dev in _devices():
        m = hn.Sequential(copy.deepcopy(layers), seed=seed, device=dev, input_shape=in_shape)
        outs[name] = m.predict_logits(X)
    ref = outs.pop("numpy")
    for name, out in outs.items():
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5, err_msg=name)
