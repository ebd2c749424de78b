"""Fused segments (hetnet.runtime.fused, clkernels/fused.cl) against the layer-by-layer
path: the forward, every gradient, ten training steps, evaluation, and the
fallbacks with their reasons.  Odd sizes throughout: batches that are not a
multiple of the tile, channel counts that are not multiples of 4, padding,
strides, overlapping pool windows, a pool with no convolution before it.
Runs on PoCL in CI."""

import numpy as np
import pytest

pytest.importorskip("pyopencl")

import hetnet as hn  # noqa: E402
from conftest import working_opencl_device  # noqa: E402
from hetnet.runtime.fused import (FusedTrainer, FusionUnsupported, describe_chain,  # noqa: E402
                          device_permutation)
from hetnet.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense,  # noqa: E402
                           Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU, Sigmoid, Tanh)


@pytest.fixture(scope="module")
def dev():
    d = working_opencl_device()
    if d is None:
        pytest.skip("no working OpenCL device")
    return d


def odd_layers():
    """Every fused template: conv with padding and stride, tanh, an
    overlapping 3x3/2 pool merged into it, a standalone pool, a conv with no
    pool and no bias, sigmoid, a dense layer without bias."""
    return [Conv2D(3, 5, 3, padding=1), Tanh(), MaxPool2D(3, stride=2),
            Conv2D(5, 7, 2, stride=1, bias=False), ReLU(),
            MaxPool2D(2),
            Conv2D(7, 6, 1, stride=1), Sigmoid(),
            Flatten(), Dense(6 * 2 * 2, 9), ReLU(), Dense(9, 4, bias=False)]


def avg_layers():
    """Average pools: standalone after a conv with an activation, overlapping
    3x3/2 windows that leave the last row and column of their input
    uncovered, and one after a max-pooled conv."""
    return [Conv2D(3, 4, 3, padding=1), ReLU(), AvgPool2D(3, stride=2),
            Conv2D(4, 5, 2), Tanh(), MaxPool2D(2), AvgPool2D(2, stride=1),
            Flatten(), Dense(5, 4)]


def data(rng, n, shape, k):
    X = rng.standard_normal((n,) + shape).astype(np.float32)
    return X, rng.integers(0, k, n).astype(np.int32)


CASES = {
    "odd": (odd_layers, (3, 11, 11), 4),
    "lenet5": (lambda: hn.models.lenet5_layers(), (1, 28, 28), 10),
    "mlp": (lambda: hn.models.mlp_layers([20, 13, 7, 3]), (20,), 3),
    "avg": (avg_layers, (3, 12, 12), 4),
}


@pytest.mark.parametrize("case,train_wg", [("odd", None), ("odd", 512), ("lenet5", None),
                                           ("mlp", None), ("avg", None)])
def test_forward_and_every_gradient(dev, case, train_wg):
    make, shape, k = CASES[case]
    rng = np.random.default_rng(3)
    X, y = data(rng, 13, shape, k)               # 13 = 4 tiles of 3 and one of 1
    model = hn.Sequential(make(), device="numpy", input_shape=shape, seed=5)
    trainer = FusedTrainer(model, device=dev, batch_size=16, tile=3, train_wg=train_wg)
    assert trainer.program.tile == 3
    assert trainer.program.train_wg == (train_wg or trainer.program.train_wg)
    ref = model.predict_logits(X)
    np.testing.assert_allclose(trainer.predict_logits(X), ref, rtol=1e-4, atol=1e-5)
    loss, grads = trainer.loss_and_gradients(X, y)
    ref_loss, ref_grads = model.loss_and_gradients(X, y)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert len(grads) == len(ref_grads)
    for g, r in zip(grads, ref_grads):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(r).max()))
    # the gradient buffer is cleared after reading: a second call agrees
    loss2, grads2 = trainer.loss_and_gradients(X, y)
    assert loss2 == pytest.approx(loss, rel=1e-6)
    np.testing.assert_allclose(grads2[0], grads[0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("optimizer", [
    hn.optim.SGD(lr=0.05, momentum=0.9, weight_decay=1e-3),
    hn.optim.Adam(lr=1e-3), hn.optim.RMSProp(lr=1e-3, weight_decay=1e-3),
    hn.optim.RMSProp(lr=1e-3, momentum=0.9)],
    ids=["sgd-momentum", "adam", "rmsprop", "rmsprop-momentum"])
def test_ten_steps_match_layer_by_layer(dev, optimizer):
    rng = np.random.default_rng(7)
    shape = (3, 11, 11)
    X, y = data(rng, 10 * 6 - 3, shape, 4)       # 10 batches of 6, the last one short
    fused_model = hn.Sequential(odd_layers(), device="numpy", input_shape=shape, seed=2)
    ref_model = hn.Sequential(odd_layers(), device="numpy", input_shape=shape, seed=2)
    cfg = {k: v for k, v in optimizer.get_config().items() if k != "name"}
    trainer = FusedTrainer(fused_model, device=dev, batch_size=6, tile=3,
                           optimizer=type(optimizer)(**cfg))
    hist = trainer.fit(X, y, epochs=1, shuffle=False)
    ref = ref_model.fit(X, y, epochs=1, batch_size=6, shuffle=False,
                        optimizer=type(optimizer)(**cfg))
    for w, r in zip(trainer.get_weights(), ref_model.get_weights()):
        np.testing.assert_allclose(w, r, rtol=1e-4, atol=1e-4)
    assert hist[0]["loss"] == pytest.approx(ref["loss"][0], rel=1e-4)
    trainer.write_back()
    for w, r in zip(fused_model.get_weights(), ref_model.get_weights()):
        np.testing.assert_allclose(w, r, rtol=1e-4, atol=1e-4)


def test_shuffled_epochs_and_evaluate(dev):
    rng = np.random.default_rng(11)
    X, y = data(rng, 50, (20,), 3)
    model = hn.Sequential(hn.models.mlp_layers([20, 13, 7, 3]), device="numpy",
                          input_shape=(20,), seed=4)
    trainer = FusedTrainer(model, device=dev, batch_size=8, optimizer="sgd")
    order = rng.permutation(50)
    trainer.fit(X, y, epochs=2, shuffle=order)
    ref = hn.Sequential(hn.models.mlp_layers([20, 13, 7, 3]), device="numpy",
                        input_shape=(20,), seed=4)
    ref.optimizer = hn.optim.get_optimizer("sgd")
    for _ in range(2):          # the same two epochs in the same order
        for s in range(0, 50, 8):
            idx = order[s:s + 8]
            xb, yb, _ = ref._batch_to_device(X, y, None, idx)
            ref.train_step(xb, yb)
    for w, r in zip(trainer.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(w, r, rtol=1e-4, atol=1e-5)
    trainer.write_back()
    ev, ev_ref = trainer.evaluate(X, y), model.evaluate(X, y)
    assert ev["accuracy"] == ev_ref["accuracy"]
    assert ev["loss"] == pytest.approx(ev_ref["loss"], rel=1e-4)
    hist = trainer.fit(epochs=1, seed=0)          # the data stay on the device
    assert np.isfinite(hist[0]["loss"]) and 0 <= hist[0]["accuracy"] <= 1


def test_too_large_for_local_memory_falls_back_with_reason(dev):
    local = dev.cl_device.local_mem_size
    side = int(np.ceil(np.sqrt(local / 4 / 8))) + 2     # 8 channels: more than local memory
    model = hn.Sequential([Conv2D(1, 8, 3, padding=1), ReLU(), Flatten(),
                           Dense(8 * side * side, 2)], device="numpy",
                          input_shape=(1, side, side))
    with pytest.raises(FusionUnsupported, match="KiB of local memory"):
        FusedTrainer(model, device=dev)


def test_unsupported_layers_and_losses_have_reasons(dev):
    model = hn.Sequential([Conv2D(1, 2, 3), MaxPool2D(2), ReLU(), Flatten(), Dense(8, 2)],
                          device="numpy", input_shape=(1, 6, 6))
    with pytest.raises(FusionUnsupported, match="layer 2 .*ReLU.* no fused template"):
        describe_chain(model)
    model = hn.Sequential([Conv2D(1, 2, 3), MaxPool2D(2, padding=1), Flatten(), Dense(18, 2)],
                          device="numpy", input_shape=(1, 6, 6))
    with pytest.raises(FusionUnsupported, match="pads its windows"):
        describe_chain(model)
    model = hn.Sequential([Dense(4, 3), hn.layers.BatchNorm1D(3), Dense(3, 2)],
                          device="numpy", input_shape=(4,))
    assert [u["kind"] for u in describe_chain(model)] == ["dense", "bn", "dense"]
    assert len(describe_chain(model, training=False)) == 2      # folded for inference
    # a BatchNorm in training ends a segment: not the first one, not right
    # after another, not the chain's last layer
    model = hn.Sequential([hn.layers.BatchNorm1D(4), Dense(4, 2)], device="numpy",
                          input_shape=(4,))
    with pytest.raises(FusionUnsupported, match="layer 0 .*BatchNorm1D.*couples the samples"
                                                ".*needs a Conv2D, Dense or pool before"):
        describe_chain(model)
    model = hn.Sequential([Dense(4, 3), BatchNorm1D(3), BatchNorm1D(3), Dense(3, 2)],
                          device="numpy", input_shape=(4,))
    with pytest.raises(FusionUnsupported, match="layer 2 .*follows another BatchNorm"):
        describe_chain(model)
    model = hn.Sequential([Dense(4, 3), BatchNorm1D(3)], device="numpy", input_shape=(4,))
    with pytest.raises(FusionUnsupported, match="the chain ends in a BatchNorm"):
        describe_chain(model)
    model = hn.Sequential([hn.layers.BatchNorm1D(4), Dense(4, 2)], device="numpy",
                          input_shape=(4,))
    with pytest.raises(FusionUnsupported, match="layer 0 .*no Conv2D or Dense right before"):
        describe_chain(model, training=False)
    model = hn.Sequential([Dense(4, 3), ReLU(), hn.layers.BatchNorm1D(3), Dense(3, 2)],
                          device="numpy", input_shape=(4,))
    with pytest.raises(FusionUnsupported, match="applies 'relu' before the BatchNorm"):
        describe_chain(model, training=False)
    model = hn.Sequential([Conv2D(1, 2, 3), AvgPool2D(2, padding=1), Flatten(), Dense(18, 2)],
                          device="numpy", input_shape=(1, 6, 6))
    with pytest.raises(FusionUnsupported, match="AvgPool2D.* pads its windows"):
        describe_chain(model, training=False)
    model = hn.Sequential([Dense(4, 2)], loss="mse", device="numpy", input_shape=(4,))
    with pytest.raises(FusionUnsupported, match="cross_entropy"):
        FusedTrainer(model, device=dev)
    model = hn.Sequential([Dense(4, 2)], device="numpy", input_shape=(4,))
    with pytest.raises(FusionUnsupported, match="OpenCL device"):
        FusedTrainer(model)

    class Plain(hn.optim.Optimizer):          # an optimizer with no fused update
        def _update(self, device, i, w, g):
            device.axpy(-self.lr, g, w)
    with pytest.raises(FusionUnsupported, match="SGD, Adam, AdamW and RMSProp"):
        FusedTrainer(model, device=dev, optimizer=Plain(lr=0.1))


@pytest.mark.parametrize("n", [1, 2, 5, 64, 1000, 4097])
def test_device_permutation_is_a_permutation(n):
    order = device_permutation(n, 12345)
    assert np.array_equal(np.sort(order), np.arange(n))
    if n >= 64:
        assert not np.array_equal(order, np.arange(n))
        assert not np.array_equal(order, device_permutation(n, 12346))


def test_device_shuffle_follows_device_permutation(dev):
    rng = np.random.default_rng(5)
    X, y = data(rng, 37, (20,), 3)
    layers = lambda: hn.models.mlp_layers([20, 13, 7, 3])  # noqa: E731
    a = FusedTrainer(hn.Sequential(layers(), device="numpy", input_shape=(20,), seed=1),
                     device=dev, batch_size=8, optimizer=hn.SGD(lr=0.1, momentum=0.5))
    b = FusedTrainer(hn.Sequential(layers(), device="numpy", input_shape=(20,), seed=1),
                     device=dev, batch_size=8, optimizer=hn.SGD(lr=0.1, momentum=0.5))
    a.fit(X, y, epochs=1, shuffle=True, seed=9)        # shuffled on the device
    key = int(np.random.default_rng(9).integers(0, 2 ** 31))
    b.fit(X, y, epochs=1, shuffle=device_permutation(37, key))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="permutation"):
        a.fit(epochs=1, shuffle=np.zeros(37, dtype=int))


# ------------------------------------------------- Sequential(fuse=...)
def test_sequential_fuse_always_matches_never(dev):
    rng = np.random.default_rng(21)
    X, y = data(rng, 45, (20,), 3)
    Xv, yv = data(rng, 11, (20,), 3)

    def model(fuse):
        return hn.Sequential(hn.models.mlp_layers([20, 13, 7, 3]), device=dev, seed=3,
                             input_shape=(20,), fuse=fuse)
    fused, layered = model("always"), model("never")
    kw = dict(epochs=2, batch_size=8, shuffle=False, validation_data=(Xv, yv),
              optimizer=hn.SGD(lr=0.05, momentum=0.9))
    hf, hl = fused.fit(X, y, **kw), layered.fit(X, y, **kw)
    assert fused.fusion.decisions[(8, True)][0] is True
    assert layered.fusion.decisions == {}
    for w, r in zip(fused.get_weights(), layered.get_weights()):
        np.testing.assert_allclose(w, r, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hf["loss"], hl["loss"], rtol=1e-4)
    np.testing.assert_allclose(hf["val_loss"], hl["val_loss"], rtol=1e-4)
    assert hf["val_accuracy"] == hl["val_accuracy"]
    np.testing.assert_allclose(fused.predict_logits(Xv), layered.predict_logits(Xv),
                               rtol=1e-4, atol=1e-5)
    assert np.array_equal(fused.predict(Xv), layered.predict(Xv))
    assert fused.fusion.decisions[(11, False)][0] is True
    # training goes on from the weights the model holds now
    fused.set_weights(layered.get_weights())
    fused.fit(X, y, epochs=1, batch_size=8, shuffle=True)
    assert np.isfinite(fused.evaluate(X, y)["loss"])
    with pytest.raises(FusionUnsupported, match="sample weights"):
        fused.fit(X, y, batch_size=8, sample_weight=np.ones(45))


def test_sequential_fuse_auto_states_its_reason(dev):
    model = hn.Sequential(hn.models.mlp_layers([6, 5, 3]), device=dev, input_shape=(6,))
    assert model.fusion.mode == "auto"
    use, why = model.fusion.decide(model, 4, True)
    if dev.kind != "gpu":
        assert not use and "no OpenCL GPU" in why
    else:
        assert "measured per step" in why
    plan = model.explain(batch_size=4, repeats=1)
    assert "fusion: " in plan.table()
    with pytest.raises(ValueError, match="fuse must be one of"):
        hn.Sequential([Dense(2, 2)], fuse="sometimes")


def test_an_optimizer_the_fused_update_lacks_is_a_reason_not_an_error(dev):
    """fuse='auto' with gradient clipping trains layer by layer (on a GPU an
    optimizer the fused update lacked used to raise FusionUnsupported from
    the trainer); fuse='always' refuses it by name."""
    from hetnet.model.fit import fused_unsupported
    assert fused_unsupported(None, None, None, hn.RMSProp(momentum=0.5)) == ""
    assert "clip" in fused_unsupported(None, None, None, hn.SGD(clip_norm=1.0))
    assert fused_unsupported(None, None, None, hn.SGD(momentum=0.9)) == ""
    # checkpoints hold the optimizer's state and a resumed fit starts mid-run: the layer path
    from hetnet.callbacks import ModelCheckpoint
    assert "ModelCheckpoint" in fused_unsupported(None, [ModelCheckpoint("c.npz")])
    assert "resumes" in fused_unsupported(None, None, resuming=True)
    rng = np.random.default_rng(4)
    X, y = data(rng, 24, (6,), 3)
    auto = hn.Sequential(hn.models.mlp_layers([6, 5, 3]), device=dev, seed=1, input_shape=(6,))
    clipped = hn.RMSProp(lr=0.01, clip_norm=1.0)
    use, why = auto.fusion.decide(auto, 8, True, fused_unsupported(None, None, None, clipped))
    assert not use and why
    auto.fit(X, y, epochs=1, batch_size=8, optimizer=clipped)
    forced = hn.Sequential(hn.models.mlp_layers([6, 5, 3]), device=dev, seed=1,
                           input_shape=(6,), fuse="always")
    with pytest.raises(FusionUnsupported, match="clip"):
        forced.fit(X, y, epochs=1, batch_size=8, optimizer=hn.RMSProp(lr=0.01, clip_norm=1.0))


# ------------------------------------------- metaheuristics' whole-set gradient
def test_shadeils_local_search_through_the_fused_gradient_matches_layer_by_layer(dev):
    """SHADE-ILS's L-BFGS evaluations (loss and gradient over the whole
    training set) run through the fused kernels when the fusion policy
    allows it; the search then takes the same path as layer by layer."""
    from hetnet.model.evolve import _fused_value_and_grad
    rng = np.random.default_rng(8)
    X, y = data(rng, 37, (1, 12, 12), 4)
    layers = [Conv2D(1, 3, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(3 * 5 * 5, 4)]

    def model(fuse):
        import copy
        return hn.Sequential(copy.deepcopy(layers), device=dev, seed=2, input_shape=(1, 12, 12),
                             fuse=fuse)
    fused, layered = model("always"), model("never")
    Xp, yt, _ = fused._prepare(X, y, None, True)
    vg, path = _fused_value_and_grad(fused, Xp, yt, None)
    assert path == f"fused on {dev.name}"
    assert _fused_value_and_grad(layered, Xp, yt, None) == (None, "layer by layer: fuse='never'")
    rt = layered.runtime
    for x in rng.standard_normal((3, fused.count_params())) * 0.3:
        f, g = vg(x)
        rt.set_flat_weights(x)
        with rt.session():
            ref, _ = rt.loss_and_gradients(Xp, yt, None)
        np.testing.assert_allclose(f, ref, rtol=1e-5)
        np.testing.assert_allclose(g, rt.flat_gradient(), rtol=1e-4, atol=1e-6)
    with pytest.raises(FusionUnsupported, match="sample weights"):
        _fused_value_and_grad(fused, Xp, yt, np.ones(37))
    kw = dict(optimizer=hn.SHADEILS(pop_size=4, ls_evals=6, de_evals=8), max_evals=40,
              epochs=2)
    hf, hl = fused.fit(X, y, **kw), layered.fit(X, y, **kw)
    assert hf.gradient_path.startswith("fused") and hl.gradient_path.startswith("layer")
    assert hf.n_evals == hl.n_evals == 40
    np.testing.assert_allclose(hf["loss"], hl["loss"], rtol=1e-4)


def test_usable_device_checks_the_call_the_device_and_the_resident_set():
    from types import SimpleNamespace
    from hetnet.runtime.fused import FusionUnsupported
    from hetnet.sched.fusion import FusionPolicy

    dev = SimpleNamespace(cl_device=SimpleNamespace(global_mem_size=1000), name="fake")

    class Policy(FusionPolicy):
        def device(self, model):
            return (dev, "") if model == "gpu" else (None, "no OpenCL GPU here")

    policy = Policy("auto")
    assert policy.usable_device("gpu", "", 500) is dev
    with pytest.raises(FusionUnsupported, match="more than half the device's memory"):
        policy.usable_device("gpu", "", 501)
    with pytest.raises(FusionUnsupported, match="no sample weights"):
        policy.usable_device("gpu", "no sample weights", 0)
    with pytest.raises(FusionUnsupported, match="no OpenCL GPU here"):
        policy.usable_device("cpu")


# ---------------------------------------------- BatchNorm folded for inference
def _bn_model(make, shape, k, rng, device="numpy", **kw):
    """A model with BatchNorms after a few training steps (running statistics
    away from 0 and 1) and with gamma, beta set away from 1 and 0."""
    model = hn.Sequential(make(), device=device, input_shape=shape, seed=6, **kw)
    X, y = data(rng, 24, shape, k)
    ref = hn.Sequential(make(), device="numpy", input_shape=shape, seed=6, fuse="never")
    ref.fit(X, y, epochs=1, batch_size=8, shuffle=False, optimizer=hn.SGD(lr=0.05))
    weights = []
    for layer in ref.layers:
        ws = layer.get_weights()
        if isinstance(layer, (BatchNorm1D, BatchNorm2D)):
            f = layer.num_features
            ws[0] = rng.uniform(0.5, 1.5, f).astype(np.float32)      # gamma
            ws[1] = rng.uniform(-0.5, 0.5, f).astype(np.float32)     # beta
            assert np.abs(ws[2]).max() > 1e-3 and np.abs(ws[3] - 1).max() > 1e-3
        weights += ws
    model.set_weights(weights)
    return model


def _lenet5_bn():
    return hn.models.lenet5_layers(batch_norm=True, input_size=32)


def _mlp_bn():
    """Dense -> BatchNorm1D folds, with and without the dense bias, relu and tanh."""
    return [Dense(20, 13), BatchNorm1D(13), ReLU(), Dense(13, 7, bias=False), BatchNorm1D(7),
            Tanh(), Dense(7, 3)]


@pytest.mark.parametrize("make,shape,k", [(_lenet5_bn, (1, 32, 32), 10), (_mlp_bn, (20,), 3)],
                         ids=["lenet5-bn", "mlp-bn"])
def test_batchnorm_folded_inference_matches_layer_by_layer(dev, make, shape, k):
    rng = np.random.default_rng(13)
    model = _bn_model(make, shape, k, rng)
    trainer = FusedTrainer(model, device=dev, batch_size=16, training=False)
    assert trainer.program.inference_only and trainer.optimizer is None
    assert sum(u["bn"] is not None for u in trainer.units) == (4 if k == 10 else 2)
    X, y = data(rng, 37, shape, k)         # two full batches of 16 and one of 5
    for n in (37, 13, 1):
        np.testing.assert_allclose(trainer.predict_logits(X[:n]), model.predict_logits(X[:n]),
                                   rtol=1e-4, atol=1e-4)
    ev, ref = trainer.evaluate(X, y), model.evaluate(X, y)
    assert ev["accuracy"] == ref["accuracy"]
    assert ev["loss"] == pytest.approx(ref["loss"], rel=1e-4)
    # new weights and running statistics are folded in again when loaded
    model.set_weights([w * 1.1 + 0.05 if w.ndim == 1 else w for w in model.get_weights()])
    trainer.load_weights()
    np.testing.assert_allclose(trainer.predict_logits(X), model.predict_logits(X),
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeError, match="made for inference"):
        trainer.fit(X, y)
    with pytest.raises(RuntimeError, match="made for inference"):
        trainer.loss_and_gradients(X[:8], y[:8])


def test_sequential_predicts_batchnorm_fused_and_trains_layer_by_layer(dev):
    rng = np.random.default_rng(17)
    X, y = data(rng, 21, (20,), 3)
    forced = _bn_model(_mlp_bn, (20,), 3, rng, device=dev, fuse="always")
    ref = hn.Sequential(_mlp_bn(), device="numpy", input_shape=(20,), fuse="never")
    ref.set_weights(forced.get_weights())
    np.testing.assert_allclose(forced.predict_logits(X, batch_size=8), ref.predict_logits(X),
                               rtol=1e-4, atol=1e-4)
    assert forced.fusion.decisions[(8, False)][0] is True
    np.testing.assert_allclose(forced.predict_proba(X), ref.predict_proba(X), rtol=1e-4,
                               atol=1e-6)
    assert np.array_equal(forced.predict(X), ref.predict(X))
    ev, ev_ref = forced.evaluate(X, y), ref.evaluate(X, y)
    assert forced.fusion.decisions[(21, False)][0] is True
    assert ev["loss"] == pytest.approx(ev_ref["loss"], rel=1e-4)
    # training fuses too, as segments between the BatchNorms
    ref.set_weights(forced.get_weights())
    forced.fit(X, y, epochs=1, batch_size=8, shuffle=False, optimizer=hn.SGD(lr=0.05))
    assert forced.fusion.decisions[(8, True)][0] is True
    ref.fit(X, y, epochs=1, batch_size=8, shuffle=False, optimizer=hn.SGD(lr=0.05))
    for w, r in zip(forced.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(w, r, rtol=1e-4, atol=1e-5)
    # an unsupported placement trains layer by layer under "auto" and says why
    layers = [Dense(20, 5), BatchNorm1D(5), BatchNorm1D(5), Dense(5, 3)]
    auto = hn.Sequential(layers, device=dev, input_shape=(20,), seed=1)
    use, why = auto.fusion.decide(auto, 8, True)
    assert not use and "follows another BatchNorm" in why
    auto.fit(X, y, epochs=1, batch_size=8)
    assert "follows another BatchNorm" in auto.explain(batch_size=8, repeats=1).table()


# ------------------------------------------------------------- average pools
def test_avgpool_ten_steps_match_layer_by_layer(dev):
    rng = np.random.default_rng(19)
    shape = (3, 12, 12)
    X, y = data(rng, 10 * 5 - 2, shape, 4)       # 10 batches of 5, the last one short
    fused_model = hn.Sequential(avg_layers(), device="numpy", input_shape=shape, seed=2)
    ref_model = hn.Sequential(avg_layers(), device="numpy", input_shape=shape, seed=2)
    opt = dict(lr=0.05, momentum=0.9)
    trainer = FusedTrainer(fused_model, device=dev, batch_size=5, tile=2,
                           optimizer=hn.SGD(**opt))
    assert [u["kind"] for u in trainer.units] == ["conv", "pool", "conv", "pool", "dense"]
    hist = trainer.fit(X, y, epochs=1, shuffle=False)
    ref = ref_model.fit(X, y, epochs=1, batch_size=5, shuffle=False, optimizer=hn.SGD(**opt))
    for w, r in zip(trainer.get_weights(), ref_model.get_weights()):
        np.testing.assert_allclose(w, r, rtol=1e-4, atol=1e-4)
    assert hist[0]["loss"] == pytest.approx(ref["loss"][0], rel=1e-4)
    np.testing.assert_allclose(trainer.predict_logits(X), ref_model.predict_logits(X),
                               rtol=1e-4, atol=1e-4)


def gap_layers():
    """A global average pool ending the convolutions, Dropout between the dense layers."""
    return [Conv2D(3, 6, 3, padding=1), ReLU(), MaxPool2D(2), Conv2D(6, 5, 3), Tanh(),
            GlobalAvgPool2D(), Dense(5, 7), ReLU(), Dropout(0.3), Dense(7, 4)]


def test_global_avgpool_trains_fused_and_dropout_fuses_in_inference(dev):
    rng = np.random.default_rng(23)
    shape = (3, 10, 10)
    X, y = data(rng, 4 * 6 - 1, shape, 4)        # 4 batches of 6, the last one short
    def no_dropout():
        return [layer for layer in gap_layers() if type(layer) is not Dropout]
    fused_model = hn.Sequential(no_dropout(), device="numpy", input_shape=shape, seed=3)
    ref_model = hn.Sequential(no_dropout(), device="numpy", input_shape=shape, seed=3)
    opt = dict(lr=0.05, momentum=0.9)
    trainer = FusedTrainer(fused_model, device=dev, batch_size=6, tile=2,
                           optimizer=hn.SGD(**opt))
    assert [u["kind"] for u in trainer.units] == ["conv", "conv", "pool", "dense", "dense"]
    assert trainer.units[2]["AVG"] == 1 and trainer.units[2]["out"] == 5
    trainer.fit(X, y, epochs=1, shuffle=False)
    ref_model.fit(X, y, epochs=1, batch_size=6, shuffle=False, optimizer=hn.SGD(**opt))
    for w, r in zip(trainer.get_weights(), ref_model.get_weights()):
        np.testing.assert_allclose(w, r, rtol=1e-4, atol=1e-4)
    # Dropout: the identity in inference (fused), no fused template in training
    model = hn.Sequential(gap_layers(), device="numpy", input_shape=shape, seed=4)
    inference = FusedTrainer(model, device=dev, batch_size=8, training=False)
    np.testing.assert_allclose(inference.predict_logits(X), model.predict_logits(X),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(FusionUnsupported, match=r"layer \d+ \(Dropout.*no fused template"):
        FusedTrainer(model, device=dev, batch_size=8)


@pytest.mark.parametrize("eval_tile,eval_wg", [(1, 256), (3, 512), (5, 1024)])
def test_inference_tile_and_group_size_give_the_same_logits(dev, eval_tile, eval_wg):
    """fused_eval's tile and work-group size are tuning knobs: any legal pair
    (tiles not dividing the batch, dense layers whose outputs are shared by
    several work-items at 512 and 1024) gives the layer-by-layer logits."""
    if eval_wg > dev.cl_device.max_work_group_size:
        pytest.skip(f"the device's work-groups hold {dev.cl_device.max_work_group_size}")
    rng = np.random.default_rng(4)
    X, _ = data(rng, 13, (1, 28, 28), 10)
    model = hn.Sequential(hn.models.lenet5_layers(), device="numpy", input_shape=(1, 28, 28),
                          seed=5)
    trainer = FusedTrainer(model, device=dev, batch_size=16, training=False,
                           eval_tile=eval_tile, eval_wg=eval_wg)
    assert (trainer.program.eval_tile, trainer.program.eval_wg) == (eval_tile, eval_wg)
    np.testing.assert_allclose(trainer.predict_logits(X), model.predict_logits(X),
                               rtol=1e-4, atol=1e-5)


def test_inference_tile_and_group_size_out_of_range_are_refused(dev):
    model = hn.Sequential(hn.models.lenet5_layers(), device="numpy", input_shape=(1, 28, 28))
    with pytest.raises(FusionUnsupported, match="eval_tile 0 is outside"):
        FusedTrainer(model, device=dev, batch_size=16, training=False, eval_tile=0)
    with pytest.raises(FusionUnsupported, match="eval_wg must be 256, 512 or 1024"):
        FusedTrainer(model, device=dev, batch_size=16, training=False, eval_wg=300)


# ------------------------------------------------- BatchNorm in training: segments
def _mlp_bn_train():
    """Dense -> BatchNorm1D with and without the dense bias, relu, tanh, a
    Dense with an activation of its own before its BatchNorm, 13 and 7
    features (not multiples of 4)."""
    return [Dense(20, 13), BatchNorm1D(13, momentum=0.2), ReLU(), Dense(13, 7, bias=False),
            BatchNorm1D(7), Tanh(), Dense(7, 6), ReLU(), BatchNorm1D(6, eps=1e-3),
            Dense(6, 3)]


def _lenet5_bn_small():
    return hn.models.lenet5_layers(batch_norm=True, input_size=16)


def _conv_bn():
    """BatchNorm2D over 5 channels after a strided, padded conv, a max-pooled
    conv whose BatchNorm has no activation, a BatchNorm after a pool."""
    return [Conv2D(3, 5, 3, stride=2, padding=1), BatchNorm2D(5), Sigmoid(),
            Conv2D(5, 6, 2), MaxPool2D(2), BatchNorm2D(6), Flatten(), Dense(24, 4)]


def _lenet5_bn_nobias():
    """hn.models.lenet5_layers(batch_norm=True) with no bias before its
    BatchNorms (which subtract it again)."""
    return [Conv2D(1, 6, 5, bias=False), BatchNorm2D(6), ReLU(), MaxPool2D(2),
            Conv2D(6, 16, 5, bias=False), BatchNorm2D(16), ReLU(), MaxPool2D(2), Flatten(),
            Dense(16, 120, bias=False), BatchNorm1D(120), ReLU(),
            Dense(120, 84, bias=False), BatchNorm1D(84), ReLU(), Dense(84, 10)]


def _bias_cancelled(layers, i):
    """Whether layer ``i``'s bias reaches a BatchNorm through pools only (which
    subtracts it again: its exact gradient is 0)."""
    for layer in layers[i + 1:]:
        if isinstance(layer, (BatchNorm1D, BatchNorm2D)):
            return True
        if not isinstance(layer, (MaxPool2D, AvgPool2D)):
            return False
    return False


BN_CASES = {"lenet5-bn": (_lenet5_bn_small, (1, 16, 16), 10, 19),
            "lenet5-nobias": (_lenet5_bn_nobias, (1, 16, 16), 10, 19),
            "mlp-bn": (_mlp_bn_train, (20,), 3, 15),
            "conv-bn": (_conv_bn, (3, 9, 9), 4, 11)}


@pytest.mark.parametrize("case", sorted(BN_CASES))
def test_batchnorm_training_gradients_match_layer_by_layer(dev, case):
    make, shape, k, kernels = BN_CASES[case]
    rng = np.random.default_rng(23)
    X, y = data(rng, 13, shape, k)               # 13 = 4 tiles of 3 and one of 1
    model = _bn_model(make, shape, k, rng)       # gamma, beta away from 1, 0
    trainer = FusedTrainer(model, device=dev, batch_size=16, tile=3)
    assert trainer.segmented and trainer.kernels_per_step == kernels
    before = model.get_weights()
    loss, grads = trainer.loss_and_gradients(X, y)
    ref_loss, ref_grads = model.loss_and_gradients(X, y)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert len(grads) == len(ref_grads)
    for g, r in zip(grads, ref_grads):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(r).max()))
    # no weight changes; the running statistics move as the layers' do (in
    # training mode, as a fit step)
    for w, r, b in zip(trainer.get_weights(), model.get_weights(), before):
        np.testing.assert_allclose(w, r, rtol=1e-5, atol=1e-6)
        if w.ndim > 1:
            np.testing.assert_array_equal(w, b)
    if case == "conv-bn":       # BatchNorm2D only: one sample has 4 values a channel
        trainer.loss_and_gradients(X[:1], y[:1])
        return
    # as the layer: a BatchNorm1D's statistics need two samples
    with pytest.raises(ValueError, match="more than one value per feature"):
        trainer.loss_and_gradients(X[:1], y[:1])
    with pytest.raises(ValueError, match="more than one value per feature"):
        trainer.fit(X[:9], y[:9], batch_size=8, shuffle=False)


# Adam's and RMSProp's eps at 1e-4, not 1e-8: some gradients here are 0 but
# for rounding (a bias right before a BatchNorm, which subtracts it again; a
# BatchNorm2D's beta whose channel reaches the next BatchNorm1D through a 1x1
# pool), and eps 1e-8 would scale that rounding, different in either path,
# to steps of the full lr
@pytest.mark.parametrize("case,optimizer", [
    ("lenet5-bn", hn.optim.SGD(lr=0.05, momentum=0.9, weight_decay=1e-3)),
    ("lenet5-bn", hn.optim.Adam(lr=1e-3, eps=1e-4)),
    ("lenet5-nobias", hn.optim.Adam(lr=1e-3, eps=1e-4)),
    ("mlp-bn", hn.optim.SGD(lr=0.05, momentum=0.9, nesterov=True)),
    ("mlp-bn", hn.optim.AdamW(lr=1e-3, weight_decay=1e-2, eps=1e-4)),
    ("conv-bn", hn.optim.RMSProp(lr=1e-3, momentum=0.9, eps=1e-4))],
    ids=["lenet5-sgd", "lenet5-adam", "lenet5-nobias-adam", "mlp-nesterov", "mlp-adamw",
         "conv-rmsprop"])
def test_batchnorm_ten_steps_match_layer_by_layer(dev, case, optimizer):
    make, shape, k, _ = BN_CASES[case]
    rng = np.random.default_rng(29)
    X, y = data(rng, 10 * 7 - 2, shape, k)       # 10 batches of 7 (tile 3), the last of 5
    fused_model = hn.Sequential(make(), device="numpy", input_shape=shape, seed=2)
    ref_model = hn.Sequential(make(), device="numpy", input_shape=shape, seed=2)
    cfg = {key: v for key, v in optimizer.get_config().items() if key != "name"}
    trainer = FusedTrainer(fused_model, device=dev, batch_size=7, tile=3,
                           optimizer=type(optimizer)(**cfg))
    hist = trainer.fit(X, y, epochs=1, shuffle=False)
    ref = ref_model.fit(X, y, epochs=1, batch_size=7, shuffle=False,
                        optimizer=type(optimizer)(**cfg))
    got, want = trainer.get_weights(), ref_model.get_weights()
    assert len(got) == len(want)
    k, layers, drift = 0, ref_model.layers, False
    for i, layer in enumerate(layers):
        for j in range(layer.n_weights):
            w, r = got[k], want[k]
            if isinstance(layer, (BatchNorm1D, BatchNorm2D)) and j >= 2:
                # running mean and variance, moved on the device each step;
                # the mean holds the bias before it, held within one lr below
                atol = 1e-5 + (optimizer.lr if drift and j == 2 else 0.0)
                np.testing.assert_allclose(w, r, rtol=1e-5, atol=atol)
            elif j == 1 and _bias_cancelled(layers, i):
                # its gradient is 0 but for rounding, which differs between the
                # paths (the GPU sums in another order); an adaptive optimiser
                # turns it into steps up to lr * rounding / eps, so both paths
                # are only held to stay within one lr of each other
                np.testing.assert_allclose(w, r, rtol=0, atol=optimizer.lr,
                                           err_msg=f"{layer!r} bias before a BatchNorm")
                drift = not isinstance(optimizer, hn.optim.SGD)
            else:
                np.testing.assert_allclose(w, r, rtol=1e-4, atol=1e-4,
                                           err_msg=f"{layer!r} weight {j}")
            k += 1
        if isinstance(layer, (BatchNorm1D, BatchNorm2D)):
            drift = False
    assert hist[0]["loss"] == pytest.approx(ref["loss"][0], rel=1e-4)
    trainer.write_back()            # the model takes the trainer's weights as they are
    for w, r in zip(fused_model.get_weights(), got):
        np.testing.assert_array_equal(w, r)
    try:
        describe_chain(fused_model, training=False)
    except FusionUnsupported as exc:
        # a BatchNorm after an activation or a pool folds into nothing: the
        # trainer says so as describe_chain does
        with pytest.raises(FusionUnsupported, match=str(exc)[:30].replace("(", r"\(")):
            trainer.predict_logits(X[:9])
        assert case in ("mlp-bn", "conv-bn")
        return
    # inference folds the trained BatchNorms (running statistics) in
    np.testing.assert_allclose(trainer.predict_logits(X[:9]), ref_model.predict_logits(X[:9]),
                               rtol=1e-4, atol=1e-4)
    ev, ev_ref = trainer.evaluate(X, y), ref_model.evaluate(X, y)
    assert ev["loss"] == pytest.approx(ev_ref["loss"], rel=1e-4)


def test_batchnorm_segments_device_shuffle_and_loaded_weights(dev):
    rng = np.random.default_rng(31)
    X, y = data(rng, 30, (20,), 3)
    model = _bn_model(_mlp_bn_train, (20,), 3, rng)
    ref = hn.Sequential(_mlp_bn_train(), device="numpy", input_shape=(20,), fuse="never")
    ref.set_weights(model.get_weights())
    trainer = FusedTrainer(model, device=dev, batch_size=8, optimizer="sgd")
    trainer.fit(X, y, epochs=1, seed=5)              # the device shuffle
    order = device_permutation(30, int(np.random.default_rng(5).integers(0, 2 ** 31)))
    ref.optimizer = hn.optim.get_optimizer("sgd")
    for s in range(0, 30, 8):
        xb, yb, _ = ref._batch_to_device(X, y, None, order[s:s + 8])
        ref.train_step(xb, yb)
    for w, r in zip(trainer.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(w, r, rtol=1e-4, atol=1e-5)
    # weights and running statistics set on the model are taken again
    model.set_weights([w * 0.9 + 0.1 if w.ndim == 1 else w for w in ref.get_weights()])
    trainer.load_weights()
    for w, r in zip(trainer.get_weights(), model.get_weights()):
        np.testing.assert_allclose(w, r, rtol=1e-6, atol=1e-7)
    assert any("BatchNorm" in line for line in trainer.program.plan)


def test_sequential_fits_batchnorm_fused_with_validation_where_inference_cannot_fold(dev):
    """A BatchNorm after a ReLU trains fused; its validation (no fold for
    inference) runs through the model's evaluate, layer by layer."""
    rng = np.random.default_rng(37)
    X, y = data(rng, 21, (20,), 3)
    Xv, yv = data(rng, 9, (20,), 3)
    kw = dict(epochs=2, batch_size=8, shuffle=False, validation_data=(Xv, yv),
              optimizer=hn.SGD(lr=0.05, momentum=0.9))
    forced = hn.Sequential(_mlp_bn_train(), device=dev, input_shape=(20,), seed=4,
                           fuse="always")
    before = forced.get_weights()
    with pytest.raises(FusionUnsupported, match="cannot run: .*applies 'relu' before"):
        forced.fit(X, y, **kw)               # before any step
    for w, r in zip(forced.get_weights(), before):
        np.testing.assert_array_equal(w, r)
    # "auto" as on a GPU that measured the fused step faster: trains fused,
    # validates layer by layer
    forced.fusion.mode = "auto"
    forced.fusion.device = lambda model: (dev, "")
    forced.fusion._measured[(8, True)] = (True, "fused (as measured faster)")
    ref = hn.Sequential(_mlp_bn_train(), device="numpy", input_shape=(20,), seed=4,
                        fuse="never")
    hf, hr = forced.fit(X, y, **kw), ref.fit(X, y, **kw)
    assert forced.fusion.decisions[(8, True)][0] is True
    for w, r in zip(forced.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(w, r, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hf["val_loss"], hr["val_loss"], rtol=1e-4)


@pytest.mark.parametrize("case", sorted(BN_CASES))
def test_batchnorm_split_over_work_groups_matches_layer_by_layer(dev, case, monkeypatch):
    """A channel reduced over several work-groups (partials merged by the
    last one to finish; a wide batch on the GPU) gives the one-group result:
    gradients, a few steps' weights and the running statistics.  Parts of 4
    values here, so some parts of a short last batch are empty."""
    import hetnet.devices.opencl.fused as clfused
    monkeypatch.setattr(clfused, "BN_GROUP_VALUES", 4)
    make, shape, k, kernels = BN_CASES[case]
    rng = np.random.default_rng(37)
    X, y = data(rng, 3 * 11 - 4, shape, k)       # 3 batches of 11, the last of 7
    model = _bn_model(make, shape, k, rng)
    ref = hn.Sequential(make(), device="numpy", input_shape=shape, fuse="never")
    w0 = model.get_weights()
    ref.set_weights(w0)
    trainer = FusedTrainer(model, device=dev, batch_size=11, tile=2, optimizer="sgd")
    p = trainer.program
    assert trainer.kernels_per_step == kernels
    assert all(bn["split"] == min(clfused.BN_MAX_SPLIT, -(-11 * bn["S"] // 4))
               for bn in p.bns)
    assert any(bn["split"] > 1 for bn in p.bns)
    loss, grads = trainer.loss_and_gradients(X[:11], y[:11])
    ref_loss, ref_grads = model.loss_and_gradients(X[:11], y[:11])
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(r).max()))
    # the counts are back at 0 after each launch: the next steps merge again
    np.testing.assert_array_equal(p.counts.get(), 0)
    model.set_weights(w0)             # both moved the running statistics once
    trainer.load_weights()
    trainer.fit(X, y, epochs=1, shuffle=False)
    ref.fit(X, y, epochs=1, batch_size=11, shuffle=False, optimizer="sgd")
    for w, r in zip(trainer.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(w, r, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(p.counts.get(), 0)
