"""What a careless or hostile user meets: a right answer or a clear error.

Each test here failed before the fix it covers (issue 23)."""

import copy
import os
import threading

import numpy as np
import pytest

import hetnet as hn
from hetnet import callbacks as cbs
from hetnet.model.guard import ConcurrentUseError


def conv_model(seed=0, device="cpu"):
    return hn.Sequential([hn.Conv2D(1, 2, 3, padding=1), hn.ReLU(), hn.MaxPool2D(2),
                          hn.Flatten(), hn.Dense(8, 3)], seed=seed, device=device,
                         input_shape=(1, 4, 4))


def data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, n)


# ------------------------------------------------------------ batch_size
@pytest.mark.parametrize("bs", [-1, 0, 2.5, True, "8"])
@pytest.mark.parametrize("method", ["predict", "predict_proba", "predict_logits", "evaluate"])
@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_inference_batch_size_checked(method, bs, device):
    model = conv_model(device=device)
    X, y = data()
    args = (X, y) if method == "evaluate" else (X,)
    with pytest.raises(ValueError, match="batch_size"):
        getattr(model, method)(*args, batch_size=bs)


def test_explain_repeats_checked():
    with pytest.raises(ValueError, match="repeats"):
        conv_model().explain(4, repeats=0)


# ------------------------------------------------------------ threads
def test_separate_models_in_threads_agree_with_serial():
    X, _ = data(64)
    models = [conv_model(seed=s) for s in range(4)]
    serial = [m.predict_logits(X, batch_size=16) for m in models]
    results = [[] for _ in models]

    def run(i):
        for _ in range(5):
            results[i].append(models[i].predict_logits(X, batch_size=16))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ref, got in zip(serial, results):
        assert len(got) == 5
        for g in got:
            np.testing.assert_array_equal(g, ref)


def test_concurrent_use_of_one_model_is_refused():
    model = conv_model()
    X, y = data()
    started, release = threading.Event(), threading.Event()

    class Hold(cbs.Callback):
        def on_epoch_end(self, m, epoch, logs):
            started.set()
            release.wait(10)

    t = threading.Thread(target=model.fit, args=(X, y), kwargs={"callbacks": [Hold()]})
    t.start()
    try:
        assert started.wait(10)
        with pytest.raises(ConcurrentUseError, match="another thread"):
            model.predict(X)
        with pytest.raises(ConcurrentUseError):
            model.fit(X, y)
    finally:
        release.set()
        t.join()
    model.predict(X)        # free again


def test_reentry_from_a_callback_is_allowed():
    model = conv_model()
    X, y = data()
    seen = []

    class Evaluate(cbs.Callback):
        def on_epoch_end(self, m, epoch, logs):
            seen.append(m.evaluate(X, y)["loss"])

    model.fit(X, y, epochs=2, callbacks=[Evaluate()])
    assert len(seen) == 2


# ------------------------------------------------------------ divergence
@pytest.mark.parametrize("make", [
    lambda: hn.SGD(lr=float("inf")),
    lambda: hn.SGD(lr=float("nan")),
    lambda: hn.SGD(lr=-1),
    lambda: hn.SGD(weight_decay=float("inf")),
    lambda: hn.Adam(eps=float("inf")),
    lambda: hn.Adam(lr=float("inf")),
    lambda: hn.RMSProp(alpha=float("nan")),
    lambda: hn.SGD(momentum=float("nan")),
    lambda: hn.SGD(clip_norm=float("inf")),
])
def test_bad_hyper_parameters_refused(make):
    with pytest.raises(ValueError, match="must be"):
        make()


@pytest.mark.parametrize("attr,value", [("lr", float("nan")), ("lr", -1.0),
                                        ("lr", float("inf")), ("weight_decay", float("inf")),
                                        ("momentum", 1.5)])
def test_hyper_parameter_setters_checked(attr, value):
    opt = hn.SGD(lr=0.1, momentum=0.5)
    with pytest.raises(ValueError, match=attr):
        setattr(opt, attr, value)
    assert getattr(opt, attr) in (0.1, 0.5, 0.0)


@pytest.mark.parametrize("value", [float("nan"), -1.0, float("inf")])
def test_schedule_value_checked(value):
    model = conv_model()
    X, y = data()
    with pytest.raises(ValueError, match="lr_schedule"):
        model.fit(X, y, lr_schedule=lambda step, total: value)


def test_huge_scheduled_lr_diverges_with_a_clear_error():
    model = conv_model()
    X, y = data()
    with pytest.raises(FloatingPointError, match="learning rate is 1e\\+30"):
        model.fit(X, y, epochs=2, lr_schedule=lambda step, total: 1e30)


def test_optimizer_repr():
    assert repr(hn.SGD(lr=0.5)).startswith("SGD(lr=0.5, momentum=0.0")
    assert "eps=1e-08" in repr(hn.Adam())


def test_float32_overflow_named():
    model = conv_model()
    X, y = data()
    X = X.astype(np.float64)
    X[0, 0, 0, 0] = 1e39
    with pytest.raises(ValueError, match="float32's range"):
        model.fit(X, y)


# ------------------------------------------------------------ set_weights
@pytest.mark.parametrize("spoil", ["nan", "inf", "none", "shape", "text"])
def test_set_weights_all_or_nothing(spoil):
    model = conv_model()
    before = model.get_weights()
    new = [w + 1 for w in before]
    last = new[-1]
    new[-1] = {"nan": np.full_like(last, np.nan), "inf": np.full_like(last, np.inf),
               "none": None, "shape": last[:-1], "text": np.array(["a"] * last.size)}[spoil]
    with pytest.raises((ValueError, TypeError)):
        model.set_weights(new)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------ layer reuse
def test_layer_of_a_built_model_refused_in_another():
    first = conv_model()
    X, y = data()
    first.fit(X, y)
    trained = first.get_weights()
    with pytest.raises(ValueError, match="already belongs to a built model"):
        hn.Sequential(first.layers, input_shape=(1, 4, 4))
    for a, b in zip(first.get_weights(), trained):
        np.testing.assert_array_equal(a, b)
    # a deep copy is independent
    second = hn.Sequential(copy.deepcopy(first.layers))
    second.build((1, 4, 4))


def test_unbuilt_layers_shared_then_built_twice_refused():
    layers = [hn.Flatten(), hn.Dense(16, 3)]
    a = hn.Sequential(layers)
    b = hn.Sequential(layers)
    a.build((1, 4, 4))
    with pytest.raises(ValueError, match="already belongs"):
        b.build((1, 4, 4))


# ------------------------------------------------------------ shapes, dtypes
@pytest.mark.parametrize("shape", [(4.7,), (0,), (-3,), (True,), (), "abc"])
def test_bad_input_shape(shape):
    with pytest.raises((ValueError, TypeError), match="input_shape"):
        hn.Sequential([hn.Dense(4, 2)], input_shape=shape)


def test_uint8_images_scaled_as_the_cli_does():
    rng = np.random.default_rng(1)
    X8 = rng.integers(0, 256, (12, 1, 4, 4)).astype(np.uint8)
    y = rng.integers(0, 3, 12)
    a, b = conv_model(), conv_model()
    a.fit(X8, y, epochs=2)
    b.fit(X8.astype(np.float32) / 255.0, y, epochs=2)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    np.testing.assert_array_equal(a.predict_logits(X8), b.predict_logits(X8 / np.float32(255)))


# ------------------------------------------------------------ loss value
@pytest.mark.parametrize("name", ["numpy", "cpu", "cpu1", "opencl"])
def test_cross_entropy_of_large_logits(name):
    from conftest import make_device
    from hetnet.devices.reference import NumpyDevice
    dev = NumpyDevice() if name == "numpy" else make_device(name)
    if dev is None:
        pytest.skip("no OpenCL device")
    z = dev.asarray(np.array([[1e8] * 3, [3e7, 3e7, -3e7]], np.float32))
    labels = dev.asarray(np.array([0, 1], np.int32), np.int32)
    loss, _ = dev.softmax_cross_entropy(z, labels)
    assert float(dev.to_host(loss)[0]) == pytest.approx((np.log(3) + np.log(2)) / 2, rel=1e-5)


# ------------------------------------------------------------ saving
def test_save_is_atomic(tmp_path, monkeypatch):
    model = conv_model()
    path = tmp_path / "m.npz"
    model.save(path)
    good = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="No space"):
        conv_model(seed=1).save(path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["m.npz"]      # no temporary left behind


def test_save_keeps_usual_permissions(tmp_path):
    path = tmp_path / "m.npz"
    conv_model().save(path)
    umask = os.umask(0)
    os.umask(umask)
    assert (os.stat(path).st_mode & 0o777) == (0o666 & ~umask)


@pytest.mark.parametrize("name", ["numpy", "cpu", "opencl"])
def test_nan_weights_detected_at_epoch_end(name):
    from conftest import make_device
    from hetnet.devices.reference import NumpyDevice
    dev = NumpyDevice() if name == "numpy" else make_device(name)
    if dev is None:
        pytest.skip("no OpenCL device")
    model = hn.Sequential([hn.Flatten(), hn.Dense(16, 3)], seed=0, device=dev,
                          input_shape=(1, 4, 4))
    X, y = data()
    model.fit(X, y)                       # healthy: no error, finite loss
    assert np.isfinite(model.history["loss"][-1])

    class Spoil(cbs.Callback):            # a weight turns NaN mid-epoch, the loss stays finite
        def on_batch_end(self, m, batch):
            dense = m.layers[1]
            key = next(iter(dense.params))
            bad = np.full(tuple(dense.params[key].shape), np.nan, np.float32)
            dense.params[key] = dev.asarray(bad)

    with pytest.raises(FloatingPointError, match="weight arrays hold NaN"):
        model.fit(X, y, batch_size=12, callbacks=[Spoil()])


# ------------------------------------------------------------ device operations
@pytest.mark.parametrize("name", ["numpy", "cpu", "opencl"])
def test_device_ops_check_shapes(name):
    from conftest import make_device
    from hetnet.devices.reference import NumpyDevice
    dev = NumpyDevice() if name == "numpy" else make_device(name)
    if dev is None:
        pytest.skip("no OpenCL device")
    a, b = dev.asarray(np.ones((3, 4), np.float32)), dev.asarray(np.ones((5, 2), np.float32))
    with pytest.raises(ValueError):
        dev.gemm(a, b)
    w, g = dev.zeros((10,)), dev.zeros((4,))
    with pytest.raises(ValueError):
        dev.sgd_update(w, g, None, 0.1)
    with pytest.raises(ValueError):
        dev.adam_update(w, dev.zeros((10,)), dev.zeros((3,)), dev.zeros((10,)), 0.1, 0.9,
                        0.999, 1e-8, 1)


@pytest.mark.parametrize("value", [10 ** 6, -5, 16])
def test_cpu_maxpool_backward_out_of_range_argmax(value):
    from hetnet.devices.cpu import CPUDevice
    dev = CPUDevice(num_threads=2)
    dy = np.ones((2, 3, 2, 2), np.float32)
    am = np.zeros((2, 3, 2, 2), np.int32)
    am[1, 2, 1, 1] = value             # 16 = H*W: one past the plane
    with pytest.raises(IndexError, match="arg-max"):
        dev.maxpool2d_backward(dy, am, (2, 3, 4, 4))
    with pytest.raises(ValueError):
        dev.maxpool2d_backward(dy, am[:1], (2, 3, 4, 4))


# ------------------------------------------------------------ IDX bombs
def test_idx_gzip_inflated_no_further_than_its_header(tmp_path):
    import gzip
    from hetnet.datasets import read_idx
    from hetnet.datasets.idx import write_idx
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    good = tmp_path / "ok-idx3-ubyte.gz"
    write_idx(good, images, compress=True)
    np.testing.assert_array_equal(read_idx(good), images)
    header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (2, 3, 4))
    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    bomb.write_bytes(gzip.compress(header + bytes(50 << 20)))     # 50 MB of zeros, ~50 kB file
    import tracemalloc
    tracemalloc.start()
    with pytest.raises(Exception, match="more than the 40 bytes"):
        read_idx(bomb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20
    short = tmp_path / "short-idx3-ubyte.gz"
    short.write_bytes(gzip.compress(header + bytes(10)))
    with pytest.raises(Exception, match="size|bytes"):
        read_idx(short)


# ------------------------------------------------------------ others
def test_calibrate_unknown_device():
    with pytest.raises(ValueError, match="tpu"):
        hn.calibrate("tpu")


@pytest.mark.parametrize("seed", [-1, 1.5, "7", True])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        hn.Sequential([hn.Dense(4, 2)], seed=seed)


@pytest.mark.parametrize("make", [lambda: hn.Conv2D(float("nan"), 2, 3),
                                  lambda: hn.Conv2D(1, 2, 2.5),
                                  lambda: hn.Conv2D(1, 2, 3, stride=(1, 1.5)),
                                  lambda: hn.Dense(float("inf"), 3),
                                  lambda: hn.Dense(4, 2.5),
                                  lambda: hn.Dense("4", 2),
                                  lambda: hn.BatchNorm1D(float("nan"))])
def test_bad_layer_sizes(make):
    with pytest.raises(ValueError, match="must be"):
        make()


def test_validation_data_iterator_refused():
    model = conv_model()
    X, y = data()
    with pytest.raises(ValueError, match="validation_data must be a pair"):
        model.fit(X, y, validation_data=iter([X, y]))


def test_garbage_hetnet_gpu_refused(monkeypatch):
    from hetnet import devices
    monkeypatch.setenv("HETNET_GPU", "garbage")
    with pytest.raises(ValueError, match="HETNET_GPU"):
        devices.gpu_device()
    with pytest.raises(ValueError, match="HETNET_GPU"):
        hn.Sequential([hn.Dense(4, 2)], device="auto")


def test_repr_of_a_model():
    r = repr(conv_model())
    assert r.startswith("Sequential([Conv2D(") and "device='cpu'" in r and "(1, 4, 4)" in r


# ------------------------------------------------------------ verbosity
def test_verbose_2_one_line_per_epoch(capsys):
    model = conv_model()
    X, y = data()
    model.fit(X, y, epochs=3, verbose=2, validation_data=(X, y))
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch 1/3 - loss ") and "val_loss" in lines[0]
    assert "\r" not in out + err


def test_progress_bar_compact_off_a_terminal(capsys):
    model = conv_model()
    X, y = data(400)
    model.fit(X, y, epochs=2, batch_size=4, verbose=1)
    err = capsys.readouterr().err
    assert len(err) < 1000 and err.count("\r") <= 8


@pytest.mark.parametrize("v", [3, -1, 1.0, "1"])
def test_bad_verbose(v):
    model = conv_model()
    X, y = data()
    with pytest.raises(ValueError, match="verbose"):
        model.fit(X, y, verbose=v)


def test_zoo_models_report_before_fit():
    for m in (hn.models.lenet5(device="cpu"), hn.models.mlp([784, 16, 10], device="cpu"),
              hn.models.convnet(device="cpu")):
        assert "total parameters" in m.summary()
    assert hn.models.lenet5(device="cpu").explain(2, repeats=1).steps


# ------------------------------------------------------------ per-class metrics
def test_confusion_matrix_and_per_class_accuracy_in_evaluate():
    model = conv_model()
    X, y = data(30)
    model.fit(X, y, epochs=2)
    r = model.evaluate(X, y, metrics=("accuracy", "confusion_matrix", "per_class_accuracy"))
    pred = model.predict(X)
    expect = np.zeros((3, 3), np.int64)
    for t, p in zip(y, pred):
        expect[t, p] += 1
    np.testing.assert_array_equal(r["confusion_matrix"], expect)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(r["per_class_accuracy"], np.diag(expect) / expect.sum(1))
    assert r["accuracy"] == pytest.approx(np.trace(expect) / len(y))
    from hetnet.metrics import confusion_matrix
    np.testing.assert_array_equal(confusion_matrix([0, 1, 1], [1, 1, 1], n_classes=3),
                                  [[0, 1, 0], [0, 2, 0], [0, 0, 0]])


def test_two_models_on_one_opencl_device_from_two_threads_refused():
    from conftest import make_device
    dev = make_device("opencl")
    if dev is None:
        pytest.skip("no OpenCL device")
    a, b = conv_model(device=dev), conv_model(seed=1, device=dev)
    X, y = data()
    a.predict(X), b.predict(X)                 # placed: both run on the device
    started, release = threading.Event(), threading.Event()

    class Hold(cbs.Callback):
        def on_epoch_end(self, m, epoch, logs):
            started.set()
            release.wait(10)

    t = threading.Thread(target=a.fit, args=(X, y), kwargs={"callbacks": [Hold()]})
    t.start()
    try:
        assert started.wait(10)
        with pytest.raises(ConcurrentUseError, match="OpenCL"):
            b.predict(X)
    finally:
        release.set()
        t.join()
    np.testing.assert_array_equal(b.predict(X), b.predict(X))
