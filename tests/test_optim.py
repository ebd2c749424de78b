"""Optimisers (RMSProp, AdamW, NAG, clip_norm), their device operations on
every device, the flat one-operation path, and the estimators' names for them.

The "torch_*" functions below are PyTorch's update rules written out in
numpy (float64), from torch.optim's single-tensor code paths, as an
independent reference for the numpy device."""

import copy
import math
import pickle

import numpy as np
import pytest

import hetnet as hn
from hetnet.devices.reference import NumpyDevice
from hetnet.runtime.flatparams import FlatGroup

from conftest import assert_close

F32 = np.float32


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(F32)


# --------------------------------------------------- PyTorch's rules in numpy
def torch_sgd(p, g, buf, lr, momentum, wd, nesterov):
    g = g + wd * p
    buf = g.copy() if buf is None else momentum * buf + g     # first step: buf = g
    step = g + momentum * buf if nesterov else buf
    return p - lr * step, buf


def torch_rmsprop(p, g, sq, buf, lr, alpha, eps, momentum, wd):
    g = g + wd * p
    sq = alpha * sq + (1 - alpha) * g * g
    avg = np.sqrt(sq) + eps
    if momentum > 0:
        buf = momentum * buf + g / avg
        return p - lr * buf, sq, buf
    return p - lr * g / avg, sq, buf


def torch_adam(p, g, m, v, t, lr, b1, b2, eps, wd, decoupled):
    if decoupled:
        p = p * (1 - lr * wd)
    else:
        g = g + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    step_size = lr / (1 - b1 ** t)
    denom = np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps
    return p - step_size * m / denom, m, v


def torch_clip_coef(grads, max_norm):
    total = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    return min(1.0, max_norm / (total + 1e-6))


# ------------------------------------------- the reference against PyTorch's
@pytest.mark.parametrize("momentum,wd,nesterov", [(0.9, 0.0, True), (0.8, 1e-2, True),
                                                  (0.9, 1e-2, False)])
def test_reference_sgd_is_torch_sgd(rng, momentum, wd, nesterov):
    ref = NumpyDevice()
    p, v = rand(rng, 30), np.zeros(30, F32)
    pt, buf = p.astype(np.float64), None
    for _ in range(5):
        g = rand(rng, 30)
        ref.sgd_update(p, g, v, 0.05, momentum, wd, nesterov)
        pt, buf = torch_sgd(pt, g.astype(np.float64), buf, 0.05, momentum, wd, nesterov)
    assert_close(p, pt, rtol=1e-6, what="sgd/nag w")


@pytest.mark.parametrize("momentum,wd", [(0.0, 0.0), (0.9, 0.0), (0.5, 1e-2)])
def test_reference_rmsprop_is_torch_rmsprop(rng, momentum, wd):
    ref = NumpyDevice()
    p, sq, buf = rand(rng, 30), np.zeros(30, F32), np.zeros(30, F32)
    pt, st, bt = p.astype(np.float64), np.zeros(30), np.zeros(30)
    for _ in range(5):
        g = rand(rng, 30)
        ref.rmsprop_update(p, g, sq, buf if momentum else None, 1e-2, 0.99, 1e-8, momentum, wd)
        pt, st, bt = torch_rmsprop(pt, g.astype(np.float64), st, bt, 1e-2, 0.99, 1e-8,
                                   momentum, wd)
    assert_close(p, pt, rtol=1e-6, what="rmsprop w")
    assert_close(sq, st, rtol=1e-6, what="rmsprop square average")


@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
def test_reference_adam_is_torch_adam(rng, decoupled):
    ref = NumpyDevice()
    p, m, v = rand(rng, 30), np.zeros(30, F32), np.zeros(30, F32)
    pt, mt, vt = p.astype(np.float64), np.zeros(30), np.zeros(30)
    for t in range(1, 6):
        g = rand(rng, 30)
        ref.adam_update(p, g, m, v, 1e-2, 0.9, 0.999, 1e-8, t, 0.05, decoupled)
        pt, mt, vt = torch_adam(pt, g.astype(np.float64), mt, vt, t, 1e-2, 0.9, 0.999, 1e-8,
                                0.05, decoupled)
    assert_close(p, pt, rtol=1e-6, what="adam w")


# ------------------------------------------------ every device against numpy
@pytest.mark.parametrize("momentum,wd,scale", [(0.0, 0.0, 1.0), (0.9, 0.0, 1.0),
                                               (0.5, 1e-2, 0.3)])
def test_rmsprop_update(device, ref, rng, momentum, wd, scale):
    w, sq, buf = rand(rng, 5, 70), np.abs(rand(rng, 5, 70)), rand(rng, 5, 70)
    wr, sr, br = w.copy(), sq.copy(), buf.copy()
    wd_, sd, bd = device.asarray(w), device.asarray(sq), device.asarray(buf)
    for _ in range(3):
        g = rand(rng, 5, 70)
        ref.rmsprop_update(wr, g, sr, br if momentum else None, 1e-2, 0.9, 1e-8, momentum, wd,
                           scale)
        device.rmsprop_update(wd_, device.asarray(g), sd, bd if momentum else None, 1e-2, 0.9,
                              1e-8, momentum, wd, scale)
    assert_close(device.to_host(wd_), wr, rtol=1e-5, what="rmsprop w")
    assert_close(device.to_host(sd), sr, rtol=1e-5, what="rmsprop sq")
    assert_close(device.to_host(bd), br if momentum else buf, rtol=1e-5, what="rmsprop buf")


@pytest.mark.parametrize("decoupled,scale", [(False, 1.0), (True, 1.0), (True, 0.25)])
def test_adam_decoupled_and_scaled(device, ref, rng, decoupled, scale):
    w, m, v = rand(rng, 333), rand(rng, 333), np.abs(rand(rng, 333))
    wr, mr, vr = w.copy(), m.copy(), v.copy()
    wd_, md, vd = device.asarray(w), device.asarray(m), device.asarray(v)
    for t in (1, 2, 3):
        g = rand(rng, 333)
        ref.adam_update(wr, g, mr, vr, 1e-2, 0.9, 0.999, 1e-8, t, 0.1, decoupled, scale)
        device.adam_update(wd_, device.asarray(g), md, vd, 1e-2, 0.9, 0.999, 1e-8, t, 0.1,
                           decoupled, scale)
    for a, b, what in ((wd_, wr, "w"), (md, mr, "m"), (vd, vr, "v")):
        assert_close(device.to_host(a), b, rtol=1e-5, what=f"adam {what}")


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_scaled(device, ref, rng, nesterov):
    w, g, v = rand(rng, 200), rand(rng, 200), rand(rng, 200)
    wr, vr = w.copy(), v.copy()
    ref.sgd_update(wr, g, vr, 0.1, 0.9, 1e-3, nesterov, 0.4)
    wd_, vd = device.asarray(w), device.asarray(v)
    device.sgd_update(wd_, device.asarray(g), vd, 0.1, 0.9, 1e-3, nesterov, 0.4)
    assert_close(device.to_host(wd_), wr, rtol=1e-6, what="sgd w")
    assert_close(device.to_host(vd), vr, rtol=1e-6, what="sgd v")


@pytest.mark.parametrize("n", [1, 1000, 300001])              # 300001: two passes on OpenCL
def test_sum_squares(device, ref, rng, n):
    x, y = rand(rng, n), rand(rng, 7)
    out = device.sum_squares(device.asarray(x))
    assert out.shape == (1,)
    assert_close(device.to_host(out), ref.sum_squares(x), rtol=1e-5, what="sum_squares")
    device.sum_squares(device.asarray(y), out=out, accumulate=True)
    expected = float((x.astype(np.float64) ** 2).sum() + (y.astype(np.float64) ** 2).sum())
    assert_close(device.to_host(out), [expected], rtol=1e-5, what="accumulated")


def test_updates_on_views_leave_the_rest_alone(device, ref, rng):
    """The flat path updates views at offsets into one buffer."""
    flat = rand(rng, 300)
    fd, sqd = device.asarray(flat), device.zeros((300,))
    g = rand(rng, 100)
    w_view = device.batch_slice(fd, 128, 228)
    device.rmsprop_update(w_view, device.asarray(g), device.batch_slice(sqd, 128, 228), None,
                          0.1, 0.9, 1e-8)
    out = device.to_host(fd)
    np.testing.assert_array_equal(out[:128], flat[:128])
    np.testing.assert_array_equal(out[228:], flat[228:])
    expected, sq = flat[128:228].copy(), np.zeros(100, F32)
    ref.rmsprop_update(expected, g, sq, None, 0.1, 0.9, 1e-8)
    assert_close(out[128:228], expected, rtol=1e-5, what="rmsprop on a view")


# ---------------------------------------------------------------- optimisers
OPTS = {
    "nag": lambda **kw: hn.SGD(0.05, momentum=0.9, nesterov=True, **kw),
    "rmsprop": lambda **kw: hn.RMSProp(0.01, **kw),
    "rmsprop_momentum": lambda **kw: hn.RMSProp(0.01, momentum=0.9, weight_decay=1e-3, **kw),
    "adam": lambda **kw: hn.Adam(0.01, weight_decay=1e-3, **kw),
    "adamw": lambda **kw: hn.AdamW(0.01, **kw),
}


def _torch_trajectory(name, params, grads_per_step, clip=None):
    """Each parameter after the steps, by the numpy-written PyTorch rules."""
    ps = [p.astype(np.float64) for p in params]
    state = [None] * len(ps)
    for t, grads in enumerate(grads_per_step, start=1):
        gs = [g.astype(np.float64) for g in grads]
        if clip is not None:
            c = torch_clip_coef(grads, clip)
            gs = [g * c for g in gs]
        for k, (p, g) in enumerate(zip(ps, gs)):
            st = state[k]
            if name == "nag":
                ps[k], state[k] = torch_sgd(p, g, st, 0.05, 0.9, 0.0, True)
            elif name.startswith("rmsprop"):
                mom, wd = (0.9, 1e-3) if name == "rmsprop_momentum" else (0.0, 0.0)
                sq, buf = st if st is not None else (np.zeros_like(p), np.zeros_like(p))
                ps[k], sq, buf = torch_rmsprop(p, g, sq, buf, 0.01, 0.99, 1e-8, mom, wd)
                state[k] = (sq, buf)
            else:
                decoupled = name == "adamw"
                m, v = st if st is not None else (np.zeros_like(p), np.zeros_like(p))
                ps[k], m, v = torch_adam(p, g, m, v, t, 0.01, 0.9, 0.999, 1e-8,
                                         0.01 if decoupled else 1e-3, decoupled)
                state[k] = (m, v)
    return ps


@pytest.mark.parametrize("clip", [None, 0.5])
@pytest.mark.parametrize("name", list(OPTS))
def test_optimizer_step_matches_torch_rules(device, rng, name, clip):
    shapes = [(4, 6), (6,), (3, 3)]
    params = [rand(rng, *s) for s in shapes]
    grads = [[rand(rng, *s) for s in shapes] for _ in range(4)]
    opt = OPTS[name](clip_norm=clip)
    held = [device.asarray(p) for p in params]
    for gs in grads:
        opt.step(device, held, [device.asarray(g) for g in gs])
    expected = _torch_trajectory(name, params, grads, clip)
    for a, b in zip(held, expected):
        assert_close(device.to_host(a), b, rtol=1e-5, what=f"{name} clip={clip}")


@pytest.mark.parametrize("name", list(OPTS))
def test_flat_group_equals_per_array_updates(device, rng, name):
    """update_group over one flat buffer (the one-launch path) = the arrays one by one."""
    shapes = [(5, 7), (7,), (2, 3, 3)]
    params = [rand(rng, *s) for s in shapes]
    grads = [[rand(rng, *s) for s in shapes] for _ in range(3)]
    group = FlatGroup(device, shapes)
    w, w_views = group.pack([device.asarray(p) for p in params])
    g, g_views = group.pack(None for _ in shapes)
    flat_opt, each_opt = OPTS[name](clip_norm=1.0), OPTS[name](clip_norm=1.0)
    each = [device.asarray(p) for p in params]
    for gs in grads:
        g_host = np.zeros(group.size, F32)
        for off, a in zip(group.offsets, gs):
            g_host[off:off + a.size] = a.reshape(-1)
        g = device.asarray(g_host)
        flat_opt.begin_step()
        flat_opt.update_group(device, [0, 1, 2], group, w, g)
        flat_opt.end_step()
        each_opt.step(device, each, [device.asarray(a) for a in gs])
    for v, a in zip(group.views(w), each):
        assert_close(device.to_host(v), device.to_host(a), rtol=1e-6, what=f"{name} flat")


def test_clip_norm_is_global_across_devices(rng):
    """Two devices' parameters clipped by the norm of all gradients together,
    the device arrays of the gradients themselves untouched."""
    from hetnet.devices.cpu import CPUDevice
    a, b = NumpyDevice(), CPUDevice(num_threads=1)
    params = [rand(rng, 10), rand(rng, 4, 5)]
    grads = [rand(rng, 10) * 3, rand(rng, 4, 5) * 3]
    opt = hn.SGD(0.1, clip_norm=1.0)
    held = [a.asarray(params[0]), b.asarray(params[1])]
    gd = [a.asarray(grads[0]), b.asarray(grads[1])]
    opt.step([a, b], held, gd)
    c = torch_clip_coef(grads, 1.0)
    assert c < 0.5
    for p, g, h in zip(params, grads, held):
        assert_close(h, p - 0.1 * c * g, rtol=1e-6, what="clipped sgd")
    np.testing.assert_array_equal(gd[0], grads[0])
    small = hn.SGD(0.1, clip_norm=1e6)                        # under the limit: torch's
    held = [a.asarray(params[0])]                             # clamp leaves g as it is
    small.step(a, held, [a.asarray(grads[0])])
    assert_close(held[0], params[0] - 0.1 * grads[0] * (1e6 / (1e6 + 1e-6)), rtol=1e-7)


def test_clip_norm_in_fit_waits_for_every_gradient():
    """fit with clip_norm: the updates run after the whole backward pass
    (every gradient in the norm), with one read of the norm per step."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((24, 6)).astype(F32), rng.integers(0, 3, 24)
    model = hn.models.mlp([6, 8, 3], seed=1, device="numpy", input_shape=(6,))
    start = model.get_weights()
    loss, grads = model.loss_and_gradients(X, y)
    model.fit(X, y, epochs=1, batch_size=24, shuffle=False,
              optimizer=hn.SGD(0.5, clip_norm=0.1))
    c = torch_clip_coef(grads, 0.1)
    assert c < 1
    for w0, g, w1 in zip(start, grads, model.get_weights()):
        assert_close(w1, w0 - 0.5 * c * g, rtol=1e-5, what="clipped fit step")


def test_opencl_clip_reads_back_once_per_step(rng):
    from conftest import make_device
    dev = make_device("opencl")
    model = hn.models.mlp([6, 8, 3], seed=1, device=dev, input_shape=(6,))
    X, y = rng.standard_normal((32, 6)).astype(F32), rng.integers(0, 3, 32)
    opt = hn.Adam(0.01, clip_norm=0.5)
    model.fit(X, y, epochs=1, batch_size=8, optimizer=opt)
    before = dev.transfers["to_host"]
    model.fit(X, y, epochs=1, batch_size=8)
    # four steps, one norm each, and the epoch's loss sum
    assert dev.transfers["to_host"] - before == 4 + 1


@pytest.mark.parametrize("make,match", [
    (lambda: hn.RMSProp(alpha=1.0), "alpha"), (lambda: hn.RMSProp(momentum=1.0), "momentum"),
    (lambda: hn.RMSProp(eps=0), "eps"), (lambda: hn.AdamW(weight_decay=-1), "weight_decay"),
    (lambda: hn.SGD(clip_norm=0), "clip_norm"), (lambda: hn.Adam(clip_norm=float("nan")),
                                                 "clip_norm")])
def test_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_names_and_configs():
    from hetnet.optim import OPTIMIZERS, get_optimizer
    nag = get_optimizer("nag", lr=0.1)
    assert isinstance(nag, hn.SGD) and nag.nesterov and nag.momentum == 0.9 and nag.lr == 0.1
    assert isinstance(get_optimizer("RMSprop"), hn.RMSProp)
    assert isinstance(get_optimizer("adamw"), hn.AdamW)
    with pytest.raises(ValueError, match="nag"):
        get_optimizer("lbfgs")
    for opt in (hn.RMSProp(0.02, momentum=0.5, clip_norm=2.0), hn.AdamW(weight_decay=0.1), nag):
        cfg = dict(opt.get_config())
        again = OPTIMIZERS[cfg.pop("name")](**cfg)
        assert type(again) is type(opt) and again.get_config() == opt.get_config()
    opt = hn.RMSProp(clip_norm=1.0)
    opt.step(NumpyDevice(), [np.ones(3, F32)], [np.ones(3, F32)])
    restored = pickle.loads(pickle.dumps(opt))
    assert restored.t == 1 and restored.clip_norm == 1.0


def test_adamw_decays_weights_without_gradient():
    w = np.full(4, 2.0, F32)
    hn.AdamW(lr=0.1, weight_decay=0.5).step(NumpyDevice(), [w], [np.zeros(4, F32)])
    assert_close(w, np.full(4, 2.0 * (1 - 0.1 * 0.5)), rtol=1e-7)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", ["nag", "rmsprop", "adamw"])
def test_estimators_take_the_names(name):
    from hetnet import HetNetClassifier, HetNetRegressor
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4)).astype(F32)
    y = (X[:, 0] > 0).astype(int)
    clf = HetNetClassifier(hidden_layer_sizes=(8,), optimizer=name, max_iter=3,
                           learning_rate_init=0.01, random_state=0, device="cpu").fit(X, y)
    expected = {"nag": hn.SGD, "rmsprop": hn.RMSProp, "adamw": hn.AdamW}[name]
    assert type(clf.model_.optimizer) is expected
    if name == "nag":
        assert clf.model_.optimizer.nesterov and clf.model_.optimizer.momentum == 0.9
    reg = HetNetRegressor(hidden_layer_sizes=(8,), optimizer=name, max_iter=3,
                          learning_rate_init=0.01, random_state=0, device="cpu")
    reg.fit(X, X[:, 1])
    assert np.isfinite(reg.predict(X)).all()
    est = HetNetClassifier(optimizer=copy.deepcopy(hn.RMSProp(0.01, momentum=0.5)))
    assert est.get_params()["optimizer"].momentum == 0.5


@pytest.mark.parametrize("make", [lambda: hn.RMSProp(0.01, momentum=0.9, clip_norm=0.5),
                                  lambda: hn.AdamW(0.01, clip_norm=0.5),
                                  lambda: hn.SGD(0.05, momentum=0.9, nesterov=True)],
                         ids=["rmsprop", "adamw", "nag"])
def test_fit_on_opencl_flat_path_matches_numpy(make):
    """OpenCL's one-launch flat update (and its clipping) trains as the
    numpy reference's per-array updates do."""
    from conftest import make_device
    dev = make_device("opencl")
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((48, 6)).astype(F32), rng.integers(0, 3, 48)
    models = [hn.models.mlp([6, 10, 3], seed=2, device=d, input_shape=(6,))
              for d in (dev, "numpy")]
    for m in models:
        m.fit(X, y, epochs=2, batch_size=16, optimizer=make(), shuffle=False)
    assert dev in models[0].runtime._flats                     # the flat path ran
    for a, b in zip(*(m.get_weights() for m in models)):
        assert_close(a, b, rtol=1e-4, what="opencl flat vs numpy")
