"""BatchNorm, Dropout, the poolings and Residual as layers and in models:
gradients against finite differences (training and inference), weights and
state, save/load, training on every device, CPU and OpenCL agreeing."""

import numpy as np
import pytest

import hetnet as hn
from conftest import assert_close, make_device
from reference_layers import layer_forward, numeric_grad, cross_entropy

F32 = np.float32


def _bottleneck(c_in, c_mid, c_out, stride=1):
    """A bottleneck block as the zoo builds them: 1x1, 3x3, 1x1 with
    BatchNorm, a 1x1 conv shortcut where the shape changes."""
    branch = [hn.Conv2D(c_in, c_mid, 1, bias=False), hn.BatchNorm2D(c_mid), hn.ReLU(),
              hn.Conv2D(c_mid, c_mid, 3, stride=stride, padding=1, bias=False),
              hn.BatchNorm2D(c_mid), hn.ReLU(),
              hn.Conv2D(c_mid, c_out, 1, bias=False), hn.BatchNorm2D(c_out)]
    shortcut = None
    if stride != 1 or c_in != c_out:
        shortcut = [hn.Conv2D(c_in, c_out, 1, stride=stride, bias=False), hn.BatchNorm2D(c_out)]
    return hn.Residual(branch, shortcut)


LAYER_CASES = [
    # (id, factory, per-sample input shape, fused activation or None, modes)
    ("bn1d", lambda: hn.BatchNorm1D(4), (4,), "identity", (True, False)),
    ("bn1d-relu", lambda: hn.BatchNorm1D(3, momentum=0.3), (3,), "relu", (True, False)),
    ("bn2d", lambda: hn.BatchNorm2D(2), (2, 3, 4), "identity", (True, False)),
    ("bn2d-tanh", lambda: hn.BatchNorm2D(3, eps=1e-3), (3, 2, 3), "tanh", (True, False)),
    ("avgpool2", lambda: hn.AvgPool2D(2), (2, 6, 6), None, (True,)),
    ("avgpool3s2p1", lambda: hn.AvgPool2D(3, stride=2, padding=1), (1, 7, 6), None, (True,)),
    ("maxpool-pad1", lambda: hn.MaxPool2D(2, stride=2, padding=1), (2, 5, 5), None, (True,)),
    ("maxpool3-pad1", lambda: hn.MaxPool2D(3, stride=1, padding=1), (1, 4, 5), None, (True,)),
    ("globalavg", lambda: hn.GlobalAvgPool2D(), (3, 3, 4), None, (True,)),
    ("dropout", lambda: hn.Dropout(0.4), (3, 5), None, (True, False)),
    ("dropout0", lambda: hn.Dropout(0.0), (6,), None, (True,)),
    ("conv-nobias", lambda: hn.Conv2D(2, 3, 3, padding=1, bias=False), (2, 4, 4), "relu", (True,)),
    ("residual-identity", lambda: hn.Residual([hn.Conv2D(2, 2, 3, padding=1), hn.ReLU(),
                                               hn.Conv2D(2, 2, 3, padding=1)]),
     (2, 4, 4), "relu", (True,)),
    ("residual-dense-bn", lambda: hn.Residual([hn.Dense(3, 3), hn.BatchNorm1D(3), hn.Tanh(),
                                               hn.Dense(3, 3)]), (3,), "identity", (True, False)),
    ("bottleneck-projection", lambda: _bottleneck(2, 2, 3, stride=2), (2, 5, 5), "relu",
     (True, False)),
    ("bottleneck-identity", lambda: _bottleneck(3, 2, 3), (3, 3, 3), "relu", (True, False)),
    ("residual-nested", lambda: hn.Residual([_bottleneck(2, 1, 2), hn.Dropout(0.3)]),
     (2, 3, 3), "identity", (True, False)),
]


def _host_params(layer):
    return {k: layer.device.to_host(v).astype(np.float64) for k, v in layer.params.items()}


@pytest.mark.parametrize("case", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_layer_gradients(device, rng, case):
    _, factory, in_shape, act, modes = case
    for training in modes:
        layer = factory()
        layer.build(device, in_shape, np.random.default_rng(5))
        if act is not None:
            layer.activation = act
        if layer.state or isinstance(layer, hn.Residual):     # non-trivial running statistics
            st = dict(layer.state)
            for k, v in st.items():
                base = 0.7 if k.endswith("running_var") else 0.0
                st[k] = device.asarray(base + rng.random(v.shape).astype(F32))
            layer.state = st
        n = 4
        x = rng.standard_normal((n,) + in_shape) * 1.5 + 0.3
        params = _host_params(layer)
        y = device.to_host(layer.forward(device.asarray(x.astype(F32)), training=training))
        y_ref = layer_forward(layer, params, x, training)
        assert_close(y, y_ref, what=f"forward (training={training})")
        dy = rng.standard_normal(y_ref.shape)
        dx = device.to_host(layer.backward(device.asarray(dy.astype(F32))))

        def objective():
            return float((layer_forward(layer, params, x, training) * dy).sum())

        assert_close(dx, numeric_grad(objective, x), rtol=1e-4, atol=1e-4,
                     what=f"dx (training={training})")
        for name in params:
            assert_close(device.to_host(layer.grads[name]), numeric_grad(objective, params[name]),
                         rtol=1e-4, atol=1e-4, what=f"d{name} (training={training})")


def test_batchnorm_running_statistics_follow_pytorch(device, rng):
    layer = hn.BatchNorm2D(3, momentum=0.2)
    layer.build(device, (3, 4, 4), rng)
    x = (rng.standard_normal((5, 3, 4, 4)) * 2 + 1).astype(F32)
    layer.forward(device.asarray(x), training=True)
    x64 = x.astype(np.float64)
    rm = device.to_host(layer.state["running_mean"])
    rv = device.to_host(layer.state["running_var"])
    assert_close(rm, 0.2 * x64.mean(axis=(0, 2, 3)), what="running_mean")
    assert_close(rv, 0.8 + 0.2 * x64.var(axis=(0, 2, 3), ddof=1), what="running_var")
    layer.forward(device.asarray(x), training=False)       # inference leaves them
    np.testing.assert_array_equal(device.to_host(layer.state["running_mean"]), rm)


def test_batchnorm_refuses_one_value_per_feature_in_training():
    layer = hn.BatchNorm1D(3)
    dev = make_device("cpu")
    layer.build(dev, (3,), np.random.default_rng(0))
    with pytest.raises(ValueError, match="more than one value"):
        layer.forward(dev.asarray(np.ones((1, 3))), training=True)
    layer.forward(dev.asarray(np.ones((1, 3))), training=False)


@pytest.mark.parametrize("bad", [dict(num_features=0), dict(num_features=3, momentum=1.5),
                                 dict(num_features=3, eps=0)])
def test_batchnorm_bad_arguments(bad):
    with pytest.raises(ValueError):
        hn.BatchNorm1D(**bad)


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match="p must be in"):
        hn.Dropout(1.5)
    with pytest.raises(ValueError, match="padding"):
        hn.MaxPool2D(2, padding=2)
    with pytest.raises(ValueError, match="at least one layer"):
        hn.Residual([])
    with pytest.raises(TypeError, match="not a hetnet Layer"):
        hn.Residual([hn.ReLU(), "relu"])
    with pytest.raises(ValueError, match="shortcut"):
        hn.Sequential([hn.Residual([hn.Conv2D(1, 2, 3, padding=1)]), hn.Flatten(),
                       hn.Dense(32, 2)], device="numpy", input_shape=(1, 4, 4))
    with pytest.raises(ValueError, match="BatchNorm2D\\(2\\) expects"):
        hn.Sequential([hn.BatchNorm2D(2), hn.Flatten(), hn.Dense(9, 2)], device="numpy",
                      input_shape=(1, 3, 3))


# ------------------------------------------------------------------ models
def small_resnet(device="cpu", seed=0, dropout=0.2):
    return hn.Sequential([
        hn.Conv2D(1, 4, 3, padding=1, bias=False), hn.BatchNorm2D(4), hn.ReLU(),
        hn.MaxPool2D(2, stride=2, padding=1),
        _bottleneck(4, 2, 4), hn.ReLU(),
        _bottleneck(4, 2, 6, stride=2), hn.ReLU(),
        hn.GlobalAvgPool2D(), hn.BatchNorm1D(6), hn.Dropout(dropout), hn.Dense(6, 3)],
        device=device, seed=seed)


def lenet5_bn(device="cpu", seed=0):
    return hn.Sequential([
        hn.Conv2D(1, 6, 5, padding=2, bias=False), hn.BatchNorm2D(6), hn.ReLU(), hn.MaxPool2D(2),
        hn.Conv2D(6, 16, 5, bias=False), hn.BatchNorm2D(16), hn.ReLU(), hn.MaxPool2D(2),
        hn.Flatten(), hn.Dense(16, 12, bias=False), hn.BatchNorm1D(12), hn.ReLU(),
        hn.Dense(12, 10, bias=False), hn.BatchNorm1D(10), hn.ReLU(), hn.Dense(10, 3)],
        device=device, seed=seed)


def _data(n=48, size=12, seed=0):
    """Three classes of noisy images told apart by where a bright square is."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.standard_normal((n, 1, size, size)).astype(F32) * 0.5
    for i, c in enumerate(y):
        X[i, 0, 2 + 3 * c:5 + 3 * c, 2:6] += 2.0
    return X, y.astype(np.int64)


def _ref_model_loss(model, weights, x, labels, training):
    i, h = 0, x
    for layer in model._steps:
        k = len(layer.params)
        h = layer_forward(layer, dict(zip(layer.params, weights[i:i + k])), h, training)
        i += k
    return cross_entropy(h, labels)


def _randomise_batchnorm(model, rng):
    """Random betas and running statistics: with beta 0 and the running
    statistics at their start, a ReLU after an inference-mode BatchNorm sees
    exact zeros (a zero input pixel stays 0), a kink finite differences straddle."""
    for layer in model.layers:
        dev = layer.device
        if layer.state:
            layer.state = {k: dev.asarray((0.6 if k.endswith("var") else -0.3)
                                          + rng.random(v.shape).astype(F32))
                           for k, v in layer.state.items()}
            layer.params = {k: dev.asarray(dev.to_host(v) + (0.2 * rng.standard_normal(
                v.shape)).astype(F32) if k.endswith("beta") else dev.to_host(v))
                for k, v in layer.params.items()}


@pytest.mark.parametrize("training", [True, False])
def test_model_gradients(device, rng, training):
    model = small_resnet(device, seed=2, dropout=0.3)
    x = rng.standard_normal((5, 1, 5, 5)).astype(F32)
    labels = np.array([0, 2, 1, 2, 0])
    model.build(x.shape[1:])
    _randomise_batchnorm(model, rng)
    loss, grads = model.loss_and_gradients(x, labels, training=training)
    trained = [device.to_host(p).astype(np.float64) for p in model._param_arrays()]
    assert len(grads) == len(trained)
    x64 = x.astype(np.float64)
    assert loss == pytest.approx(_ref_model_loss(model, trained, x64, labels, training), rel=1e-4)
    for w, g in zip(trained, grads):
        num = numeric_grad(lambda: _ref_model_loss(model, trained, x64, labels, training), w)
        assert_close(g, num, rtol=1e-3, atol=1e-5, what=f"model grad (training={training})")


def test_weights_state_and_counts():
    model = small_resnet("numpy")
    model.build((1, 8, 8))
    w = model.get_weights()
    assert len(w) == sum(layer.n_weights for layer in model.layers)
    assert model.count_params() == sum(int(np.prod(p.shape)) for p in model._param_arrays())
    bn = model.layers[1]
    assert [a.shape for a in bn.get_weights()] == [(4,)] * 4
    np.testing.assert_array_equal(bn.get_weights()[3], np.ones(4))
    block = model.layers[4]
    assert list(block.params)[:2] == ["b0.W", "b1.gamma"]
    assert "b1.running_mean" in block.state
    # the block's weights: its branch's, then its shortcut's (none here), in order
    expected = [a for layer in block.branch for a in layer.get_weights()]
    for a, b in zip(block.get_weights(), expected):
        np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(0)
    new = [rng.random(a.shape).astype(F32) + 0.1 for a in w]
    model.set_weights(new)
    for a, b in zip(model.get_weights(), new):
        np.testing.assert_array_equal(a, b)
    # the block's view of its sub-layers' arrays is kept, and follows them
    assert block.params is block.params
    assert block.params["b0.W"] is block.branch[0].params["W"]
    assert block.state["b1.running_var"] is block.branch[1].state["running_var"]
    block.params["b0.W"] = block.device.asarray(np.zeros((2, 4, 1, 1), F32))
    np.testing.assert_array_equal(block.branch[0].get_weights()[0], 0)
    with pytest.raises(ValueError, match="needs"):
        model.set_weights(new[:-1])
    with pytest.raises(ValueError, match="running_var"):
        bn.set_weights([np.ones(4), np.zeros(4), np.zeros(4), -np.ones(4)])


def test_fusion_inside_and_after_residual():
    model = small_resnet("numpy")
    model.build((1, 8, 8))
    kinds = [type(s).__name__ + "+" + getattr(s, "activation", "") for s in model._steps]
    assert kinds[:4] == ["Conv2D+identity", "BatchNorm2D+relu", "MaxPool2D+", "Residual+relu"]
    block = model.layers[4]
    assert [type(s).__name__ for s in block._branch_steps] == [
        "Conv2D", "BatchNorm2D", "Conv2D", "BatchNorm2D", "Conv2D", "BatchNorm2D"]
    assert [s.activation for s in block._branch_steps] == [
        "identity", "relu", "identity", "relu", "identity", "identity"]
    text = model.summary()
    assert "Residual(identity shortcut) (+relu" in text and "Residual(projection shortcut)" in text
    assert "\n  Conv2D(in_channels=4, out_channels=2" in text
    fwd, bwd, upd = block.cost_terms(16)
    assert len(upd) == len(block.params)
    assert any(t[0] == "conv2d" for t in fwd) and any(t[0] == "reduce" for t in bwd)


def test_training_mode_only_in_fit():
    model = small_resnet("cpu", seed=1)
    X, y = _data(24, size=8)
    model.build(X.shape[1:])
    bn = model.layers[1]
    before = bn.get_weights()[2:]
    model.predict(X)
    model.evaluate(X, y)
    model.predict_proba(X)
    for a, b in zip(bn.get_weights()[2:], before):
        np.testing.assert_array_equal(a, b)
    p1 = model.predict_logits(X)
    np.testing.assert_array_equal(model.predict_logits(X), p1)   # dropout off, stats fixed
    drop = model.layers[10]
    passes = drop.passes
    model.explain(batch_size=8, repeats=1)                        # timed steps train copies
    for a, b in zip(bn.get_weights()[2:], before):
        np.testing.assert_array_equal(a, b)
    assert drop.passes == passes                                  # and draw no masks for good
    model.fit(X, y, epochs=1, batch_size=8)
    assert not np.array_equal(bn.get_weights()[2], before[0])


@pytest.mark.parametrize("devname", ["numpy", "cpu", "opencl"])
@pytest.mark.parametrize("net", ["lenet5_bn", "resnet"])
def test_small_nets_train(devname, net):
    dev = "numpy" if devname == "numpy" else make_device(devname)
    X, y = _data(48, size=12)
    model = (lenet5_bn if net == "lenet5_bn" else small_resnet)(dev, seed=0)
    hist = model.fit(X, y, epochs=6, batch_size=16, optimizer=hn.Adam(lr=0.01))
    assert hist["loss"][-1] < 0.6 * hist["loss"][0], hist["loss"]
    assert model.evaluate(X, y)["accuracy"] > 0.6


def test_cpu_and_opencl_agree_after_training():
    cpu, ocl = make_device("cpu"), make_device("opencl")
    X, y = _data(40, size=10)
    models = []
    for dev in (cpu, ocl):
        m = small_resnet(dev, seed=3)
        m.fit(X, y, epochs=1, batch_size=20, optimizer=hn.SGD(lr=0.05, momentum=0.9),
              shuffle=False)
        models.append(m)
    for a, b in zip(*(m.get_weights() for m in models)):
        assert_close(a, b, rtol=1e-4, atol=1e-5, what="weights and running statistics")
    # the same weights: inference agrees to float32 rounding
    models[1].set_weights(models[0].get_weights())
    assert_close(models[1].predict_logits(X), models[0].predict_logits(X), rtol=1e-4,
                 what="inference logits")
    # and a model trained longer on the CPU predicts the same on OpenCL
    X, y = _data(40, size=12)
    cpu_model = lenet5_bn(cpu, seed=1)
    cpu_model.fit(X, y, epochs=3, batch_size=10, optimizer=hn.Adam(lr=0.01))
    ocl_model = lenet5_bn(ocl, seed=1)
    ocl_model.build(X.shape[1:])
    ocl_model.set_weights(cpu_model.get_weights())
    assert_close(ocl_model.predict_logits(X), cpu_model.predict_logits(X), rtol=1e-4,
                 what="LeNet-5-BN logits")
    np.testing.assert_array_equal(ocl_model.predict(X), cpu_model.predict(X))


def test_save_load_round_trip_keeps_running_statistics(tmp_path):
    X, y = _data(32, size=8)
    model = small_resnet("cpu", seed=4)
    model.fit(X, y, epochs=2, batch_size=8)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = hn.load(path, device="cpu")
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert isinstance(loaded.layers[4], hn.Residual)
    assert loaded.layers[6].shortcut is not None
    assert loaded.layers[3].padding == (1, 1)
    np.testing.assert_array_equal(loaded.predict_logits(X), model.predict_logits(X))
    assert loaded.count_params() == model.count_params()


def test_dropout_is_seeded_and_reproducible():
    X, y = _data(24, size=8)
    runs = []
    for _ in range(2):
        m = hn.Sequential([hn.Flatten(), hn.Dense(64, 16), hn.ReLU(), hn.Dropout(0.5),
                           hn.Dense(16, 3)], device="cpu", seed=7)
        m.fit(X, y, epochs=2, batch_size=8)
        runs.append(m.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    other = hn.Sequential([hn.Flatten(), hn.Dense(64, 16), hn.ReLU(), hn.Dropout(0.5),
                           hn.Dense(16, 3)], device="cpu", seed=8)
    other.build(X.shape[1:])
    assert other.layers[3].seed != m.layers[3].seed


def test_residual_moves_between_devices_with_its_state():
    cpu, ocl = make_device("cpu"), make_device("opencl")
    X, y = _data(16, size=8)
    model = small_resnet(cpu, seed=5)
    model.fit(X, y, epochs=1, batch_size=8, optimizer=hn.SGD(lr=0.01, momentum=0.9))
    before = model.get_weights()
    ref = model.predict_logits(X)
    model.runtime.place([ocl] * len(model._steps))
    assert all(s.device is ocl for s in model._steps)
    assert all(layer.device is ocl for layer in model.layers[4].branch)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert_close(model.predict_logits(X), ref, what="logits after the move")
    model.fit(X, y, epochs=1, batch_size=8)       # optimizer state moved too


def test_mixed_placement_map_with_residual():
    cpu, ocl = make_device("cpu"), make_device("opencl")
    layers = small_resnet("numpy").layers
    devs = [cpu if i % 2 else ocl for i in range(len(layers))]
    model = hn.Sequential(layers, device=devs, seed=0)
    X, y = _data(16, size=8)
    hist = model.fit(X, y, epochs=2, batch_size=8)
    assert np.isfinite(hist["loss"]).all()
    assert model.layers[4].device is devs[4]


def test_auto_plans_residual_blocks_as_one_node(monkeypatch):
    """'auto' with a (fake) GPU plans a model of the new layers: a residual
    block is one step of the chain, and a mixed plan trains as the CPU does."""
    from test_placement import _auto_with_fake_gpu
    from hetnet.devices.cpu import CPUDevice
    _auto_with_fake_gpu(monkeypatch)
    X, y = _data(1100, size=12)
    auto = small_resnet("auto", seed=3)
    cpu = small_resnet(CPUDevice(num_threads=2), seed=3)
    for m in (auto, cpu):
        m.fit(X, y, epochs=1, batch_size=1024, optimizer=hn.SGD(0.05, momentum=0.9))
    plan = auto.plan(1024)
    assert len(plan.devices) == len(auto._steps)
    assert [s.name for s in plan.steps][4] == "Residual+relu"
    assert len({d.name for d in plan.devices}) == 2            # mixed (the fake GPU pools slowly)
    for step, dev in zip(auto._steps, plan.devices):
        if isinstance(step, hn.Residual):
            assert all(layer.device is step.device for layer in step.branch)
    # two momentum steps through BatchNorm amplify the rounding of the devices' sums (in
    # another order on each) to ~2e-4 of a weight on CPUs without AVX-512 (an AMD EPYC VM,
    # 2026-12-06), hence 1e-3. The running means are small differences of O(1) activations:
    # compared to those (atol).
    for a, b in zip(auto.get_weights(), cpu.get_weights()):
        assert_close(a, b, rtol=1e-3, atol=1e-4, what="auto vs cpu weights and running statistics")
    text = str(auto.explain(batch_size=8, repeats=1))
    assert "Residual" in text and "BatchNorm2D" in text


def test_padded_maxpool_geometry_is_measured():
    from hetnet.sched.costmodel import measure_geometry
    layer = hn.MaxPool2D(3, stride=2, padding=1)
    dev = make_device("cpu")
    layer.build(dev, (2, 7, 7), np.random.default_rng(0))
    (fwd,), (bwd,), _ = layer.cost_terms(4)
    geom = fwd[2]
    assert geom[-1] == (1, 1)
    times = measure_geometry(dev, geom, batches=(1, 4))
    assert len(times) == 2 and all(len(v) == 2 and min(t for _, t in v) > 0
                                   for v in times.values())
    unpadded = hn.MaxPool2D(2)
    unpadded.build(dev, (2, 6, 6), np.random.default_rng(0))
    assert len(unpadded.cost_terms(4)[0][0][2]) == 4          # the geometry cached before padding
