"""Every device operation against the plain numpy reference, on every device."""

import numpy as np
import pytest

from conftest import assert_close

F32 = np.float32


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(F32)


def put(dev, a, dtype=F32):
    return dev.asarray(a, dtype=dtype)


def host(dev, a):
    return dev.to_host(a)


GEMM_SHAPES = [(1, 1, 1), (7, 13, 5), (33, 65, 17), (70, 3, 129), (128, 96, 200)]


@pytest.mark.parametrize("m,n,k", GEMM_SHAPES)
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_gemm_2d(device, ref, rng, m, n, k, ta, tb):
    a = rand(rng, *((k, m) if ta else (m, k)))
    b = rand(rng, *((n, k) if tb else (k, n)))
    c = rand(rng, m, n)
    expected = ref.gemm(a, b, c.copy(), ta, tb, alpha=0.7, beta=0.3)
    out = put(device, c)
    device.gemm(put(device, a), put(device, b), out, ta, tb, alpha=0.7, beta=0.3)
    assert_close(host(device, out), expected, what="gemm alpha/beta")
    got = device.gemm(put(device, a), put(device, b), None, ta, tb)
    assert_close(host(device, got), ref.gemm(a, b, None, ta, tb), what="gemm new c")


def test_gemm_beta_zero_ignores_garbage(device, ref, rng):
    """beta = 0 means c is not read: NaN already in c must not leak out."""
    a, b = rand(rng, 4, 3), rand(rng, 3, 5)
    for dev in (device, ref):
        c = dev.asarray(np.full((4, 5), np.nan, dtype=F32))
        dev.gemm(dev.asarray(a), dev.asarray(b), c, beta=0.0)
        assert_close(dev.to_host(c), a.astype(np.float64) @ b, what=f"{dev.name} beta=0")


@pytest.mark.parametrize("shared", ["a", "b", "none"])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True)])
def test_gemm_batched(device, ref, rng, shared, ta, tb):
    nb, m, n, k = 5, 6, 11, 9
    a = rand(rng, *(() if shared == "a" else (nb,)), *((k, m) if ta else (m, k)))
    b = rand(rng, *(() if shared == "b" else (nb,)), *((n, k) if tb else (k, n)))
    got = device.gemm(put(device, a), put(device, b), None, ta, tb)
    assert_close(host(device, got), ref.gemm(a, b, None, ta, tb), what="batched gemm")


@pytest.mark.parametrize("nb", [1, 3, 8])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_gemm_batch_sum(device, ref, rng, nb, beta):
    f, ckk, p = 7, 12, 25
    dy, cols = rand(rng, nb, f, p), rand(rng, nb, ckk, p)
    c = rand(rng, f, ckk)
    expected = ref.gemm(dy, cols, c.copy(), False, True, beta=beta)
    out = put(device, c)
    device.gemm(put(device, dy), put(device, cols), out, False, True, beta=beta)
    assert_close(host(device, out), expected, what="batch-summed gemm")


CONV_CASES = [  # (n, c, h, w, kh, kw, sh, sw, ph, pw)
    (2, 1, 8, 8, 3, 3, 1, 1, 0, 0),
    (3, 2, 7, 9, 3, 2, 2, 1, 1, 0),
    (1, 3, 6, 6, 5, 5, 1, 1, 4, 4),     # "full" padding
    (2, 2, 9, 7, 3, 3, 2, 3, 1, 2),
    (1, 1, 5, 5, 1, 1, 1, 1, 0, 0),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_im2col_col2im(device, ref, rng, case):
    n, c, h, w, kh, kw, sh, sw, ph, pw = case
    x = rand(rng, n, c, h, w)
    expected = ref.im2col(x, kh, kw, sh, sw, ph, pw)
    cols = device.im2col(put(device, x), kh, kw, sh, sw, ph, pw)
    assert_close(host(device, cols), expected, rtol=0, what="im2col")
    g = rand(rng, *expected.shape)
    dx = device.col2im(put(device, g), x.shape, kh, kw, sh, sw, ph, pw)
    assert_close(host(device, dx), ref.col2im(g, x.shape, kh, kw, sh, sw, ph, pw), what="col2im")


def test_im2col_on_batch_slice(device, ref, rng):
    x = rand(rng, 5, 2, 6, 6)
    xd = put(device, x)
    part = device.batch_slice(xd, 2, 4)
    cols = device.im2col(part, 3, 3, 1, 1, 1, 1)
    assert_close(host(device, cols), ref.im2col(x[2:4], 3, 3, 1, 1, 1, 1), rtol=0,
                 what="im2col of a view")


@pytest.mark.parametrize("shape,k,s", [((2, 3, 8, 8), (2, 2), (2, 2)),
                                       ((2, 3, 7, 9), (2, 2), (2, 2)),    # odd: edges dropped
                                       ((1, 2, 7, 5), (3, 2), (2, 1)),
                                       ((3, 1, 6, 6), (3, 3), (3, 3))])
def test_maxpool(device, ref, rng, shape, k, s):
    x = rand(rng, *shape)
    y_ref, am_ref = ref.maxpool2d(x, *k, *s)
    y, am = device.maxpool2d(put(device, x), *k, *s)
    assert_close(host(device, y), y_ref, rtol=0, what="maxpool y")
    np.testing.assert_array_equal(host(device, am), am_ref)
    dy = rand(rng, *y_ref.shape)
    dx = device.maxpool2d_backward(put(device, dy), am, shape)
    assert_close(host(device, dx), ref.maxpool2d_backward(dy, am_ref, shape), what="maxpool dx")


def test_maxpool_ties_keep_the_first_position(device, ref, rng):
    """Values from {0, 1, 2} give ties in most windows: every device keeps
    the first maximum in row-major window order, as the reference does."""
    x = rng.integers(0, 3, (2, 3, 8, 8)).astype(F32)
    y_ref, am_ref = ref.maxpool2d(x, 2, 2, 2, 2)
    y, am = device.maxpool2d(put(device, x), 2, 2, 2, 2)
    assert_close(host(device, y), y_ref, rtol=0, what="maxpool y")
    np.testing.assert_array_equal(host(device, am), am_ref)


@pytest.mark.parametrize("hw", [(9, 11), (5, 6), (3, 3)])
def test_conv_bias_gradient_over_any_plane_size(device, ref, rng, hw):
    """The bias gradient sums each output plane in partial sums of eight on
    the CPU: planes of 63, 8 and 1 outputs (a remainder, none, only the
    remainder) agree with the reference."""
    x, w, b = rand(rng, 5, 2, *hw), rand(rng, 4, 2, 3, 3), rand(rng, 4)
    args = ((1, 1), (0, 0), "relu")
    y = device.conv2d(put(device, x), put(device, w), put(device, b), *args)
    ry = ref.conv2d(x, w, b, *args)
    gy = rand(rng, *ry.shape)
    dw, db = device.zeros(w.shape), device.zeros((4,))
    device.conv2d_backward(put(device, x), put(device, w), y, put(device, gy), *args, dw, db)
    rdw, rdb = np.zeros(w.shape, F32), np.zeros(4, F32)
    ref.conv2d_backward(x, w, ry, gy.copy(), *args, rdw, rdb)
    assert_close(host(device, db), rdb, what="conv db")
    assert_close(host(device, dw), rdw, what="conv dW")


@pytest.mark.parametrize("shape", [(4, 5), (3, 4, 6, 6), (2, 7, 1, 1)])
def test_bias_add_and_grad(device, ref, rng, shape):
    y, b = rand(rng, *shape), rand(rng, shape[1])
    yd = put(device, y)
    device.bias_add(yd, put(device, b))
    assert_close(host(device, yd), ref.bias_add(y.copy(), b), what="bias_add")
    assert_close(host(device, device.bias_grad(put(device, y))), ref.bias_grad(y), what="bias_grad")


ACTS = ["identity", "relu", "sigmoid", "tanh"]


@pytest.mark.parametrize("name", ACTS + ["softmax"])
def test_activation(device, ref, rng, name):
    x = 3 * rand(rng, 6, 9)
    y = device.activation(name, put(device, x))
    y_ref = ref.activation(name, x)
    assert_close(host(device, y), y_ref, what=f"{name} forward")
    dy = rand(rng, 6, 9)
    dx = device.activation_backward(name, put(device, y_ref), put(device, dy))
    assert_close(host(device, dx), ref.activation_backward(name, y_ref, dy), what=f"{name} backward")


@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("with_bias", [True, False])
def test_bias_activation(device, ref, rng, name, with_bias):
    y, b = rand(rng, 3, 4, 5), rand(rng, 4)
    yd = put(device, y)
    device.bias_activation(yd, put(device, b) if with_bias else None, name)
    expected = ref.bias_activation(y.copy(), b if with_bias else None, name)
    assert_close(host(device, yd), expected, what="bias_activation")


@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("shape", [(1, 3), (70, 9), (300, 130),    # one block, several, threads
                                   (3, 4, 5, 6),                     # a conv layer's (N, F, H, W)
                                   (40, 3, 16, 16)])                 # OpenCL: too long to fuse
@pytest.mark.parametrize("with_bias", [True, False])
def test_activation_bias_backward(device, ref, rng, name, shape, with_bias):
    y = ref.activation(name, rand(rng, *shape))
    dy = rand(rng, *shape)
    expected_dx = ref.activation_backward(name, y, dy) if name != "identity" else dy
    dyd = put(device, dy)
    db = device.zeros((shape[1],)) if with_bias else None
    out = device.activation_bias_backward(name, put(device, y), dyd, db)
    assert_close(host(device, out), expected_dx, what=f"{name} backward")
    assert_close(host(device, dyd), expected_dx, what=f"{name} backward in place")
    if with_bias:
        assert_close(host(device, db), ref.bias_grad(expected_dx), what="bias grad")


def test_activation_extremes(device, ref):
    x = np.array([[-100.0, -20.0, 0.0, 20.0, 100.0]], dtype=F32)
    for name in ("sigmoid", "tanh", "softmax"):
        y = host(device, device.activation(name, put(device, x)))
        assert np.isfinite(y).all(), name
        assert_close(y, ref.activation(name, x), what=name)


@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_cross_entropy(device, ref, rng, weighted):
    z = 5 * rand(rng, 9, 4)
    z[0, 0] = 80.0   # stability: a large logit must not overflow
    labels = rng.integers(0, 4, 9).astype(np.int32)
    w = rng.random(9).astype(F32) if weighted else None
    loss_ref, g_ref = ref.softmax_cross_entropy(z, labels, w)
    loss, g = device.softmax_cross_entropy(put(device, z), put(device, labels, np.int32),
                                           None if w is None else put(device, w))
    assert_close(host(device, loss), loss_ref, what="CE loss")
    assert_close(host(device, g), g_ref, what="CE grad")


@pytest.mark.parametrize("weighted", [False, True])
def test_sigmoid_bce(device, ref, rng, weighted):
    z = 4 * rand(rng, 7, 3)
    z[0, 0] = -60.0
    t = rng.random((7, 3)).astype(F32)
    w = rng.random(7).astype(F32) if weighted else None
    loss_ref, g_ref = ref.sigmoid_binary_cross_entropy(z, t, w)
    loss, g = device.sigmoid_binary_cross_entropy(put(device, z), put(device, t),
                                                  None if w is None else put(device, w))
    assert_close(host(device, loss), loss_ref, what="BCE loss")
    assert_close(host(device, g), g_ref, what="BCE grad")


@pytest.mark.parametrize("weighted", [False, True])
def test_mse(device, ref, rng, weighted):
    p, t = rand(rng, 8, 2), rand(rng, 8, 2)
    w = rng.random(8).astype(F32) if weighted else None
    loss_ref, g_ref = ref.mse(p, t, w)
    loss, g = device.mse(put(device, p), put(device, t), None if w is None else put(device, w))
    assert_close(host(device, loss), loss_ref, what="MSE loss")
    assert_close(host(device, g), g_ref, what="MSE grad")


@pytest.mark.parametrize("momentum,wd,nesterov", [(0.0, 0.0, False), (0.9, 0.0, False),
                                                  (0.9, 1e-3, True), (0.5, 1e-2, False)])
def test_sgd_update(device, ref, rng, momentum, wd, nesterov):
    w, g, v = rand(rng, 5, 7), rand(rng, 5, 7), rand(rng, 5, 7)
    w_ref, v_ref = w.copy(), v.copy()
    ref.sgd_update(w_ref, g, v_ref if momentum else None, 0.1, momentum, wd, nesterov)
    wd_, vd = put(device, w), put(device, v)
    device.sgd_update(wd_, put(device, g), vd if momentum else None, 0.1, momentum, wd, nesterov)
    assert_close(host(device, wd_), w_ref, what="sgd w")
    if momentum:
        assert_close(host(device, vd), v_ref, what="sgd v")


def test_adam_update(device, ref, rng):
    w, g = rand(rng, 40), rand(rng, 40)
    m, v = rand(rng, 40), np.abs(rand(rng, 40))
    w_ref, m_ref, v_ref = w.copy(), m.copy(), v.copy()
    ref.adam_update(w_ref, g, m_ref, v_ref, 1e-2, 0.9, 0.999, 1e-8, 3, 1e-4)
    wd_, md, vd = put(device, w), put(device, m), put(device, v)
    device.adam_update(wd_, put(device, g), md, vd, 1e-2, 0.9, 0.999, 1e-8, 3, 1e-4)
    assert_close(host(device, wd_), w_ref, what="adam w")
    assert_close(host(device, md), m_ref, what="adam m")
    assert_close(host(device, vd), v_ref, what="adam v")


def test_reductions(device, ref, rng):
    x = rand(rng, 50, 7)
    assert_close(host(device, device.sum(put(device, x))), ref.sum(x), what="sum")
    np.testing.assert_array_equal(host(device, device.argmax(put(device, x))), ref.argmax(x))
    y = rand(rng, 50, 7)
    yd = put(device, y)
    device.axpy(0.5, put(device, x), yd)
    assert_close(host(device, yd), y + 0.5 * x, what="axpy")
    device.scale(2.0, yd)
    assert_close(host(device, yd), 2 * (y + 0.5 * x), what="scale")


def _threaded(device, work, kind):
    """Assert that a loop of ``work`` takes several threads on the 2-thread
    CPU device (so the test below covers the threaded paths)."""
    if getattr(device, "num_threads", 1) > 1:
        from hetnet._cpu import blas
        assert blas.threads_for(device.num_threads, work, blas.work_units()[kind]) > 1, kind


def test_large_parallel_paths(device, ref, rng):
    """Sizes past the kernels' parallel thresholds take the threaded paths:
    elementwise and exp/log loops, GEMMs split by rows and by columns,
    batched and batch-summed GEMMs, the fused convolution and its gradients,
    im2col/col2im and pooling copies."""
    x = rand(rng, 64, 2560)
    _threaded(device, x.size, "element")
    assert_close(host(device, device.activation("relu", put(device, x))), ref.activation("relu", x),
                 what="relu large")
    assert_close(host(device, device.sum(put(device, x))), ref.sum(x), what="sum large")
    w, g, v = rand(rng, x.size), rand(rng, x.size), rand(rng, x.size)
    wd, vd = put(device, w), put(device, v)
    device.sgd_update(wd, put(device, g), vd, 0.1, 0.9)
    ref.sgd_update(w, g, v, 0.1, 0.9)
    assert_close(host(device, wd), w, what="sgd large")
    z, labels = rand(rng, 300, 10), rng.integers(0, 10, 300).astype(np.int32)
    _threaded(device, z.size, "heavy")
    loss, gd = device.softmax_cross_entropy(put(device, z), put(device, labels, np.int32), None)
    rl, rg = ref.softmax_cross_entropy(z, labels, None)
    assert_close(host(device, loss), rl, what="softmax ce large")
    assert_close(host(device, gd), rg, what="softmax ce grad large")
    for m, n, k in ((300, 200, 250), (120, 400, 250)):       # split by rows, by columns
        _threaded(device, m * n * k, "gemm")
        a, b = rand(rng, m, k), rand(rng, k, n)
        assert_close(host(device, device.gemm(put(device, a), put(device, b))), ref.gemm(a, b),
                     what=f"gemm large {m}x{n}x{k}")
    a, b = rand(rng, 4, 64, 600), rand(rng, 4, 600, 80)
    _threaded(device, 4 * 64 * 80 * 600, "gemm")
    assert_close(host(device, device.gemm(put(device, a), put(device, b))), ref.gemm(a, b),
                 what="batched gemm large")
    dy, cols = rand(rng, 8, 64, 300), rand(rng, 8, 80, 300)
    out = device.zeros((64, 80))
    device.gemm(put(device, dy), put(device, cols), out, False, True)
    _threaded(device, 8 * 64 * 80 * 300, "gemm")
    assert_close(host(device, out), ref.gemm(dy, cols, np.zeros((64, 80), F32), False, True),
                 what="batch-sum large")
    xc = rand(rng, 8, 3, 28, 28)
    wc, bc = rand(rng, 16, 3, 3, 3), rand(rng, 16)
    _threaded(device, 8 * 16 * 27 * 784, "conv")
    _threaded(device, xc.size * 9, "copy")
    args = ((1, 1), (1, 1), "relu")
    y = device.conv2d(put(device, xc), put(device, wc), put(device, bc), *args)
    ry = ref.conv2d(xc, wc, bc, *args)
    assert_close(host(device, y), ry, what="conv large")
    gy = rand(rng, *ry.shape)
    dw, db = device.zeros(wc.shape), device.zeros((16,))
    dx = device.conv2d_backward(put(device, xc), put(device, wc), y, put(device, gy), *args, dw, db)
    rdw, rdb = np.zeros(wc.shape, F32), np.zeros(16, F32)
    rdx = ref.conv2d_backward(xc, wc, ry, gy.copy(), *args, rdw, rdb)
    for got, want, what in ((dx, rdx, "dx"), (dw, rdw, "dW"), (db, rdb, "db")):
        assert_close(host(device, got), want, what=f"conv backward large {what}")
    cols = device.im2col(put(device, xc), 3, 3, 1, 1, 1, 1)
    assert_close(host(device, cols), ref.im2col(xc, 3, 3, 1, 1, 1, 1), what="im2col large")
    back = device.col2im(cols, xc.shape, 3, 3, 1, 1, 1, 1)
    assert_close(host(device, back), ref.col2im(ref.im2col(xc, 3, 3, 1, 1, 1, 1), xc.shape,
                                                3, 3, 1, 1, 1, 1), what="col2im large")
    xp = rand(rng, 16, 8, 28, 28)
    _threaded(device, xp.size, "copy")
    yp, am = device.maxpool2d(put(device, xp), 2, 2, 2, 2)
    ryp, ram = ref.maxpool2d(xp, 2, 2, 2, 2)
    assert_close(host(device, yp), ryp, what="maxpool large")
    gp = rand(rng, *ryp.shape)
    assert_close(host(device, device.maxpool2d_backward(put(device, gp), am, xp.shape)),
                 ref.maxpool2d_backward(gp, ram, xp.shape), what="maxpool backward large")


def test_transfers_are_counted(device, rng):
    before = dict(device.transfers)
    x = device.asarray(rand(rng, 3, 4))
    device.to_host(x)
    assert device.transfers["to_device"] == before["to_device"] + 1
    assert device.transfers["to_host"] == before["to_host"] + 1
    assert device.transfers["bytes_to_host"] == before["bytes_to_host"] + 48


@pytest.mark.parametrize("idx", [np.array([4, 0, 2, 2, -1]), slice(1, 4), np.array([], dtype=int)])
def test_gather_rows(device, rng, idx):
    X = rand(rng, 6, 3, 4)
    expected = X[idx]
    got = device.to_host(device.gather_rows(X, idx))
    assert_close(got, expected, rtol=0, what="gather_rows")
    out = device.gather_rows(X, idx)
    again = device.gather_rows(X[::-1].copy(), idx, out=out)     # the buffer is reused
    assert_close(device.to_host(again), X[::-1][idx], rtol=0, what="gather_rows reuse")


@pytest.mark.parametrize("bad", [6, -7])
def test_gather_rows_out_of_range(device, rng, bad):
    X = rand(rng, 6, 3)
    with pytest.raises(IndexError):
        device.gather_rows(X, np.array([0, bad, 1]))


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_cpu_optimizer_state_never_goes_subnormal(opt):
    """A state whose gradient stays 0 decays toward 0; on the CPU it is set
    to 0 below the smallest normal float instead of running through the
    (slow, on Intel CPUs) subnormals."""
    from hetnet.devices.cpu import CPUDevice
    dev = CPUDevice(num_threads=1)
    w, g = np.ones(64, dtype=F32), np.zeros(64, dtype=F32)
    g[:8] = 1.0       # a few live entries keep their state
    m, v = np.full(64, 1e-3, dtype=F32), np.full(64, 1e-3, dtype=F32)
    tiny = np.finfo(F32).tiny
    for t in range(1, 3000):
        if opt == "sgd":
            dev.sgd_update(w, g, v, 1e-3, 0.9)
        else:
            dev.adam_update(w, g, m, v, 1e-3, 0.9, 0.97, 1e-8, t)
        for state in (v,) if opt == "sgd" else (m, v):
            assert not ((state != 0) & (np.abs(state) < tiny)).any(), f"subnormal state at step {t}"
    assert (v[8:] == 0).all() and (v[:8] != 0).all()


def test_cpu_update_takes_the_threads_that_wrote_its_gradient(ref, rng):
    """An update reads its gradient with exactly as many threads as the GEMM
    that wrote it in row blocks (each thread then reads what it wrote); a
    gradient no GEMM wrote, one split by columns or one past the hint's
    size gets no hint (the update's own rule); the results are the same
    either way."""
    from hetnet._cpu import blas
    from hetnet.devices.cpu import CPUDevice
    dev = CPUDevice(num_threads=2)
    units = blas.work_units()
    x, dy = rand(rng, 1, 1152), rand(rng, 1, 256)
    g = dev.zeros((1152, 256))
    dev.gemm(x, dy, g, trans_a=True)          # a batch-1 weight gradient: too little work to split
    assert blas.threads_for(2, 1152 * 256, units["gemm"]) == 1
    assert dev._update_threads(g) == 1
    assert dev._update_threads(g.copy()) is None                   # no GEMM wrote it
    a, b = rand(rng, 300, 250), rand(rng, 250, 200)
    rows = dev.gemm(a, b, dev.zeros((300, 200)))                   # split by rows
    assert dev._update_threads(rows) == blas.threads_for(2, 300 * 200 * 250, units["gemm"])
    cols = dev.gemm(rand(rng, 120, 250), rand(rng, 250, 400), dev.zeros((120, 400)))
    assert dev._update_threads(cols) is None                        # split by columns: no hint
    two = dev.gemm(rand(rng, 300, 5000), rand(rng, 5000, 7), dev.zeros((300, 7)))
    assert blas.threads_for(2, 300 * 7, units["element"]) == 1 < 2 == dev._update_threads(two)
    for grad in (g, rows, two):            # two: more threads than its size alone would take
        w, v = rand(rng, *grad.shape), rand(rng, *grad.shape)
        w_ref, v_ref = w.copy(), v.copy()
        ref.sgd_update(w_ref, grad, v_ref, 0.1, 0.9)
        dev.sgd_update(w, grad, v, 0.1, 0.9)
        assert_close(w, w_ref, what="sgd after a GEMM-written gradient")
        assert_close(v, v_ref, what="sgd velocity after a GEMM-written gradient")
    big = dev.zeros((2048, 1025))                                   # past the hint's size
    dev.gemm(rand(rng, 1, 2048), rand(rng, 1, 1025), big, trans_a=True)
    assert big.size > dev.UPDATE_HINT_ELEMENTS and dev._update_threads(big) is None
    del rows                                   # a dead array's entry matches no new one
    fresh = dev.zeros((300, 200))
    assert dev._update_threads(fresh) is None


def test_cpu_sgd_state_never_makes_subnormal_products():
    """A velocity the next update would multiply into a subnormal (by the
    momentum or the learning rate) is set to 0: arithmetic on subnormals
    is many times slower on x86 CPUs, and the weight change it stands for
    is below 1e-35."""
    from hetnet.devices.cpu import CPUDevice
    dev = CPUDevice(num_threads=1)
    tiny = np.finfo(F32).tiny
    lr, momentum = 1e-3, 0.9
    w = np.ones(6, dtype=F32)
    g = np.zeros(6, dtype=F32)
    v = np.array([2e-38, 1e-36, 1e-34, 1.0, -2e-38, -1e-30], dtype=F32)
    dev.sgd_update(w, g, v, lr, momentum)
    keep = np.abs(v) > 0
    np.testing.assert_array_equal(keep, [False, False, True, True, False, True])
    assert (np.abs(momentum * v[keep]) >= tiny).all() and (np.abs(lr * v[keep]) >= tiny).all()
    assert_close(w, 1.0 - lr * momentum * np.array([0, 0, 1e-34, 1.0, 0, -1e-30], dtype=F32),
                 what="weights after tiny velocities")


@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 5, 3, 2, 2), (1, 7), (4, 3)])
def test_swap_leading_axes(device, ref, rng, shape):
    x = rand(rng, *shape)
    expected = ref.swap_leading_axes(x)
    np.testing.assert_array_equal(expected, np.swapaxes(x, 0, 1))
    y = device.swap_leading_axes(put(device, x))
    assert tuple(y.shape) == (shape[1], shape[0]) + shape[2:]
    assert_close(host(device, y), expected, rtol=0, what="swap_leading_axes")
    # from a view of a larger array, into a given buffer
    big = rand(rng, *((shape[0] + 2,) + shape[1:]))
    part = device.batch_slice(put(device, big), 1, 1 + shape[0])
    out = device.empty((shape[1], shape[0]) + shape[2:])
    device.swap_leading_axes(part, out=out)
    assert_close(host(device, out), np.swapaxes(big[1:1 + shape[0]], 0, 1), rtol=0,
                 what="swap_leading_axes of a view")
