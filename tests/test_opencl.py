"""The OpenCL device in depth, beyond the shared device matrix
(tests/test_ops.py, tests/test_layer_ops.py, tests/test_gradients.py run
every op and layer on OpenCL against the numpy reference): all five GEMM
kernels, several tile configurations, offset views into every operation,
memory and transfers, kernel launching from C and pyopencl, device
discovery and its error messages, and a LeNet-5 training step against the
CPU device.

Runs on any OpenCL device; CI uses PoCL (``pip install pyopencl
pocl-binary-distribution``).  ``HETNET_TEST_OPENCL="P:D"`` (or
``PYOPENCL_CTX``) picks the device; otherwise the first device that can
build a kernel.  Every program is built once for the whole module.
"""


import numpy as np
import pytest

cl = pytest.importorskip("pyopencl")

import hetnet as hn  # noqa: E402
from conftest import assert_close, working_opencl_device  # noqa: E402
from hetnet.devices.opencl import platform as plat  # noqa: E402
from hetnet.devices.opencl import (DeviceNotFoundError, GemmConfig, OpenCLDevice,  # noqa: E402
                                   PyOpenCLMissingError, opencl_devices)
from hetnet.devices.reference import NumpyDevice  # noqa: E402

F32, I32 = np.float32, np.int32
REF = NumpyDevice()


@pytest.fixture(scope="module")
def dev():
    d = working_opencl_device()
    if d is None:
        pytest.skip("no working OpenCL device")
    return d


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(F32)


POISON = 1.0e30


def put(dev, a, view, dtype=F32):
    """Upload ``a``; with ``view``, as rows 2.. of a larger poisoned array,
    so the device array starts at a nonzero offset into its buffer."""
    a = np.asarray(a, dtype=dtype)
    if not view:
        return dev.asarray(a, dtype)
    big = np.full((a.shape[0] + 3,) + a.shape[1:], POISON if dtype == F32 else -7, dtype)
    big[2:2 + a.shape[0]] = a
    d = dev.batch_slice(dev.asarray(big, dtype), 2, 2 + a.shape[0])
    assert d.offset > 0 and d.shape == a.shape
    return d


def out_view(dev, shape, view, dtype=F32):
    """An output array (poisoned): fresh, or a view into a larger buffer."""
    fill = POISON if dtype == F32 else -7
    return put(dev, np.full(shape, fill, dtype), view, dtype)


def check_untouched(dev, view_arr):
    """The rows around an output view must still hold the poison."""
    row = view_arr.size // view_arr.shape[0]
    host = np.empty((view_arr.shape[0] + 3) * row, view_arr.dtype)   # see put()
    cl.enqueue_copy(dev.queue, host, view_arr.base_data, is_blocking=True)
    off = view_arr.offset // view_arr.dtype.itemsize
    outside = np.concatenate([host[:off], host[off + view_arr.size:]])
    fill = POISON if view_arr.dtype == F32 else -7
    assert (outside == fill).all(), "a kernel wrote outside its output view"


# Each op on fresh (offset-0) arrays against the reference is the shared
# device matrix's job (tests/test_ops.py runs it on OpenCL too); here every
# op reads and writes views at a nonzero offset into a poisoned buffer, which
# only the OpenCL kernels' offset arguments can get wrong.
VIEWS = pytest.mark.parametrize("view", [True], ids=["view"])


# --------------------------------------------------------------------- GEMM
GEMM_SHAPES = [(1, 1, 1), (7, 13, 5), (33, 65, 17), (70, 3, 129)]
TRANS = [(False, False), (True, False), (False, True), (True, True)]
CONFIGS = [GemmConfig(64, 64, 16, 4, 4), GemmConfig(128, 128, 16, 8, 8),
           GemmConfig(128, 64, 8, 8, 8)]


def _operands(rng, m, n, k, ta, tb, batch_a=None, batch_b=None):
    a = rand(rng, *((batch_a,) if batch_a else ()), *((k, m) if ta else (m, k)))
    b = rand(rng, *((batch_b,) if batch_b else ()), *((n, k) if tb else (k, n)))
    return a, b


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("m,n,k", GEMM_SHAPES)
def test_gemm_versions(dev, rng, version, m, n, k):
    for ta, tb in TRANS:
        a, b = _operands(rng, m, n, k, ta, tb)
        c = rand(rng, m, n)
        expected = REF.gemm(a, b, c.copy(), ta, tb, alpha=0.7, beta=-0.4)
        out = put(dev, c, view=True)
        dev.gemm_variant(version, put(dev, a, True), put(dev, b, False), out, ta, tb,
                         alpha=0.7, beta=-0.4)
        assert_close(dev.to_host(out), expected, rtol=1e-5, what=f"v{version} {ta}{tb}")
        check_untouched(dev, out)
        got = dev.gemm_variant(version, put(dev, a, False), put(dev, b, True), None, ta, tb)
        assert_close(dev.to_host(got), REF.gemm(a, b, None, ta, tb), rtol=1e-5,
                     what=f"v{version} {ta}{tb} new c")


def test_gemm_beta_zero_ignores_garbage_c(dev, rng):
    a, b = rand(rng, 9, 6), rand(rng, 6, 10)
    c = put(dev, np.full((9, 10), np.nan, F32), False)
    for version in (1, 2, 3, 4, 5):
        dev.gemm_variant(version, put(dev, a, False), put(dev, b, False), c, beta=0.0)
        assert_close(dev.to_host(c), a.astype(np.float64) @ b, rtol=1e-5)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "x".join(map(str, c)))
def test_gemm_configs(dev, rng, cfg):
    """Every tile configuration, across tile edges, aligned and unaligned."""
    for (m, n, k) in [(cfg.bm + 3, cfg.bn - 1, 2 * cfg.bk + 5), (2 * cfg.bm, cfg.bn, 64),
                      (5, 2 * cfg.bn + 4, 7)]:
        for ta, tb in TRANS:
            a, b = _operands(rng, m, n, k, ta, tb)
            c = rand(rng, m, n)
            out = put(dev, c, view=False)
            dev.gemm_variant("main", put(dev, a, False), put(dev, b, False), out, ta, tb,
                             alpha=1.3, beta=0.5, config=cfg)
            assert_close(dev.to_host(out), REF.gemm(a, b, c.copy(), ta, tb, 1.3, 0.5),
                         rtol=1e-5, what=f"{cfg} {m}x{n}x{k} {ta}{tb}")


@pytest.mark.parametrize("shared", ["a", "b", "none"])
@VIEWS
def test_gemm_batched(dev, rng, shared, view):
    nb, m, n, k = 4, 21, 10, 19
    for ta, tb in TRANS:
        a, b = _operands(rng, m, n, k, ta, tb, None if shared == "a" else nb,
                         None if shared == "b" else nb)
        c = rand(rng, nb, m, n)
        out = put(dev, c, view)
        dev.gemm(put(dev, a, view and shared != "a"), put(dev, b, view and shared != "b"),
                 out, ta, tb, alpha=0.5, beta=2.0)
        assert_close(dev.to_host(out), REF.gemm(a, b, c.copy(), ta, tb, 0.5, 2.0),
                     rtol=1e-5, what=f"batched {shared} {ta}{tb}")
        if view:
            check_untouched(dev, out)


@pytest.mark.parametrize("nb", [1, 3, 8, 33])
@VIEWS
def test_gemm_batch_summed(dev, rng, nb, view):
    """c (M, N) += sum over the batch: the weight gradient of a convolution,
    with the batch split over several groups when the output is small."""
    m, n, k = 6, 25, 49
    for ta, tb in TRANS:
        a, b = _operands(rng, m, n, k, ta, tb, nb, nb)
        c = rand(rng, m, n)
        out = put(dev, c, view)
        dev.gemm(put(dev, a, view), put(dev, b, view), out, ta, tb, alpha=0.9, beta=1.0)
        assert_close(dev.to_host(out), REF.gemm(a, b, c.copy(), ta, tb, 0.9, 1.0),
                     rtol=1e-5, what=f"batch-summed nb={nb} {ta}{tb}")
    # one 2-D operand shared by every batch entry
    a, b = rand(rng, m, k), rand(rng, nb, k, n)
    got = dev.gemm(put(dev, a, False), put(dev, b, view), put(dev, np.zeros((m, n)), False))
    assert_close(dev.to_host(got), REF.gemm(a, b, np.zeros((m, n), F32)), rtol=1e-5)


def test_tf32_gemm_on_nvidia(dev, rng):
    """The tensor-core path (NVIDIA only) agrees to TF32 precision."""
    if "nvidia" not in dev.cl_device.platform.name.lower():
        pytest.skip("TF32 tensor-core GEMM needs NVIDIA's OpenCL")
    tdev = OpenCLDevice.from_spec(dev.cl_device, precision="tf32", autotune=False)
    for (m, n, k), (ta, tb) in zip([(130, 67, 45), (256, 256, 256), (7, 300, 33),
                                    (64, 64, 64)], TRANS):
        a, b = _operands(rng, m, n, k, ta, tb)
        got = tdev.gemm(tdev.asarray(a), tdev.asarray(b), None, ta, tb)
        assert_close(tdev.to_host(got), REF.gemm(a, b, None, ta, tb), rtol=3e-3,
                     what="tf32")


def test_gemm_variant_rejects_batched_teaching_kernels(dev, rng):
    with pytest.raises(ValueError, match="2-D"):
        dev.gemm_variant(2, dev.asarray(rand(rng, 2, 3, 4)), dev.asarray(rand(rng, 4, 5)))
    with pytest.raises(ValueError, match="version"):
        dev.gemm_variant(7, dev.asarray(rand(rng, 3, 4)), dev.asarray(rand(rng, 4, 5)))


# ------------------------------------------------------- every op on views
CONV_CASES = [(2, 2, 7, 9, 3, 2, 2, 1, 1, 0), (1, 3, 6, 6, 5, 5, 1, 1, 4, 4),
              (3, 1, 8, 8, 3, 3, 1, 1, 0, 0)]


@pytest.mark.parametrize("case", CONV_CASES)
@VIEWS
def test_im2col_col2im(dev, rng, case, view):
    n, c, h, w, kh, kw, sh, sw, ph, pw = case
    x = rand(rng, n, c, h, w)
    expected = REF.im2col(x, kh, kw, sh, sw, ph, pw)
    out = out_view(dev, expected.shape, view)
    dev.im2col(put(dev, x, view), kh, kw, sh, sw, ph, pw, out=out)
    assert_close(dev.to_host(out), expected, rtol=0, what="im2col")
    g = rand(rng, *expected.shape)
    dx = out_view(dev, x.shape, view)
    dev.col2im(put(dev, g, view), x.shape, kh, kw, sh, sw, ph, pw, out=dx)
    assert_close(dev.to_host(dx), REF.col2im(g, x.shape, kh, kw, sh, sw, ph, pw),
                 rtol=1e-6, what="col2im")
    if view:
        check_untouched(dev, out)
        check_untouched(dev, dx)


@pytest.mark.parametrize("k,s", [(2, 2), (3, 2), (3, 1), ((2, 3), (2, 3))])
@VIEWS
def test_maxpool(dev, rng, k, s, view):
    kh, kw = (k, k) if isinstance(k, int) else k
    sh, sw = (s, s) if isinstance(s, int) else s
    x = rng.integers(-3, 4, size=(3, 2, 9, 8)).astype(F32)     # many ties
    y_ref, am_ref = REF.maxpool2d(x, kh, kw, sh, sw)
    y, am = out_view(dev, y_ref.shape, view), out_view(dev, y_ref.shape, view, I32)
    dev.maxpool2d(put(dev, x, view), kh, kw, sh, sw, out=y, argmax=am)
    assert_close(dev.to_host(y), y_ref, rtol=0, what="maxpool y")
    np.testing.assert_array_equal(dev.to_host(am), am_ref)
    dy = rand(rng, *y_ref.shape)
    dx = out_view(dev, x.shape, view)
    dev.maxpool2d_backward(put(dev, dy, view), put(dev, am_ref, view, I32), x.shape, out=dx)
    assert_close(dev.to_host(dx), REF.maxpool2d_backward(dy, am_ref, x.shape), rtol=1e-6,
                 what="maxpool dx")
    if view:
        for arr in (y, am, dx):
            check_untouched(dev, arr)


@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 5, 6)])
@pytest.mark.parametrize("act", ["identity", "relu", "sigmoid", "tanh", None])
@VIEWS
def test_bias_activation_and_bias_grad(dev, rng, shape, act, view):
    y, b = rand(rng, *shape), rand(rng, shape[1])
    yd = put(dev, y, view)
    if act is None:
        dev.bias_add(yd, put(dev, b, False))
        expected = REF.bias_add(y.copy(), b)
    else:
        dev.bias_activation(yd, put(dev, b, False), act)
        expected = REF.bias_activation(y.copy(), b, act)
    assert_close(dev.to_host(yd), expected, rtol=1e-6, what=f"bias {act}")
    db = out_view(dev, (shape[1],), False)
    dev.bias_grad(put(dev, y, view), out=db)
    assert_close(dev.to_host(db), REF.bias_grad(y), rtol=1e-5, what="bias_grad")
    if view:
        check_untouched(dev, yd)
    if act is not None:      # the fused backward (act_bias_grad) on the same views
        out = REF.activation(act, y)
        dy = rand(rng, *shape)
        dyd, db = put(dev, dy, view), out_view(dev, (shape[1],), view)
        dev.activation_bias_backward(act, put(dev, out, view), dyd, db)
        expected = REF.activation_backward(act, out, dy) if act != "identity" else dy
        assert_close(dev.to_host(dyd), expected, rtol=1e-5, what=f"{act} backward")
        assert_close(dev.to_host(db), REF.bias_grad(expected), rtol=1e-5, what="its bias grad")
        if view:
            check_untouched(dev, dyd)
            check_untouched(dev, db)


@pytest.mark.parametrize("name", ["identity", "relu", "sigmoid", "tanh", "softmax"])
@VIEWS
def test_activations(dev, rng, name, view):
    x = 3 * rand(rng, 6, 11)
    y_ref = REF.activation(name, x)
    y = out_view(dev, x.shape, view)
    dev.activation(name, put(dev, x, view), out=y)
    assert_close(dev.to_host(y), y_ref, rtol=1e-6, what=name)
    xi = put(dev, x, view)                     # in place: out is x
    dev.activation(name, xi, out=xi)
    assert_close(dev.to_host(xi), y_ref, rtol=1e-6, what=f"{name} in place")
    dy = rand(rng, *x.shape)
    dx = out_view(dev, x.shape, view)
    dev.activation_backward(name, put(dev, y_ref, view), put(dev, dy, view), out=dx)
    assert_close(dev.to_host(dx), REF.activation_backward(name, y_ref, dy), rtol=1e-6,
                 what=f"{name} backward")
    if view:
        check_untouched(dev, y)
        check_untouched(dev, dx)
    with pytest.raises(ValueError, match="activation"):
        dev.activation("swish", put(dev, x, False))


@pytest.mark.parametrize("n,k", [(7, 5), (5000, 3)])      # 5000: several groups
@pytest.mark.parametrize("weighted", [False, True])
@VIEWS
def test_losses(dev, rng, n, k, weighted, view):
    z = 4 * rand(rng, n, k)
    labels = rng.integers(0, k, size=n).astype(I32)
    targets = rng.random((n, k)).astype(F32)
    w = rng.random(n).astype(F32) if weighted else None
    wd = put(dev, w, view) if weighted else None
    cases = [("softmax_cross_entropy", labels, I32),
             ("sigmoid_binary_cross_entropy", targets, F32), ("mse", targets, F32)]
    for op, t, tdtype in cases:
        loss_ref, grad_ref = getattr(REF, op)(z, t, w)
        g = out_view(dev, z.shape, view)
        before = dev.transfers["to_host"]
        loss, grad = getattr(dev, op)(put(dev, z, view), put(dev, t, view, tdtype), wd,
                                      grad_out=g)
        assert dev.transfers["to_host"] == before, "a loss must not read back"
        assert isinstance(loss, cl.array.Array) and loss.shape == (1,)
        assert grad is g
        assert_close(dev.to_host(loss), loss_ref, rtol=1e-5, what=op)
        assert_close(dev.to_host(grad), grad_ref, rtol=1e-5, what=f"{op} grad")
        if view:
            check_untouched(dev, g)


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 1e-2),
                                                  (0.8, True, 0.0), (0.0, False, 0.1)])
@VIEWS
def test_sgd(dev, rng, momentum, nesterov, wd, view):
    w, g, v = rand(rng, 9, 4), rand(rng, 9, 4), rand(rng, 9, 4)
    wr, vr = w.copy(), v.copy()
    REF.sgd_update(wr, g, vr if momentum else None, 0.05, momentum, wd, nesterov)
    wdv, vd = put(dev, w, view), put(dev, v, view)
    dev.sgd_update(wdv, put(dev, g, view), vd if momentum else None, 0.05, momentum, wd,
                   nesterov)
    assert_close(dev.to_host(wdv), wr, rtol=1e-6, what="sgd w")
    assert_close(dev.to_host(vd), vr if momentum else v, rtol=1e-6, what="sgd v")


@VIEWS
def test_adam(dev, rng, view):
    w, m, v = rand(rng, 5, 6), rand(rng, 5, 6), rng.random((5, 6)).astype(F32)
    wr, mr, vr = w.copy(), m.copy(), v.copy()
    wd_, md, vd = put(dev, w, view), put(dev, m, view), put(dev, v, view)
    for t in (1, 2, 3):
        g = rand(rng, 5, 6)
        REF.adam_update(wr, g, mr, vr, 1e-2, 0.9, 0.999, 1e-8, t, weight_decay=1e-3)
        dev.adam_update(wd_, put(dev, g, view), md, vd, 1e-2, 0.9, 0.999, 1e-8, t,
                        weight_decay=1e-3)
    for a, b, what in ((wd_, wr, "w"), (md, mr, "m"), (vd, vr, "v")):
        assert_close(dev.to_host(a), b, rtol=1e-5, what=f"adam {what}")


@pytest.mark.parametrize("n", [1, 1000, 300001])             # 300001: two passes
@VIEWS
def test_sum_axpy_scale(dev, rng, n, view):
    x, y = rand(rng, n), rand(rng, n)
    s = dev.sum(put(dev, x, view))
    assert s.shape == (1,)
    assert_close(dev.to_host(s), REF.sum(x), rtol=1e-5, atol=1e-3, what="sum")
    yd = put(dev, y, view)
    dev.axpy(-0.3, put(dev, x, view), yd)
    assert_close(dev.to_host(yd), REF.axpy(-0.3, x, y.copy()), rtol=1e-6, what="axpy")
    dev.scale(2.5, yd)
    assert_close(dev.to_host(yd), REF.scale(2.5, REF.axpy(-0.3, x, y.copy())), rtol=1e-6)
    if view:
        check_untouched(dev, yd)


@VIEWS
def test_argmax(dev, rng, view):
    x = rng.integers(0, 3, size=(40, 7)).astype(F32)            # ties: first wins
    out = out_view(dev, (40,), view, I32)
    dev.argmax(put(dev, x, view), out=out)
    np.testing.assert_array_equal(dev.to_host(out), REF.argmax(x))
    if view:
        check_untouched(dev, out)


# ------------------------------------------------------------------ memory
def test_memory_ops_and_transfer_counts(dev, rng):
    x = rand(rng, 70, 300)                     # 84 kB: the staging path on a GPU
    before = dict(dev.transfers)
    xd = dev.asarray(x)
    x[:] = 0                                   # the upload owns its own copy
    np.testing.assert_array_equal(dev.to_host(xd)[0], dev.to_host(xd)[0])
    assert dev.transfers["to_device"] == before["to_device"] + 1
    assert dev.transfers["bytes_to_device"] == before["bytes_to_device"] + x.nbytes
    assert dev.transfers["to_host"] == before["to_host"] + 2
    assert (dev.to_host(xd) != 0).any()
    v = dev.batch_slice(xd, 3, 9)
    assert v.shape == (6, 300) and v.offset == 3 * 300 * 4
    cp = dev.copy(v)
    np.testing.assert_array_equal(dev.to_host(cp), dev.to_host(xd)[3:9])
    for shape in ((18, 100), (-1, 50), 1800, (2, 3, -1)):
        r = dev.reshape(v, shape)
        np.testing.assert_array_equal(dev.to_host(r), dev.to_host(xd)[3:9].reshape(shape))
        assert r.offset == v.offset and r.base_data is v.base_data
    with pytest.raises(ValueError, match="reshape"):
        dev.reshape(v, (7, 7))
    assert dev.batch_slice(v, 4, 99).shape == (2, 300)      # clipped like a slice
    pending = dev.asarray(rand(rng, 3))      # a small, directly copied upload

    class Running:                           # an upload's event that has not run yet
        command_execution_status = cl.command_execution_status.RUNNING
    dev._keep(Running())
    assert isinstance(dev._pending[-1], Running), "events of running copies are kept"
    dev.synchronize()
    assert not dev._pending
    z = dev.zeros((4, 5), I32)
    assert z.dtype == I32 and not dev.to_host(z).any()
    labels = dev.asarray([3, 1, 2], dtype=I32)
    np.testing.assert_array_equal(dev.to_host(labels), [3, 1, 2])
    assert dev.to_host(dev.empty((0, 3))).shape == (0, 3)
    assert dev.to_host(pending).shape == (3,)
    dev.synchronize()


def test_staged_uploads_overlap_safely(dev, rng):
    """Uploads through the pinned staging ring (forced on, as on a GPU):
    more arrays than slots, growing sizes, the host arrays changed right
    after each call, and compute queued in between."""
    sdev = OpenCLDevice.from_spec(dev.cl_device, autotune=False, staging=True)
    arrays, uploaded = [], []
    for i in range(7):
        x = rand(rng, 100 + 50 * i, 200)          # >= 64 KiB: staged
        d = sdev.asarray(x)
        arrays.append(x.copy())
        x[:] = -1.0
        sdev.scale(2.0, d)                          # compute ordered after the copy
        uploaded.append(d)
    for x, d in zip(arrays, uploaded):
        np.testing.assert_array_equal(sdev.to_host(d), 2 * x)
    sdev.synchronize()


def test_device_attributes(dev):
    assert dev.kind in ("cpu", "gpu")
    assert dev.name.startswith("opencl:")
    assert dev.workspace_bytes == (256 << 20 if dev.kind == "gpu" else 16 << 20)


# --------------------------------------------------------------- discovery
def test_opencl_devices_lists_tuples(dev):
    found = opencl_devices()
    assert found and all(len(t) == 3 and t[2] in ("gpu", "cpu", "accelerator", "other")
                         for t in found)
    assert any(dev.name.endswith(d) for _, d, _ in found)


def test_bad_specs_are_refused(dev):
    with pytest.raises(DeviceNotFoundError, match="OpenCL devices present"):
        OpenCLDevice.from_spec("99:0")
    with pytest.raises(ValueError, match="not understood"):
        OpenCLDevice.from_spec("fastest")


def test_unregistered_nvidia_driver_is_explained(monkeypatch):
    monkeypatch.setattr(plat, "_nvidia_library_without_icd",
                        lambda: "/usr/lib/x86_64-linux-gnu/libnvidia-opencl.so.1")
    monkeypatch.setattr(plat.cl, "get_platforms", lambda: [])
    for spec in (None, "gpu", "0:0"):
        monkeypatch.delenv("PYOPENCL_CTX", raising=False)
        with pytest.raises(DeviceNotFoundError) as err:
            OpenCLDevice.from_spec(spec)
        msg = str(err.value)
        assert "/etc/OpenCL/vendors/nvidia.icd" in msg and plat.NVIDIA_ICD_FIX in msg
        assert isinstance(err.value, RuntimeError)


def test_no_gpu_is_an_error_not_a_fallback(dev, monkeypatch):
    if any(t == "gpu" for _, _, t in opencl_devices()):
        pytest.skip("this machine has an OpenCL GPU")
    monkeypatch.setattr(plat, "_nvidia_library_without_icd", lambda: None)
    with pytest.raises(DeviceNotFoundError, match="No OpenCL GPU device"):
        OpenCLDevice.from_spec("gpu")


def test_missing_pyopencl_says_how_to_install(monkeypatch):
    monkeypatch.setattr(plat, "cl", None)
    with pytest.raises(PyOpenCLMissingError, match="pip install pyopencl") as err:
        plat.opencl_devices()
    assert "pocl-binary-distribution" in str(err.value)
    assert isinstance(err.value, ImportError)


def test_kernel_sources_are_found():
    for name in ("gemm.cl", "conv.cl", "pool.cl", "elementwise.cl", "loss.cl", "optim.cl",
                 "reduce.cl"):
        assert "__kernel" in plat.kernel_source(name)


# ------------------------------------------------------------ whole model
def test_lenet5_training_step_matches_cpu(dev, rng):
    """One LeNet-5 loss-and-gradient evaluation and one SGD step from the
    same weights on the CPU device and on OpenCL agree to 1e-4."""
    hn = pytest.importorskip("hetnet")
    from conftest import make_device
    x = rng.standard_normal((16, 1, 28, 28)).astype(F32)
    y = rng.integers(0, 10, size=16)
    cpu_model = hn.models.lenet5(device=make_device("cpu"), seed=42)
    cl_model = hn.models.lenet5(device=dev, seed=42)
    cpu_model.build((1, 28, 28))
    cl_model.build((1, 28, 28))
    cl_model.set_weights(cpu_model.get_weights())
    loss_c, grads_c = cpu_model.loss_and_gradients(x, y)
    loss_g, grads_g = cl_model.loss_and_gradients(x, y)
    assert loss_g == pytest.approx(loss_c, rel=1e-4)
    for gc, gg in zip(grads_c, grads_g):
        assert_close(gg, gc, rtol=1e-4, what="lenet grad")
    for model in (cpu_model, cl_model):
        model.fit(x, y, epochs=1, batch_size=16, optimizer=hn.SGD(lr=0.05, momentum=0.9),
                  shuffle=False)
    for wc, wg in zip(cpu_model.get_weights(), cl_model.get_weights()):
        assert_close(wg, wc, rtol=1e-4, what="lenet weights after a step")


def test_overlapped_uploads_train_like_in_order(dev):
    """Mini-batches uploaded on a second queue into alternating buffers give
    exactly the weights of in-order uploads (no batch read before it arrived
    or after it was overwritten), and the CPU's to 1e-4."""
    import hetnet as hn
    from hetnet.devices.cpu import CPUDevice
    spec = dev.cl_device
    overlapped = OpenCLDevice.from_spec(spec, autotune=False, overlap_uploads=True)
    rng = np.random.default_rng(0)
    X = rng.random((203, 1, 12, 12)).astype(F32)
    y = rng.integers(0, 3, 203)
    weights = []
    for d in (dev, overlapped, CPUDevice(num_threads=2)):
        model = hn.Sequential([hn.Conv2D(1, 4, 3, padding=1), hn.ReLU(), hn.MaxPool2D(2),
                               hn.Flatten(), hn.Dense(144, 3)], device=d, seed=1)
        model.fit(X, y, epochs=2, batch_size=8, optimizer=hn.SGD(0.05, momentum=0.9))
        weights.append(model.get_weights())
        assert model.predict(X).shape == (203,)
    for a, b, c in zip(*weights):
        np.testing.assert_array_equal(a, b)
        assert_close(b, c, rtol=1e-4, what="overlapped OpenCL vs CPU")


def test_transfer_paths_round_trip(dev):
    rng = np.random.default_rng(1)
    for shape in ((3,), (70, 300)):            # below and above the staging threshold
        x = rng.standard_normal(shape).astype(F32)
        for up in (dev.asarray, dev.upload_pageable):
            d = up(x)
            np.testing.assert_array_equal(dev.to_host(d), x)
            np.testing.assert_array_equal(dev.download_pinned(d), x)


def test_kernels_are_enqueued_from_c_where_built(dev):
    """The extension is part of every build, so the test device (PoCL in CI,
    NVIDIA on the GPU machine) enqueues from C; and the loader it found is
    the one pyopencl uses."""
    from hetnet.devices.opencl import launch as ocl
    assert ocl._clenqueue is not None and dev.c_enqueue
    assert plat.entry_points() is not None


def test_c_and_pyopencl_enqueue_train_to_the_same_weights(dev):
    """The same kernels, queued by either path, in the same order: a
    convolutional net trained for two epochs ends with identical weights."""
    import hetnet as hn
    rng = np.random.default_rng(3)
    X = rng.random((37, 1, 10, 10)).astype(F32)
    y = rng.integers(0, 3, 37)
    weights = []
    for c_enqueue in (True, False):
        d = OpenCLDevice.from_spec(dev.cl_device, autotune=False, c_enqueue=c_enqueue)
        assert d.c_enqueue is c_enqueue
        model = hn.Sequential([hn.Conv2D(1, 4, 3, padding=1), hn.ReLU(), hn.MaxPool2D(2),
                               hn.Flatten(), hn.Dense(100, 16), hn.ReLU(), hn.Dense(16, 3)],
                              device=d, seed=2)
        model.fit(X, y, epochs=2, batch_size=8, optimizer=hn.Adam(0.01))
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make_opt", [lambda: hn.SGD(0.05, momentum=0.9), lambda: hn.Adam(0.01)],
                         ids=["sgd", "adam"])
def test_flat_update_trains_like_one_launch_per_array(dev, make_opt, monkeypatch):
    """The parameters in one buffer and one optimizer launch a step
    (hetnet.runtime.flatparams) give the weights of one launch per parameter array."""
    rng = np.random.default_rng(5)
    X = rng.random((37, 1, 10, 10)).astype(F32)
    y = rng.integers(0, 3, 37)
    weights, launches = [], []
    for flat in (True, False):
        d = OpenCLDevice.from_spec(dev.cl_device, autotune=False)
        d.flat_update = flat
        names = []
        launch = d.launch
        monkeypatch.setattr(d, "launch", lambda knl, *a: names.append(knl.function_name)
                            or launch(knl, *a))
        model = hn.Sequential([hn.Conv2D(1, 4, 3, padding=1), hn.ReLU(), hn.MaxPool2D(2),
                               hn.Flatten(), hn.Dense(100, 16), hn.ReLU(), hn.Dense(16, 3)],
                              device=d, seed=2)
        model.fit(X, y, epochs=2, batch_size=8, optimizer=make_opt())
        weights.append(model.get_weights())
        launches.append(sum(n.endswith("_step") for n in names))
    assert launches == [2 * 5, 2 * 5 * 6]           # 5 steps an epoch, 6 parameter arrays
    for a, b in zip(*weights):
        assert_close(a, b, rtol=1e-5, what="flat vs per-array updates")


def test_c_enqueue_failure_names_the_status(dev):
    """A launch the driver refuses (a work-group larger than the device
    allows) raises with the kernel, the sizes and OpenCL's status name."""
    from hetnet.devices.opencl import OpenCLLaunchError
    a, b = dev.asarray(np.ones(4)), dev.asarray(np.ones(4))
    too_big = 2 * dev.cl_device.max_work_group_size
    with pytest.raises(OpenCLLaunchError, match=r"axpy.*INVALID_WORK_GROUP_SIZE \(-54\)"):
        dev._launch(dev._k("axpy"), (too_big,), (too_big,), 1.0, a.base_data, 0,
                    b.base_data, 0, 4)
    dev.synchronize()


def test_c_launch_sets_every_argument_type(dev):
    """Buffers, int32 (negative too) and float32 arguments reach the kernel
    as pyopencl would set them; an int32 out of range or a wrong count is
    refused before anything is queued."""
    from hetnet.devices.opencl import _clenqueue as clenqueue
    if not dev.c_enqueue:
        pytest.skip("kernels are launched through pyopencl here")
    rng = np.random.default_rng(5)
    x, y = rand(rng, 300), rand(rng, 300)
    dx, dy = dev.asarray(x), dev.asarray(y)
    dev._launch(dev._k("axpy"), (dev._round(299),), (dev.wg,), np.float32(-2.5), dx.base_data,
                1, dy.base_data, 0, 299)
    expect = y.copy()
    expect[:299] += -2.5 * x[1:]
    np.testing.assert_allclose(dev.to_host(dy), expect, rtol=1e-6, atol=1e-6)   # fma or not
    knl = dev._k("axpy")
    with pytest.raises(OverflowError):
        dev._launch(knl, (dev.wg,), (dev.wg,), 1.0, dx.base_data, 0, dy.base_data, 0, 2 ** 31)
    with pytest.raises(ValueError, match="takes 6 arguments, got 4"):
        clenqueue.launch(dev.queue.int_ptr, knl.int_ptr, knl.hetnet_codes,
                         (1.0, dx.base_data, 0, dy.base_data), (dev.wg,), (dev.wg,))
    dev.synchronize()


def test_c_enqueue_true_without_the_extension_is_refused(dev, monkeypatch):
    from hetnet.devices.opencl import launch as ocl
    monkeypatch.setattr(ocl, "_clenqueue", None)
    with pytest.raises(RuntimeError, match="clenqueue is not built"):
        OpenCLDevice.from_spec(dev.cl_device, autotune=False, c_enqueue=True)
    assert not OpenCLDevice.from_spec(dev.cl_device, autotune=False).c_enqueue


def test_flatten_and_conv_views_use_the_device_reshape(dev, monkeypatch):
    """Layers and the default convolution reshape through the device (its
    fast views), never through pyopencl's Array.reshape or slicing."""
    import hetnet as hn
    import pyopencl.array as cla

    def refuse(*args, **kwargs):
        raise AssertionError("pyopencl's slow view path was taken")
    model = hn.Sequential([hn.Conv2D(1, 2, 3), hn.ReLU(), hn.MaxPool2D(2), hn.Flatten(),
                           hn.Dense(18, 2)], device=dev, seed=0)
    X = np.random.default_rng(0).random((6, 1, 8, 8)).astype(F32)
    model.fit(X, np.arange(6) % 2, epochs=1, batch_size=3)
    before = model.predict_logits(X)
    monkeypatch.setattr(cla.Array, "reshape", refuse)
    monkeypatch.setattr(cla.Array, "__getitem__", refuse)
    model.fit(X, np.arange(6) % 2, epochs=1, batch_size=3)
    monkeypatch.undo()
    assert model.predict_logits(X).shape == before.shape


def test_cost_cache_is_keyed_by_the_enqueue_path(dev):
    """Tables timed with kernels enqueued through pyopencl are not used for
    a device that enqueues from C (each launch costs differently)."""
    from hetnet.sched.costmodel import device_key
    other = OpenCLDevice.from_spec(dev.cl_device, autotune=False, c_enqueue=not dev.c_enqueue)
    assert f"c_enqueue={dev.c_enqueue}" in device_key(dev)
    assert device_key(other) != device_key(dev)
