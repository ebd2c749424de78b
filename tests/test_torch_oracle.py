"""The new layers against PyTorch, forward and gradients (skipped without torch).

BatchNorm in both modes with its running statistics, a residual bottleneck
block, average and max pooling with padding, global average pooling,
dropout where it is deterministic (p = 0, inference) and a convolution
without bias, on every device.
"""

import numpy as np
import pytest

import hetnet as hn
from conftest import assert_close

torch = pytest.importorskip("torch")
F32 = np.float32


def _t(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def _run(layer, device, x, dy, training=True):
    """Forward and backward of a built hetnet layer: (y, dx, {param: grad})."""
    y = device.to_host(layer.forward(device.asarray(x), training=training))
    dx = device.to_host(layer.backward(device.asarray(dy)))
    grads = {k: device.to_host(v) for k, v in layer.grads.items()}
    return y, dx, grads


def _torch_run(module, x, dy):
    xt = _t(x, grad=True)
    y = module(xt)
    y.backward(_t(dy))
    return y.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("kind,shape", [("1d", (7, 5)), ("2d", (4, 3, 5, 6))])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm(device, rng, kind, shape, training):
    c = shape[1]
    layer = hn.BatchNorm1D(c, momentum=0.3) if kind == "1d" else hn.BatchNorm2D(c, momentum=0.3)
    layer.build(device, shape[1:], rng)
    gamma, beta = rng.random(c) + 0.5, rng.standard_normal(c)
    rm, rv = rng.standard_normal(c), rng.random(c) + 0.5
    layer.set_weights([a.astype(F32) for a in (gamma, beta, rm, rv)])
    x = (rng.standard_normal(shape) * 2 + 1).astype(F32)
    dy = rng.standard_normal(shape).astype(F32)
    y, dx, grads = _run(layer, device, x, dy, training)

    bn = (torch.nn.BatchNorm1d if kind == "1d" else torch.nn.BatchNorm2d)(
        c, momentum=0.3, eps=1e-5).double()
    with torch.no_grad():
        for p, v in ((bn.weight, gamma), (bn.bias, beta), (bn.running_mean, rm),
                     (bn.running_var, rv)):
            p.copy_(_t(v.astype(F32)))
    bn.train(training)
    y_t, dx_t = _torch_run(bn, x, dy)
    assert_close(y, y_t, what="y")
    assert_close(dx, dx_t, what="dx")
    assert_close(grads["gamma"], bn.weight.grad.numpy(), what="dgamma")
    assert_close(grads["beta"], bn.bias.grad.numpy(), what="dbeta")
    w = layer.get_weights()
    assert_close(w[2], bn.running_mean.numpy(), what="running_mean")
    assert_close(w[3], bn.running_var.numpy(), what="running_var")


def _bottleneck_pair(rng, device, c_in, c_mid, c_out, stride):
    branch = [hn.Conv2D(c_in, c_mid, 1, bias=False), hn.BatchNorm2D(c_mid), hn.ReLU(),
              hn.Conv2D(c_mid, c_mid, 3, stride=stride, padding=1, bias=False),
              hn.BatchNorm2D(c_mid), hn.ReLU(),
              hn.Conv2D(c_mid, c_out, 1, bias=False), hn.BatchNorm2D(c_out)]
    shortcut = [hn.Conv2D(c_in, c_out, 1, stride=stride, bias=False), hn.BatchNorm2D(c_out)]
    block = hn.Residual(branch, shortcut)
    model = hn.Sequential([block, hn.ReLU(), hn.GlobalAvgPool2D()], device=device, seed=0,
                          input_shape=(c_in, 7, 7))

    nn = torch.nn
    t_branch = nn.Sequential(
        nn.Conv2d(c_in, c_mid, 1, bias=False), nn.BatchNorm2d(c_mid), nn.ReLU(),
        nn.Conv2d(c_mid, c_mid, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_mid),
        nn.ReLU(), nn.Conv2d(c_mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out)).double()
    t_short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                            nn.BatchNorm2d(c_out)).double()
    # the same weights in both, BatchNorm's randomised
    t_params = []
    for seq, layers in ((t_branch, branch), (t_short, shortcut)):
        mods = [m for m in seq if not isinstance(m, nn.ReLU)]
        hl = [la for la in layers if not isinstance(la, hn.ReLU)]
        for m, la in zip(mods, hl):
            if isinstance(la, hn.BatchNorm2D):
                c = la.num_features
                vals = [rng.random(c) + 0.5, rng.standard_normal(c) * 0.1,
                        rng.standard_normal(c) * 0.1, rng.random(c) + 0.5]
                vals = [v.astype(F32) for v in vals]
                la.set_weights(vals)
                with torch.no_grad():
                    for p, v in zip((m.weight, m.bias, m.running_mean, m.running_var), vals):
                        p.copy_(_t(v))
                t_params += [(la, "gamma", m.weight), (la, "beta", m.bias)]
            else:
                with torch.no_grad():
                    m.weight.copy_(_t(la.get_weights()[0]))
                t_params.append((la, "W", m.weight))
    return model, block, t_branch, t_short, t_params


@pytest.mark.parametrize("training", [True, False])
def test_residual_bottleneck(device, rng, training):
    model, block, t_branch, t_short, t_params = _bottleneck_pair(rng, device, 3, 2, 4, 2)
    x = rng.standard_normal((3, 3, 7, 7)).astype(F32)
    dy = rng.standard_normal((3, 4)).astype(F32)
    y = model._forward(device.asarray(x), training)
    dx = model._steps[0].backward(model._steps[1].backward(device.asarray(dy)))

    t_branch.train(training)
    t_short.train(training)
    xt = _t(x, grad=True)
    yt = torch.relu(t_branch(xt) + t_short(xt)).mean(dim=(2, 3))
    yt.backward(_t(dy))
    assert_close(device.to_host(y), yt.detach().numpy(), what="y")
    assert_close(device.to_host(dx), xt.grad.numpy(), what="dx")
    for layer, name, p in t_params:
        assert_close(device.to_host(layer.grads[name]), p.grad.numpy(), what=f"d{name}")
    bn = block.branch[1]
    assert_close(bn.get_weights()[2], t_branch[1].running_mean.numpy(), what="running_mean")
    assert_close(bn.get_weights()[3], t_branch[1].running_var.numpy(), what="running_var")


POOLS = [("avg", 2, 2, 1), ("avg", 3, 2, 1), ("avg", 3, 1, 0), ("max", 2, 2, 1),
         ("max", 3, 2, 1), ("max", 3, 1, 1), ("max", 2, 1, 0)]


@pytest.mark.parametrize("how,k,s,p", POOLS)
def test_pooling(device, rng, how, k, s, p):
    shape = (2, 3, 7, 6)
    cls = hn.AvgPool2D if how == "avg" else hn.MaxPool2D
    layer = cls(k, stride=s, padding=p)
    layer.build(device, shape[1:], rng)
    x = rng.standard_normal(shape).astype(F32)
    dy = rng.standard_normal((2,) + layer.output_shape).astype(F32)
    y, dx, _ = _run(layer, device, x, dy)
    module = (torch.nn.AvgPool2d(k, s, p, count_include_pad=True) if how == "avg"
              else torch.nn.MaxPool2d(k, s, p))
    y_t, dx_t = _torch_run(module, x, dy)
    assert_close(y, y_t, what="y")
    assert_close(dx, dx_t, what="dx")


def test_global_avg_pool(device, rng):
    layer = hn.GlobalAvgPool2D()
    layer.build(device, (4, 5, 3), rng)
    x = rng.standard_normal((3, 4, 5, 3)).astype(F32)
    dy = rng.standard_normal((3, 4)).astype(F32)
    y, dx, _ = _run(layer, device, x, dy)
    module = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    y_t, dx_t = _torch_run(module, x, dy)
    assert_close(y, y_t, what="y")
    assert_close(dx, dx_t, what="dx")


@pytest.mark.parametrize("p,training", [(0.0, True), (0.5, False), (0.9, False)])
def test_dropout_where_deterministic(device, rng, p, training):
    layer = hn.Dropout(p)
    layer.build(device, (5, 4), rng)
    x = rng.standard_normal((3, 5, 4)).astype(F32)
    dy = rng.standard_normal((3, 5, 4)).astype(F32)
    y, dx, _ = _run(layer, device, x, dy, training)
    module = torch.nn.Dropout(p)
    module.train(training)
    y_t, dx_t = _torch_run(module, x, dy)
    assert_close(y, y_t, what="y")
    assert_close(dx, dx_t, what="dx")


def test_conv_without_bias(device, rng):
    layer = hn.Conv2D(3, 4, 3, stride=2, padding=1, bias=False)
    layer.build(device, (3, 7, 6), rng)
    assert list(layer.params) == ["W"]
    x = rng.standard_normal((2, 3, 7, 6)).astype(F32)
    dy = rng.standard_normal((2,) + layer.output_shape).astype(F32)
    y, dx, grads = _run(layer, device, x, dy)
    conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(_t(layer.get_weights()[0]))
    y_t, dx_t = _torch_run(conv, x, dy)
    assert_close(y, y_t, what="y")
    assert_close(dx, dx_t, what="dx")
    assert_close(grads["W"], conv.weight.grad.numpy(), what="dW")
