"""Training by metaheuristics (hetnet.model.evolve) and the population pass
(hetnet.runtime.population)."""

import numpy as np
import pytest

import hetnet as hn
from hetnet.metaheuristics import Problem
from hetnet.model.evolve import layer_sampler
import hetnet.runtime.population as population

from hetnet.callbacks import Callback, EarlyStopping
from hetnet.devices.reference import NumpyDevice

from conftest import make_device


def _conv_model(device, bn=False):
    layers = [hn.Conv2D(1, 3, 3, init="glorot")]
    if bn:
        layers.append(hn.BatchNorm2D(3))
    layers += [hn.ReLU(), hn.MaxPool2D(2), hn.Conv2D(3, 4, 3, padding=1), hn.Tanh(),
               hn.AvgPool2D(2), hn.Flatten(), hn.Dense(16, 6, init="glorot")]
    if bn:
        layers.append(hn.BatchNorm1D(6))
    layers += [hn.Sigmoid(), hn.Dense(6, 3, init="glorot")]
    return hn.Sequential(layers, device=device, seed=3)


def _data(n=23, shape=(1, 10, 10), k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n,) + shape).astype(np.float32)
    return X, rng.integers(0, k, n)


def _candidates(model, P=4, seed=1):
    rng = np.random.default_rng(seed)
    w = model.flat_weights()
    return np.stack([w + 0.3 * rng.standard_normal(w.shape).astype(np.float32)
                     for _ in range(P)])


@pytest.mark.parametrize("device_name", ["numpy", "cpu", "opencl"])
@pytest.mark.parametrize("kind", ["conv", "conv-bn", "mlp", "mlp-bn", "residual",
                                  "residual-first", "dropout", "dropout-first"])
@pytest.mark.parametrize("small_chunks", [False, True])
def test_population_pass_equals_single_evaluations(device_name, kind, small_chunks,
                                                   monkeypatch):
    dev = NumpyDevice() if device_name == "numpy" else make_device(device_name)
    if small_chunks:   # several image chunks (without BatchNorm) / candidate chunks (with)
        monkeypatch.setattr(population, "CHUNK_BYTES", 3000)
    if kind == "mlp":
        model = hn.models.mlp([7, 5, 4, 3], device=dev, seed=2)
        X, y = _data(shape=(7,))
    elif kind == "mlp-bn":   # BatchNorm on the candidates' features side by side
        model = hn.Sequential([hn.Dense(7, 5), hn.BatchNorm1D(5), hn.ReLU(), hn.Dense(5, 3),
                               hn.Softmax()], loss="mse", device=dev, seed=2)
        X, y = _data(shape=(7,))
        y = np.eye(3, dtype=np.float32)[y]
    elif kind == "residual":   # a stem, a projection block with BatchNorm, an identity block
        model = hn.Sequential([
            hn.Conv2D(1, 3, 3), hn.BatchNorm2D(3), hn.ReLU(),
            hn.Residual([hn.Conv2D(3, 5, 3, stride=2, padding=1, bias=False),
                         hn.BatchNorm2D(5), hn.ReLU(), hn.Conv2D(5, 5, 3, padding=1)],
                        shortcut=[hn.Conv2D(3, 5, 1, stride=2), hn.BatchNorm2D(5)]),
            hn.ReLU(),
            hn.Residual([hn.Conv2D(5, 5, 3, padding=1), hn.Tanh(),
                         hn.Conv2D(5, 5, 1)]), hn.ReLU(),
            hn.GlobalAvgPool2D(), hn.Dense(5, 3)], device=dev, seed=2)
        X, y = _data()
    elif kind == "residual-first":   # a block before any other layer with parameters
        model = hn.Sequential([
            hn.Residual([hn.Dense(7, 7), hn.ReLU(), hn.Dense(7, 7)]), hn.Sigmoid(),
            hn.Dense(7, 3)], device=dev, seed=2)
        X, y = _data(shape=(7,))
    elif kind == "dropout":   # after the candidates' channels side by side, and further on
        model = hn.Sequential([
            hn.Conv2D(1, 3, 3), hn.ReLU(), hn.Dropout(0.3), hn.MaxPool2D(2), hn.Flatten(),
            hn.Dense(48, 6), hn.Tanh(), hn.Dropout(0.5), hn.Dense(6, 3)], device=dev, seed=2)
        X, y = _data()
    elif kind == "dropout-first":   # on the shared input: still each candidate its own mask
        model = hn.Sequential([hn.Dropout(0.4), hn.Dense(7, 5), hn.ReLU(), hn.Dense(5, 3)],
                              device=dev, seed=2)
        X, y = _data(shape=(7,))
    else:
        model = _conv_model(dev, bn=kind == "conv-bn")
        X, y = _data()
    model.build(X.shape[1:])
    W = _candidates(model)
    drops = [layer for layer in model.layers if isinstance(layer, hn.Dropout)]
    passes = [d.passes for d in drops]
    before = model.get_weights()
    batched = model.population_loss(W, X, y)
    assert model.runtime.population_fallback_reason is None
    for a, b in zip(before, model.get_weights()):   # weights and running statistics untouched
        np.testing.assert_array_equal(a, b)
    # P single evaluations: each candidate loaded and run forward alone
    # Dropout's pass counts moved on by P, as P single training passes move them
    assert [d.passes for d in drops] == [k + len(W) for k in passes]
    for d, k in zip(drops, passes):
        d.passes = k
    Xc, yt, _ = model._prepare(X, y)
    with model.runtime.session():
        single = model.runtime.population_loss(W, Xc, yt, method="generic")
    np.testing.assert_allclose(batched, single, rtol=1e-5)
    assert len(set(np.round(batched, 6))) == len(W)
    if drops:   # the masks matter: the next P passes draw other masks, other losses
        again = model.population_loss(W, X, y)
        assert not np.allclose(again, batched, rtol=1e-6)


def test_population_pass_falls_back_and_says_why(monkeypatch):
    # every layer kind has a population pass today: take Dropout's away to
    # see the fallback (a layer kind without one) run and say why
    monkeypatch.setattr(population, "_SUPPORTED", tuple(
        k for k in population._SUPPORTED if k is not hn.Dropout))
    model = hn.Sequential([hn.Dense(4, 5), hn.Dropout(0.5), hn.Dense(5, 2)], device="cpu",
                          seed=0, input_shape=(4,))
    X, y = _data(n=9, shape=(4,), k=2)
    out = model.population_loss(_candidates(model, P=3), X, y)
    assert out.shape == (3,) and np.isfinite(out).all()
    assert "Dropout" in model.runtime.population_fallback_reason
    with pytest.raises(ValueError, match="Dropout"):
        model.runtime.population_loss(_candidates(model, P=3), X, y, method="batched")


def _fit(opt, max_evals=60, **kw):
    X, y = _data(n=30)
    model = _conv_model("cpu", bn=kw.pop("bn", False))
    h = model.fit(X, y, optimizer=opt, max_evals=max_evals, **kw)
    return model, h, X, y


def test_same_seed_same_run():
    m1, h1, _, _ = _fit(hn.SHADEILS(de_evals=20, ls_evals=10), epochs=3)
    m2, h2, _, _ = _fit(hn.SHADEILS(de_evals=20, ls_evals=10), epochs=3)
    assert h1["loss"] == h2["loss"] and h1["evals"] == h2["evals"]
    np.testing.assert_array_equal(m1.flat_weights(), m2.flat_weights())


def test_every_strategy_starts_from_the_same_population():
    X, y = _data(n=12)
    model = _conv_model("cpu")
    model.build(X.shape[1:])
    pops = []
    for opt in (hn.SHADE(), hn.SHADEILS()):
        problem = Problem(lambda P: model.population_loss(P.astype(np.float32), X, y),
                          model.count_params(), 100, sampler=layer_sampler(model))
        opt.start(problem, seed=model.seed)
        pops.append(np.array(opt.pop if isinstance(opt, hn.SHADE) else opt.de.pop))
    np.testing.assert_array_equal(pops[0], pops[1])
    # each individual is a fresh Glorot initialisation: biases zero, weights spread
    assert np.ptp(pops[0][:, 0]) > 0


def test_the_sampler_is_the_layers_initialisation():
    # drawn from the stream the model's build used, one individual is the built weights
    layers = [hn.Conv2D(1, 2, 3, init="glorot"), hn.BatchNorm2D(2), hn.ReLU(),
              hn.Residual([hn.Conv2D(2, 2, 3, padding=1), hn.ReLU(),
                           hn.Conv2D(2, 2, 3, padding=1, init="lecun")]),
              hn.Flatten(), hn.Dense(2 * 8 * 8, 3, init="glorot")]
    model = hn.Sequential(layers, device="cpu", seed=11, input_shape=(1, 10, 10))
    rng = np.random.default_rng(np.random.SeedSequence(11).spawn(2)[0])
    pop = layer_sampler(model)(rng, 2)
    np.testing.assert_array_equal(pop[0].astype(np.float32), model.flat_weights())
    assert not np.array_equal(pop[0], pop[1])


@pytest.mark.parametrize("opt", [hn.SHADE(), hn.SHADEILS(de_evals=20, ls_evals=7),
                                 hn.SHADE(gd=hn.Adam(0.01), gd_every=15)])
def test_max_evals_never_exceeded_and_reported(opt):
    _, h, _, _ = _fit(opt, max_evals=47, epochs=4, validation_data=_data(n=8, seed=5))
    assert h.n_evals <= 47 and h["evals"][-1] == h.n_evals == h.result.nfev
    assert h["evals"] == sorted(h["evals"]) and len(h["loss"]) == len(h["val_loss"]) <= 4
    assert h["loss"] == sorted(h["loss"], reverse=True)   # the best so far


def test_hybrid_never_ends_above_its_starting_best():
    # a learning rate this large sends the gradient epoch far off: it must not be taken
    opt = hn.SHADE(gd=hn.SGD(lr=1e4), gd_every=10)
    model, h, X, y = _fit(opt, max_evals=40, epochs=2)
    start_best = h.result.history["fun"][0]
    assert h.result.n_gd >= 2
    assert h["loss"][-1] <= start_best
    assert model.evaluate(X, y)["loss"] == pytest.approx(h["loss"][-1], rel=1e-5)


def test_nan_candidates_lose():
    opt = hn.SHADE(gd=lambda x: x * np.nan, gd_every=10)
    model, h, _, _ = _fit(opt, max_evals=40, epochs=2)
    assert h.result.n_gd >= 2 and np.isfinite(h["loss"]).all()
    assert np.isfinite(model.flat_weights()).all()


def test_batchnorm_statistics_follow_the_best_individual():
    model, h, X, y = _fit(hn.SHADE(), max_evals=30, epochs=2, bn=True)
    # inference (running statistics) agrees with the training-mode loss of the
    # best individual up to the unbiased variance the running statistics keep
    assert model.evaluate(X, y)["loss"] == pytest.approx(h["loss"][-1], rel=0.05)


def test_callbacks_and_early_stopping_see_epochs():
    seen = []

    class Spy(Callback):
        def on_epoch_end(self, model, epoch, logs):
            seen.append((epoch, logs["evals"]))

    stop = EarlyStopping("val_loss", patience=1, restore_best_weights=True)
    _, h, _, _ = _fit(hn.SHADE(), max_evals=200, epochs=10, callbacks=[Spy(), stop],
                      validation_data=_data(n=8, seed=7))
    assert [e for e, _ in seen] == list(range(len(seen))) and len(seen) == h.epochs


def test_bad_settings():
    X, y = _data(n=10)
    model = _conv_model("cpu")
    with pytest.raises(ValueError, match="max_evals"):
        model.fit(X, y, optimizer=hn.SHADE(), max_evals=0)
    with pytest.raises(ValueError, match="max_evals"):
        model.fit(X, y, optimizer=hn.SHADE())
    with pytest.raises(ValueError, match="max_evals"):
        model.fit(X, y, optimizer=hn.Adam(), max_evals=100)
    with pytest.raises(ValueError, match="pop_size"):
        model.fit(X, y, optimizer=hn.SHADE(pop_size=3), max_evals=100)
    with pytest.raises(TypeError, match="gd"):
        model.fit(X, y, optimizer=hn.SHADE(gd=3), max_evals=100)


@pytest.mark.parametrize("name", ["shade", "shade-ils", "shade-gd", "shade-ils-gd"])
def test_estimator_names(name):
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    clf = hn.HetNetClassifier(hidden_layer_sizes=(4,), optimizer=name, max_evals=30,
                              random_state=0, device="cpu").fit(X, y)
    assert clf.n_evals_ <= 30 and clf.predict(X).shape == (40,)
    assert 0.0 <= clf.score(X, y) <= 1.0
    reg = hn.HetNetRegressor(hidden_layer_sizes=(4,), optimizer=name, max_evals=30,
                             random_state=0, device="cpu").fit(X, X[:, 0] - X[:, 1])
    assert np.isfinite(reg.score(X, X[:, 0] - X[:, 1]))
    with pytest.raises(ValueError, match="partial_fit"):
        clf.partial_fit(X, y)
