"""The batch-norm, dropout, pooling and residual-sum operations on every
device against the numpy reference; the reference's direct convolution
against the im2col + GEMM path."""

import numpy as np
import pytest

from conftest import assert_close
from hetnet.devices.base import dropout_key, mix32

F32 = np.float32


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(F32)


POOL_CASES = [  # (shape, k, s, p)
    ((2, 3, 7, 7), (2, 2), (2, 2), (1, 1)),
    ((1, 2, 6, 5), (3, 3), (2, 1), (1, 0)),
    ((3, 1, 5, 6), (3, 2), (1, 2), (1, 1)),
    ((2, 2, 8, 8), (2, 2), (2, 2), (0, 0)),
    ((2, 3, 4, 5), (4, 5), (1, 1), (0, 0)),      # global
    ((16, 8, 32, 32), (2, 2), (2, 2), (1, 1)),   # large enough for the CPU's threads
]


@pytest.mark.parametrize("shape,k,s,p", POOL_CASES)
def test_maxpool2d_padded(device, ref, rng, shape, k, s, p):
    x = rand(rng, *shape)
    y_ref, am_ref = ref.maxpool2d_padded(x, *k, *s, *p)
    y, am = device.maxpool2d_padded(device.asarray(x), *k, *s, *p)
    assert_close(device.to_host(y), y_ref, rtol=0, what="maxpool padded y")
    np.testing.assert_array_equal(device.to_host(am), am_ref)
    assert (am_ref >= 0).all()
    dy = rand(rng, *y_ref.shape)
    dx = device.maxpool2d_backward(device.asarray(dy), am, shape)
    assert_close(device.to_host(dx), ref.maxpool2d_backward(dy, am_ref, shape), what="dx")


def test_maxpool2d_padded_without_padding_is_maxpool2d(ref, rng):
    x = rand(rng, 2, 3, 7, 6)
    for a, b in zip(ref.maxpool2d_padded(x, 3, 2, 2, 2, 0, 0), ref.maxpool2d(x, 3, 2, 2, 2)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape,k,s,p", POOL_CASES)
def test_avgpool2d(device, ref, rng, shape, k, s, p):
    x = rand(rng, *shape)
    y_ref = ref.avgpool2d(x, *k, *s, *p)
    y = device.avgpool2d(device.asarray(x), *k, *s, *p)
    assert_close(device.to_host(y), y_ref, what="avgpool y")
    dy = rand(rng, *y_ref.shape)
    dx_ref = ref.avgpool2d_backward(dy, shape, *k, *s, *p)
    dx = device.avgpool2d_backward(device.asarray(dy), shape, *k, *s, *p)
    assert_close(device.to_host(dx), dx_ref, what="avgpool dx")
    # the adjoint: <avgpool(x), dy> == <x, avgpool_backward(dy)>
    assert float((y_ref.astype(np.float64) * dy).sum()) == pytest.approx(
        float((x.astype(np.float64) * dx_ref).sum()), rel=1e-5, abs=1e-6)


def test_avgpool2d_counts_padding_in_the_divisor(ref):
    x = np.ones((1, 1, 2, 2), dtype=F32)
    y = ref.avgpool2d(x, 2, 2, 2, 2, 1, 1)
    np.testing.assert_allclose(y, np.full((1, 1, 2, 2), 0.25))


# the last two: large enough that the CPU kernels split them over threads
BN_SHAPES = [(5, 3), (4, 3, 5, 6), (2, 7, 3, 3), (33, 2), (32, 3, 33, 31), (2000, 70)]


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("act", ["identity", "relu", "tanh"])
def test_batchnorm(device, ref, rng, shape, training, act):
    c = shape[1]
    x = rand(rng, *shape) * 2 + 0.5
    gamma, beta = rand(rng, c), rand(rng, c)
    rm, rv = rand(rng, c), (rng.random(c) + 0.5).astype(F32)
    dy = rand(rng, *shape)
    outs = []
    for dev in (ref, device):
        args = [dev.asarray(a) for a in (x, gamma, beta)]
        mean, invstd = dev.empty((c,)), dev.empty((c,))
        drm, drv = dev.asarray(rm), dev.asarray(rv)
        y = dev.batchnorm_forward(args[0], args[1], args[2], mean, invstd, drm, drv,
                                  0.1, 1e-5, training, act)
        ddy = dev.asarray(dy)
        dg, db = dev.empty((c,)), dev.empty((c,))
        dx = dev.batchnorm_backward(args[0], y, ddy, args[1], mean, invstd, training, act,
                                    dg, db)
        dg2, db2 = dev.empty((c,)), dev.empty((c,))
        none = dev.batchnorm_backward(args[0], y, dev.asarray(dy), args[1], mean, invstd,
                                      training, act, dg2, db2, need_dx=False)
        assert none is None
        outs.append([dev.to_host(a) for a in (y, mean, invstd, drm, drv, dx, dg, db, ddy,
                                              dg2, db2)])
    names = ("y", "mean", "invstd", "running_mean", "running_var", "dx", "dgamma", "dbeta",
             "dy through the activation", "dgamma (no dx)", "dbeta (no dx)")
    for a, b, what in zip(outs[1], outs[0], names):
        assert_close(a, b, what=what)
    if not training:
        np.testing.assert_array_equal(outs[1][3], rm)
        np.testing.assert_array_equal(outs[1][4], rv)


def test_batchnorm_reference_statistics(ref, rng):
    """PyTorch's rule, spelled out: biased variance to normalise, unbiased
    variance into the running statistics."""
    x = rand(rng, 6, 2, 3, 3)
    mean, invstd = np.empty(2, F32), np.empty(2, F32)
    rm, rv = np.zeros(2, F32), np.ones(2, F32)
    ref.batchnorm_forward(x, np.ones(2, F32), np.zeros(2, F32), mean, invstd, rm, rv,
                          0.25, 1e-5, True)
    x64 = x.astype(np.float64)
    mu, var = x64.mean(axis=(0, 2, 3)), x64.var(axis=(0, 2, 3))
    assert_close(mean, mu)
    assert_close(invstd, 1 / np.sqrt(var + 1e-5))
    assert_close(rm, 0.25 * mu)
    assert_close(rv, 0.75 + 0.25 * x64.var(axis=(0, 2, 3), ddof=1))


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("n", [1, 7, 1000, 300001])
def test_dropout(device, ref, rng, p, n):
    x = rand(rng, n)
    key = dropout_key(12345, 3)
    y_ref = ref.dropout(x, p, key)
    y = device.to_host(device.dropout(device.asarray(x), p, key))
    np.testing.assert_array_equal(y, y_ref)          # the same mask to the bit
    if n >= 1000 and 0 < p < 1:
        kept = (y_ref != 0).mean()
        assert abs(kept - (1 - p)) < 4 * np.sqrt(p * (1 - p) / n)
        np.testing.assert_allclose(y_ref[y_ref != 0], x[y_ref != 0] / (1 - p), rtol=1e-6)
    xd = device.asarray(x)
    device.dropout(xd, p, key, out=xd)                # in place
    np.testing.assert_array_equal(device.to_host(xd), y_ref)


def test_dropout_masks_differ_between_steps_and_seeds(ref):
    x = np.ones(4096, F32)
    masks = [ref.dropout(x, 0.5, dropout_key(seed, step)) != 0
             for seed in (1, 2) for step in (0, 1)]
    for i in range(len(masks)):
        for j in range(i):
            agree = (masks[i] == masks[j]).mean()
            assert 0.45 < agree < 0.55, (i, j, agree)


def test_mix32_matches_on_ints_and_arrays():
    v = np.array([0, 1, 2 ** 31, 2 ** 32 - 1], dtype=np.uint32)
    assert [int(a) for a in mix32(v)] == [mix32(int(a)) for a in v]
    assert mix32(1) != 1 and 0 <= dropout_key(2 ** 40, 7) < 2 ** 32


@pytest.mark.parametrize("act", ["identity", "relu", "sigmoid"])
def test_add_activation(device, ref, rng, act):
    a, b = rand(rng, 3, 4, 5), rand(rng, 3, 4, 5)
    y_ref = ref.add_activation(a, b, act)
    da, db = device.asarray(a), device.asarray(b)
    assert_close(device.to_host(device.add_activation(da, db, act)), y_ref, what="add")
    device.add_activation(da, db, act, out=da)
    assert_close(device.to_host(da), y_ref, what="add in place")


CONV_CASES = [  # (n, c, h, w, f, kh, kw, sh, sw, ph, pw)
    (2, 1, 8, 8, 3, 3, 3, 1, 1, 0, 0),
    (3, 2, 7, 9, 2, 3, 2, 2, 1, 1, 0),
    (1, 3, 6, 6, 4, 5, 5, 1, 1, 4, 4),
    (2, 2, 9, 7, 3, 3, 3, 2, 3, 1, 2),
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("act", ["identity", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_reference_direct_conv_matches_im2col_path(ref, rng, case, act, bias):
    """The reference convolves directly; the im2col + GEMM composition
    (hetnet.devices.compose, on the reference's own im2col and GEMM) must
    agree, forward and backward."""
    from hetnet.devices.compose import Im2colConvolution

    class Im2colReference(Im2colConvolution, type(ref)):
        pass
    composed = Im2colReference()
    n, c, h, w, f, kh, kw, sh, sw, ph, pw = case
    x, wt = rand(rng, n, c, h, w), rand(rng, f, c, kh, kw)
    b = rand(rng, f) if bias else None
    args = ((sh, sw), (ph, pw))
    res = []
    for dev in (ref, composed):
        y = dev.conv2d(x, wt, b, *args, act)
        dy = np.random.default_rng(1).standard_normal(y.shape).astype(F32)
        dw, db = np.empty_like(wt), (np.empty(f, F32) if bias else None)
        dx = dev.conv2d_backward(x, wt, y, dy, *args, act, dw, db)
        res.append([y, dx, dw] + ([db] if bias else []))
    for a, b_, what in zip(res[0], res[1], ("y", "dx", "dW", "db")):
        assert_close(a, b_, what=what)


@pytest.mark.parametrize("case", CONV_CASES[:2])
def test_conv_without_bias_on_every_device(device, ref, rng, case):
    n, c, h, w, f, kh, kw, sh, sw, ph, pw = case
    x, wt = rand(rng, n, c, h, w), rand(rng, f, c, kh, kw)
    args = ((sh, sw), (ph, pw))
    y_ref = ref.conv2d(x, wt, None, *args, "relu")
    xd, wd = device.asarray(x), device.asarray(wt)
    y = device.conv2d(xd, wd, None, *args, "relu")
    assert_close(device.to_host(y), y_ref, what="conv y")
    dy = rand(rng, *y_ref.shape)
    dw_ref = np.empty_like(wt)
    dx_ref = ref.conv2d_backward(x, wt, y_ref, dy.copy(), *args, "relu", dw_ref, None)
    dw = device.zeros(wt.shape)
    dx = device.conv2d_backward(xd, wd, y, device.asarray(dy), *args, "relu", dw, None)
    assert_close(device.to_host(dx), dx_ref, what="conv dx")
    assert_close(device.to_host(dw), dw_ref, what="conv dW")


def test_ops_on_views_into_larger_buffers(device, ref, rng):
    """Every new op reads and writes views that start inside a buffer (the
    OpenCL kernels take element offsets), leaving the rest untouched."""
    big = rand(rng, 7, 3, 5, 6)

    def view(a):
        buf = device.asarray(np.concatenate([big[:2], a, big[:2]]))
        return buf, device.batch_slice(buf, 2, 2 + a.shape[0])

    x = rand(rng, 3, 3, 5, 6)
    _, xv = view(x)
    ybuf, yv = view(np.zeros_like(x))
    device.add_activation(xv, xv, "relu", out=yv)
    got = device.to_host(ybuf)
    assert_close(got[2:5], ref.add_activation(x, x, "relu"), what="add on views")
    np.testing.assert_array_equal(got[:2], big[:2])
    np.testing.assert_array_equal(got[5:], big[:2])
    dbuf, dv = view(np.zeros_like(x))
    device.dropout(xv, 0.5, 99, out=dv)
    np.testing.assert_array_equal(device.to_host(dbuf)[2:5], ref.dropout(x, 0.5, 99))
    pbuf, pv = view(np.zeros((3, 3, 5, 6), F32))
    out = device.avgpool2d(xv, 3, 3, 1, 1, 1, 1, out=pv)
    assert_close(device.to_host(pbuf)[2:5], ref.avgpool2d(x, 3, 3, 1, 1, 1, 1), what="avgpool")
    dx = device.avgpool2d_backward(out, x.shape, 3, 3, 1, 1, 1, 1)
    assert_close(device.to_host(dx), ref.avgpool2d_backward(ref.avgpool2d(x, 3, 3, 1, 1, 1, 1),
                                                            x.shape, 3, 3, 1, 1, 1, 1), what="dx")
    c = 3
    stats = device.asarray(np.concatenate([np.ones(c, F32) * 0.5, np.zeros(4 * c, F32)]))
    g, b, mean, inv = (device.batch_slice(stats, i * c, (i + 1) * c) for i in range(4))
    rm, rv = device.zeros((c,)), device.asarray(np.ones(c, F32))
    bbuf, bv = view(np.zeros_like(x))
    device.batchnorm_forward(xv, g, b, mean, inv, rm, rv, 0.1, 1e-5, True, "relu", out=bv)
    r = [np.full(c, 0.5, F32), np.zeros(c, F32), np.empty(c, F32), np.empty(c, F32),
         np.zeros(c, F32), np.ones(c, F32)]
    assert_close(device.to_host(bbuf)[2:5], ref.batchnorm_forward(x, *r, 0.1, 1e-5, True, "relu"),
                 what="batchnorm on views")
    assert_close(device.to_host(mean), r[2], what="mean into a view")
