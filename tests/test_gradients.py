"""Every layer's gradients against central finite differences of a float64
reference, on every device; forward outputs against the same reference."""

import numpy as np
import pytest

import hetnet as hn
from conftest import assert_close
from reference_layers import layer_forward, numeric_grad, cross_entropy

F32 = np.float32

LAYER_CASES = [
    # (id, factory, per-sample input shape, fused activation)
    ("dense", lambda: hn.Dense(6, 4), (6,), "identity"),
    ("dense-relu", lambda: hn.Dense(5, 7), (5,), "relu"),
    ("dense-tanh-glorot", lambda: hn.Dense(5, 3, init="glorot"), (5,), "tanh"),
    ("dense-sigmoid-nobias", lambda: hn.Dense(4, 3, bias=False, init="lecun"), (4,), "sigmoid"),
    ("conv-valid", lambda: hn.Conv2D(2, 3, 3), (2, 6, 6), "identity"),
    ("conv-pad1-relu", lambda: hn.Conv2D(1, 2, 3, padding=1), (1, 5, 5), "relu"),
    ("conv-same", lambda: hn.Conv2D(2, 2, (3, 5), padding="same"), (2, 5, 6), "identity"),
    ("conv-full", lambda: hn.Conv2D(1, 2, 3, padding="full"), (1, 4, 4), "tanh"),
    ("conv-stride2", lambda: hn.Conv2D(2, 3, 3, stride=2, padding=1), (2, 7, 7), "identity"),
    ("conv-stride-rect", lambda: hn.Conv2D(1, 2, (2, 3), stride=(2, 1), padding=(0, 1)), (1, 6, 5), "identity"),
    ("conv-1x1", lambda: hn.Conv2D(3, 2, 1), (3, 3, 3), "sigmoid"),
    ("maxpool2", lambda: hn.MaxPool2D(2), (2, 6, 6), None),
    ("maxpool3s2", lambda: hn.MaxPool2D(3, stride=2), (1, 7, 7), None),
    ("maxpool-rect", lambda: hn.MaxPool2D((2, 3)), (2, 4, 7), None),
    ("flatten", lambda: hn.Flatten(), (2, 3, 3), None),
    ("relu", lambda: hn.ReLU(), (3, 4), None),
    ("sigmoid", lambda: hn.Sigmoid(), (7,), None),
    ("tanh", lambda: hn.Tanh(), (2, 3, 3), None),
    ("softmax", lambda: hn.Softmax(), (6,), None),
]


@pytest.mark.parametrize("case", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_layer_gradients(device, rng, case):
    _, factory, in_shape, act = case
    layer = factory()
    layer.build(device, in_shape, rng)
    if act is not None:
        layer.activation = act
    n = 3
    x = rng.standard_normal((n,) + in_shape)
    params = {k: device.to_host(v).astype(np.float64) for k, v in layer.params.items()}
    y = device.to_host(layer.forward(device.asarray(x.astype(F32)), training=True))
    y_ref = layer_forward(layer, params, x)
    assert_close(y, y_ref, what="forward")
    dy = rng.standard_normal(y_ref.shape)
    dx = device.to_host(layer.backward(device.asarray(dy.astype(F32))))

    def objective():
        return float((layer_forward(layer, params, x) * dy).sum())

    assert_close(dx, numeric_grad(objective, x), rtol=1e-4, atol=1e-4, what="dx")
    for name in params:
        assert_close(device.to_host(layer.grads[name]), numeric_grad(objective, params[name]),
                     rtol=1e-4, atol=1e-4, what=f"d{name}")


@pytest.mark.parametrize("ws", [None, 1])
@pytest.mark.parametrize("act", ["identity", "relu"])
def test_conv_default_path_matches_device(device, rng, ws, act):
    """The device's conv2d (fused on the CPU) agrees with the interface's
    default im2col + GEMM path, with one chunk or one image per chunk."""
    from hetnet.devices.compose import Im2colConvolution
    x = rng.standard_normal((5, 2, 6, 6)).astype(F32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(F32)
    b = rng.standard_normal(3).astype(F32)
    dy = rng.standard_normal((5, 3, 6, 6)).astype(F32)
    args = ((1, 1), (1, 1))
    saved = device.workspace_bytes
    results = []
    try:
        if ws is not None:
            device.workspace_bytes = ws
            assert device.conv_chunk(5, (18, 36)) == 1
        for impl in (type(device), Im2colConvolution):
            xd, wd = device.asarray(x), device.asarray(w)
            y = impl.conv2d(device, xd, wd, device.asarray(b), *args, act)
            dw, db = device.zeros(w.shape), device.zeros(3)
            dx = impl.conv2d_backward(device, xd, wd, y, device.asarray(dy), *args, act, dw, db)
            results.append([device.to_host(a) for a in (y, dx, dw, db)])
    finally:
        device.workspace_bytes = saved
    for a, b_, what in zip(results[0], results[1], ("y", "dx", "dW", "db")):
        assert_close(a, b_, what=what)


def test_conv_reports_workspace():
    model = hn.models.lenet5(seed=0, input_shape=(1, 28, 28))
    conv1 = model.layers[0]
    # C*K*K*Ho*Wo / (C*H*W) = 25 * 784 / 784
    assert conv1.col_shape == (25, 784)
    assert conv1.expansion_ratio == pytest.approx(25.0)
    dev = conv1.device
    assert conv1.workspace_bytes(64) == dev.conv_workspace_bytes(64, (25, 784))
    # bounded: the workspace does not grow with the batch
    assert conv1.workspace_bytes(100000) == conv1.workspace_bytes(10000)
    assert conv1.workspace_bytes(100000) <= max(dev.workspace_bytes, 4 * 25 * 784 * 64)


def _ref_model_loss(model, weights, x, labels):
    i, h = 0, x
    for layer in model._steps:
        k = len(layer.params)
        h = layer_forward(layer, dict(zip(layer.params, weights[i:i + k])), h)
        i += k
    return cross_entropy(h, labels)


def test_model_gradients_with_fused_loss(device, rng):
    """A whole small CNN, fused activations and softmax+CE included."""
    model = hn.Sequential([hn.Conv2D(1, 2, 3, padding=1), hn.ReLU(), hn.MaxPool2D(2),
                           hn.Conv2D(2, 3, 3), hn.Tanh(), hn.Flatten(), hn.Dense(3, 4)],
                          device=device, seed=3)
    x = rng.standard_normal((4, 1, 6, 6))
    labels = np.array([0, 3, 1, 3])
    loss, grads = model.loss_and_gradients(x.astype(F32), labels)
    weights = [w.astype(np.float64) for w in model.get_weights()]
    assert loss == pytest.approx(_ref_model_loss(model, weights, x, labels), rel=1e-4)
    for w, g in zip(weights, grads):
        num = numeric_grad(lambda: _ref_model_loss(model, weights, x, labels), w)
        assert_close(g, num, rtol=1e-4, atol=1e-5, what="model grad")
