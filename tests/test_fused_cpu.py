"""The fused per-tile CPU step (hetnet/_cpu/fused.pyx, hetnet.runtime.fused_cpu)
against the layer-by-layer CPU step: loss, every gradient, training, threads,
and the fusion policy's choice on the CPU."""

import copy

import numpy as np
import pytest

import hetnet as hn
from hetnet.layers import (AvgPool2D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,
                           GlobalAvgPool2D, MaxPool2D, ReLU, Sigmoid, Tanh)
from hetnet.runtime.fused import FusionUnsupported
from hetnet.runtime.fused_cpu import CPUFusedTrainer, choose_tile, descriptors

RTOL = 1e-5


def _rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / (np.abs(b).max() + 1e-30))


def _data(shape, n, classes, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n,) + shape).astype(np.float32),
            rng.integers(0, classes, n))


def _lenet(**kw):
    return hn.models.lenet5(input_size=28, seed=3, **kw)


def _mlp(**kw):
    return hn.Sequential([Dense(20, 13), ReLU(), Dense(13, 7), Tanh(), Dense(7, 3)],
                         input_shape=(20,), seed=4, **kw)


def _strided(**kw):
    # stride 2 with padding, an average pool, a non-square kernel with padding on
    # one axis, an overlapping max pool, channels not a multiple of 4
    return hn.Sequential([Conv2D(3, 5, kernel_size=3, stride=2, padding=1), Sigmoid(),
                          AvgPool2D(2), Conv2D(5, 6, kernel_size=(3, 2), padding=(1, 0)),
                          ReLU(), MaxPool2D(3, stride=2), Flatten(), Dense(6, 4)],
                         input_shape=(3, 13, 15), seed=5, **kw)


def _global(**kw):
    return hn.Sequential([Conv2D(2, 7, kernel_size=3, padding=1), Tanh(), MaxPool2D(2),
                          GlobalAvgPool2D(), Flatten(), Dense(7, 5)],
                         input_shape=(2, 8, 8), seed=6, **kw)


CASES = [(_lenet, (1, 28, 28), 10, 37), (_mlp, (20,), 3, 11), (_strided, (3, 13, 15), 4, 9),
         (_global, (2, 8, 8), 5, 13)]


@pytest.fixture(params=[True, False], ids=["avx512-where-present", "plain-loops"])
def patch_loops(request):
    """Both versions of the patch-matrix loops: the AVX-512 ones (where the
    CPU has AVX-512) and the plain ones."""
    from hetnet._cpu import fused as kernel
    before = kernel.use_avx512(request.param)
    yield request.param
    kernel.use_avx512(before)


@pytest.mark.parametrize("make, shape, classes, n", CASES)
@pytest.mark.parametrize("tile, threads", [(None, None), (3, 2), (1, 1), (64, 2)])
def test_loss_and_gradients_match_layer_by_layer(make, shape, classes, n, tile, threads,
                                                 patch_loops):
    model = make(fuse="never")
    X, y = _data(shape, n, classes)
    tr = CPUFusedTrainer(model, batch_size=n, tile=tile, num_threads=threads)
    loss, grads = tr.loss_and_gradients(X, y)
    ref_loss, ref_grads = model.loss_and_gradients(X, y)
    assert abs(loss - ref_loss) <= RTOL * abs(ref_loss)
    assert len(grads) == len(ref_grads)
    for g, r in zip(grads, ref_grads):
        assert g.shape == r.shape
        assert _rel(g, r) <= RTOL
    # the pass changes no weight
    for a, b in zip(tr.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_odd_batch_is_not_a_multiple_of_the_tile():
    model = _lenet(fuse="never")
    X, y = _data((1, 28, 28), 23, 10)
    tr = CPUFusedTrainer(model, tile=4, num_threads=2)
    assert 23 % tr.tile
    loss, grads = tr.loss_and_gradients(X, y)
    ref_loss, ref = model.loss_and_gradients(X, y)
    assert abs(loss - ref_loss) <= RTOL * abs(ref_loss)
    assert max(_rel(g, r) for g, r in zip(grads, ref)) <= RTOL


@pytest.mark.parametrize("make, shape, classes", [(_lenet, (1, 28, 28), 10), (_mlp, (20,), 3)])
def test_ten_sgd_momentum_steps_match(make, shape, classes):
    X, y = _data(shape, 50, classes, seed=1)
    fused, layered = make(fuse="always"), make(fuse="never")
    opt = dict(lr=0.05, momentum=0.9)
    # 50 samples at batch 5: 10 steps, in order
    fused.fit(X, y, epochs=1, batch_size=5, optimizer=hn.optim.SGD(**opt), shuffle=False)
    layered.fit(X, y, epochs=1, batch_size=5, optimizer=hn.optim.SGD(**opt), shuffle=False)
    assert fused.fusion.decisions[(5, True)][0]
    for a, b in zip(fused.get_weights(), layered.get_weights()):
        assert _rel(a, b) <= 1e-4


@pytest.mark.parametrize("opt", [hn.optim.Adam(lr=1e-2), hn.optim.RMSProp(lr=1e-2, momentum=0.5),
                                 hn.optim.SGD(lr=0.05, momentum=0.9, nesterov=True,
                                              weight_decay=1e-3)])
def test_other_optimizers_match(opt):
    X, y = _data((20,), 40, 3, seed=2)
    fused, layered = _mlp(fuse="always"), _mlp(fuse="never")
    fused.fit(X, y, epochs=2, batch_size=8, optimizer=opt.__class__(**_config(opt)),
              shuffle=False)
    layered.fit(X, y, epochs=2, batch_size=8, optimizer=opt.__class__(**_config(opt)),
                shuffle=False)
    for a, b in zip(fused.get_weights(), layered.get_weights()):
        assert _rel(a, b) <= 1e-4


def _config(opt):
    cfg = dict(opt.get_config())
    cfg.pop("name")
    return cfg


def test_shuffled_fit_visits_the_samples_as_layer_by_layer():
    X, y = _data((20,), 45, 3, seed=5)
    fused, layered = _mlp(fuse="always"), _mlp(fuse="never")
    for m in (fused, layered):
        m.fit(X, y, epochs=2, batch_size=8, optimizer=hn.optim.SGD(lr=0.05, momentum=0.9))
    assert fused.fusion.decisions[(8, True)][0]
    for a, b in zip(fused.get_weights(), layered.get_weights()):
        assert _rel(a, b) <= 1e-4


def test_one_and_two_threads_agree():
    model = _lenet(fuse="never")
    X, y = _data((1, 28, 28), 30, 10)
    one = CPUFusedTrainer(model, tile=4, num_threads=1).loss_and_gradients(X, y)
    two = CPUFusedTrainer(model, tile=4, num_threads=2).loss_and_gradients(X, y)
    assert abs(one[0] - two[0]) <= 1e-6 * abs(one[0])
    assert max(_rel(a, b) for a, b in zip(one[1], two[1])) <= 1e-6


def test_predict_and_evaluate_match_the_layers():
    model = _strided(fuse="never")
    X, y = _data((3, 13, 15), 17, 4)
    tr = CPUFusedTrainer(model, tile=3)
    logits = tr.predict_logits(X)
    assert _rel(logits, model.predict_logits(X)) <= RTOL
    ev = tr.evaluate(X, y)
    ref_loss, _ = model.loss_and_gradients(X, y)
    assert abs(ev["loss"] - ref_loss) <= RTOL * abs(ref_loss)
    assert ev["accuracy"] == pytest.approx(np.mean(logits.argmax(axis=1) == y))


def test_tile_fits_the_cache_share():
    model = _lenet()
    tr = CPUFusedTrainer(model, batch_size=256)
    _, floats, ints = descriptors(tr.units, tr.layout.offsets, 1)
    assert choose_tile(tr.units, tr.layout.offsets, 256, 2, cache_bytes=1 << 20) == max(
        1, min(64, int(0.5 * (1 << 20) // (4 * (floats + ints)))))
    # every thread gets a tile
    assert choose_tile(tr.units, tr.layout.offsets, 4, 2, cache_bytes=1 << 30) == 2


@pytest.mark.parametrize("layers, reason", [
    ([Conv2D(1, 4, kernel_size=3), BatchNorm2D(4), ReLU(), Flatten(), Dense(4 * 6 * 6, 3)],
     "BatchNorm couples the samples"),
    ([Flatten(), Dense(64, 8), ReLU(), Dropout(0.5), Dense(8, 3)], "has no fused template"),
    ([Conv2D(1, 3, kernel_size=3), ReLU(), GlobalAvgPool2D()], "end in a Dense"),
])
def test_unsupported_chains_fall_back_with_their_reason(layers, reason):
    X, y = _data((1, 8, 8), 12, 3)
    spare = copy.deepcopy(layers)
    model = hn.Sequential(layers, input_shape=(1, 8, 8), seed=1)
    model.fit(X, y, epochs=1, batch_size=4)
    use, why = model.fusion.decisions[(4, True)]
    assert not use and why.startswith("layer by layer") and reason in why
    with pytest.raises(FusionUnsupported, match=reason):
        hn.Sequential(spare, input_shape=(1, 8, 8), fuse="always", seed=1).fit(
            X, y, epochs=1, batch_size=4)


def test_explain_says_which_and_why():
    X, y = _data((20,), 32, 3)
    auto = _mlp()
    auto.fit(X, y, epochs=1, batch_size=16)
    use, why = auto.fusion.decisions[(16, True)]
    assert why.startswith("measured per step: fused on cpu")
    assert why.endswith("chose fused" if use else "chose layer by layer")
    # a second model of the same chain takes the first's measured choice (not timed
    # again), so that two models alike train alike
    twin = _mlp()
    twin.fit(X, y, epochs=1, batch_size=16)
    assert twin.fusion.decisions[(16, True)] == (use, why)
    assert "fusion: measured per step" in _mlp().explain(16).reason
    always = _mlp(fuse="always")
    always.fit(X, y, epochs=1, batch_size=16)
    assert always.fusion.decisions[(16, True)] == (True, "fused on cpu (fuse='always')")
    assert "fusion: fuse='never'" in _mlp(fuse="never").explain(16).reason
    # inference too: fused under 'always', measured under 'auto'
    always.predict(X)
    assert always.fusion.decisions[(32, False)] == (True, "fused on cpu (fuse='always')")
    auto = _mlp()
    auto.predict(X, batch_size=8)
    assert "measured per step" in auto.fusion.decisions[(8, False)][1]


@pytest.mark.parametrize("make, shape, classes, n", CASES)
def test_inference_fused_matches_layer_by_layer(make, shape, classes, n):
    X, y = _data(shape, n, classes, seed=8)
    fused, layered = make(fuse="always"), make(fuse="never")
    # logits to the float32 rounding of their largest (sums in another order)
    assert _rel(fused.predict_logits(X, batch_size=4),
                layered.predict_logits(X, batch_size=4)) <= RTOL
    np.testing.assert_allclose(fused.predict_proba(X), layered.predict_proba(X), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(fused.predict(X), layered.predict(X))
    got, ref = fused.evaluate(X, y), layered.evaluate(X, y)
    assert got["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    assert got["accuracy"] == ref["accuracy"]
    assert fused.fusion.decisions[(4, False)][0]
    # after training, the inference trainer predicts with the new weights
    fused.fit(X, y, epochs=1, batch_size=4, optimizer=hn.optim.SGD(lr=0.1))
    layered.set_weights(fused.get_weights())
    # logits to the float32 rounding of their largest (sums in another order)
    assert _rel(fused.predict_logits(X, batch_size=4),
                layered.predict_logits(X, batch_size=4)) <= RTOL


def test_fit_fused_has_validation_and_a_schedule():
    X, y = _data((20,), 40, 3, seed=3)
    fused, layered = _mlp(fuse="always"), _mlp(fuse="never")
    kw = dict(epochs=2, batch_size=10, shuffle=False, validation_data=(X[:10], y[:10]),
              lr_schedule=hn.OneCycle(max_lr=0.1))
    hf = fused.fit(X, y, optimizer=hn.optim.SGD(lr=0.1, momentum=0.9), **kw)
    hl = layered.fit(X, y, optimizer=hn.optim.SGD(lr=0.1, momentum=0.9), **kw)
    assert fused.fusion.decisions[(10, True)][0]
    # the one-cycle schedule moved the rate (and momentum) each step as on the layer path
    assert fused.optimizer.lr == pytest.approx(layered.optimizer.lr)
    assert fused.optimizer.momentum == pytest.approx(layered.optimizer.momentum)
    np.testing.assert_allclose(hf["loss"], hl["loss"], rtol=1e-4)
    np.testing.assert_allclose(hf["val_loss"], hl["val_loss"], rtol=1e-4)


def test_whole_set_gradient_for_lbfgs_runs_fused():
    X, y = _data((20,), 60, 3, seed=4)
    model = _mlp(fuse="always")
    model.fit(X, y, optimizer=hn.SHADEILS(pop_size=6, de_evals=20, ls_evals=10), max_evals=60, epochs=2)
    assert model.history.gradient_path == "fused on cpu"
    layered = _mlp(fuse="never")
    layered.fit(X, y, optimizer=hn.SHADEILS(pop_size=6, de_evals=20, ls_evals=10), max_evals=60, epochs=2)
    assert layered.history.gradient_path.startswith("layer by layer")
    np.testing.assert_allclose(model.history["loss"], layered.history["loss"], rtol=1e-3)


@pytest.mark.parametrize("make, shape, classes, n", CASES)
@pytest.mark.parametrize("tile, threads", [(None, None), (4, 2), (1, 1)])
def test_population_pass_matches_the_batched_pass_and_single_losses(make, shape, classes, n,
                                                                   tile, threads, patch_loops):
    model = make(fuse="never")
    X, y = _data(shape, n, classes)
    rng = np.random.default_rng(7)
    x0 = model.flat_weights()
    W = (x0[None, :] + 0.3 * rng.standard_normal((5, x0.size))).astype(np.float32)
    tr = CPUFusedTrainer(model, batch_size=n, tile=tile, num_threads=threads).set_data(X, y)
    before = tr.w.copy()
    got = tr.population_loss(W)
    assert got.shape == (5,) and got.dtype == np.float64
    np.testing.assert_allclose(got, model.population_loss(W, X, y), rtol=RTOL)
    # candidate by candidate, the first conv's patch matrix made once per tile for all
    for p in range(5):
        tr.set_flat_weights(W[p])
        assert abs(got[p] - tr.loss_and_gradients(None, None)[0]) <= RTOL * got[p]
    tr.w[:] = before
    tr.population_loss(W)
    np.testing.assert_array_equal(tr.w, before)     # the pass leaves the weights alone


def test_population_pass_a_nan_candidate_loses_alone():
    model = _lenet(fuse="never")
    X, y = _data((1, 28, 28), 10, 10)
    tr = CPUFusedTrainer(model, tile=3, num_threads=2).set_data(X, y)
    W = np.repeat(model.flat_weights()[None, :], 3, axis=0).astype(np.float32)
    W[1, -1] = np.nan           # the last bias: no ReLU between it and the loss
    got = tr.population_loss(W)
    assert np.isnan(got[1]) and np.isfinite(got[[0, 2]]).all()
    assert got[0] == got[2]
    with pytest.raises(ValueError, match=rf"\(P, {W.shape[1]}\) flat weight vectors"):
        tr.population_loss(W[:, :-1])
    with pytest.raises(RuntimeError, match="no data"):
        CPUFusedTrainer(model).population_loss(W)


def test_metaheuristic_population_runs_fused_where_chosen():
    X, y = _data((20,), 60, 3, seed=5)
    kw = dict(max_evals=48, epochs=2)
    paths = {}
    for fuse in ("always", "never", "auto"):
        model = _mlp(fuse=fuse)
        model.fit(X, y, optimizer=hn.SHADE(pop_size=6), **kw)
        paths[fuse] = model.history
    assert paths["always"].population_path == "fused on cpu"
    assert paths["never"].population_path == "batched, layer by layer"
    assert "measured per pass of 6" in paths["auto"].population_path
    # the same seed, the same search: fused and batched losses agree to rounding
    np.testing.assert_allclose(paths["always"]["loss"], paths["never"]["loss"], rtol=1e-4)


def _matches_through_both_loops(model, X, y, tile, threads):
    """The fused loss, gradients and logits equal the layer path's with the
    AVX-512 loops (where the CPU has them), with direct convolutions and
    without, and with the plain loops."""
    from hetnet._cpu import fused as kernel
    ref_loss, ref_grads = model.loss_and_gradients(X, y)
    ref_logits = model.predict_logits(X)
    # the AVX-512 loops with direct convolutions, through patch matrices, the plain loops
    for simd, direct in ((True, True), (True, False), (False, True)):
        before, before_direct = kernel.use_avx512(simd), kernel.use_direct(direct)
        try:
            tr = CPUFusedTrainer(model, tile=tile, num_threads=threads)
            loss, grads = tr.loss_and_gradients(X, y)
            logits = tr.predict_logits(X)
        finally:
            kernel.use_avx512(before)
            kernel.use_direct(before_direct)
        assert abs(loss - ref_loss) <= RTOL * abs(ref_loss), simd
        for g, r in zip(grads, ref_grads):
            assert _rel(g, r) <= RTOL, simd
        assert _rel(logits, ref_logits) <= RTOL, simd


def test_padded_rows_of_every_width_through_both_patch_loops():
    # widths 5..20 around the AVX-512 path's 16 lanes, padding on both sides
    for width in (5, 15, 16, 17, 20):
        model = hn.Sequential([Conv2D(2, 3, kernel_size=3, padding=1), ReLU(),
                               Conv2D(3, 4, kernel_size=(2, 5), padding=(0, 2)), Tanh(),
                               Flatten(), Dense(4 * 5 * width, 3)],
                              input_shape=(2, 6, width), seed=9, fuse="never")
        X, y = _data((2, 6, width), 7, 3, seed=width)
        _matches_through_both_loops(model, X, y, tile=3, threads=2)


def test_weight_gradient_blocks_past_the_edges_through_both_paths():
    # 39 filters of 3x5x5 (75 columns): the AVX-512 weight gradient's 4x4
    # blocks run past both edges (40 x 76); 15 positions a sample, so a tile
    # holds fewer than, exactly and more than its 16 lanes; the other path
    # is BLAS
    model = hn.Sequential([Conv2D(3, 39, kernel_size=5), ReLU(), Flatten(),
                           Dense(39 * 3 * 5, 4)], input_shape=(3, 7, 9), seed=8, fuse="never")
    X, y = _data((3, 7, 9), 11, 4, seed=8)
    for tile in (1, 3, 11):
        _matches_through_both_loops(model, X, y, tile=tile, threads=2)


def test_direct_convolutions_through_both_paths():
    # the direct convolution (no patch matrix, AVX-512): 7 filters (past a block of 6
    # and of 3), 18 and 105 taps (past a block of 5), odd row counts, padding on both
    # sides, widths around its 32-lane pairs, a sigmoid (applied after the kernel); the
    # second convolution is direct too, its input gradient through col2im
    from hetnet._cpu import fused as kernel
    has = kernel.use_avx512(True)
    kernel.use_avx512(has)
    for width in (24, 28, 32, 50):
        assert kernel.takes_direct(2, 3, 3, 1, 1, width) == has
        assert kernel.takes_direct(7, 3, 5, 1, 1, width) == has
        assert kernel.use_direct(False) is True
        assert not kernel.takes_direct(2, 3, 3, 1, 1, width)
        kernel.use_direct(True)
        model = hn.Sequential([Conv2D(2, 7, kernel_size=3, padding=1), Sigmoid(),
                               Conv2D(7, 3, kernel_size=(3, 5), padding=(0, 2)), ReLU(),
                               Flatten(), Dense(3 * 5 * width, 3)],
                              input_shape=(2, 7, width), seed=10, fuse="never")
        X, y = _data((2, 7, width), 5, 3, seed=width)
        _matches_through_both_loops(model, X, y, tile=2, threads=2)
    # LeNet-5 at 32x32 (the thesis cell's): 1 channel, 5x5 taps, 28 columns, no padding
    assert not kernel.takes_direct(6, 5, 5, 1, 1, 10)        # its second: patch matrix
    model = hn.models.lenet5(input_size=32, seed=11, fuse="never")
    X, y = _data((1, 32, 32), 7, 10, seed=11)
    _matches_through_both_loops(model, X, y, tile=3, threads=2)


def test_max_pool_ties_take_the_first_maximum_as_the_layer_does():
    # 0/1/2 inputs through a (1, 3) convolution of weights (0, 1, 0): its output is the
    # input, most 2x2 windows tie, and the gradient of the outer taps (the neighbours of
    # the position each window took) shows which one it took; widths past 16
    for width in (8, 18, 36):
        model = hn.Sequential([Conv2D(1, 1, kernel_size=(1, 3), padding=(0, 1)), MaxPool2D(2),
                               Flatten(), Dense(3 * (width // 2), 2)],
                              input_shape=(1, 6, width), seed=2, fuse="never")
        w = model.get_weights()
        w[0][...] = np.array([0.0, 1.0, 0.0], np.float32).reshape(w[0].shape)
        w[1][...] = 0.0
        model.set_weights(w)
        rng = np.random.default_rng(width)
        X = rng.integers(0, 3, (5, 1, 6, width)).astype(np.float32)
        _matches_through_both_loops(model, X, rng.integers(0, 2, 5), tile=2, threads=1)


def test_bad_input():
    model = _mlp()
    tr = CPUFusedTrainer(model)
    with pytest.raises(ValueError, match="labels"):
        tr.set_data(np.zeros((3, 20), np.float32), np.array([0, 1, 2]) + 5)
    with pytest.raises(RuntimeError, match="no data"):
        tr.fit()
    with pytest.raises(ValueError, match="flat weight vector"):
        tr.set_flat_weights(np.zeros(3))
    with pytest.raises(FusionUnsupported, match="fused update"):
        tr.set_optimizer(hn.optim.SGD(lr=0.1, clip_norm=1.0))
