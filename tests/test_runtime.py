"""The runtime's public seams: flat weights, the gradient hook, the
population loss (many weight vectors), and L-BFGS through scipy."""

import numpy as np
import pytest

import hetnet as hn
from hetnet.runtime import Runtime, fuse_activations

from conftest import assert_close


def _net(device, seed=0):
    return hn.Sequential([hn.Conv2D(1, 3, 3, padding=1), hn.ReLU(), hn.MaxPool2D(2),
                          hn.Flatten(), hn.Dense(48, 8), hn.Tanh(), hn.Dense(8, 3)],
                         device=device, seed=seed, input_shape=(1, 8, 8))


def _data(n=12, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, n)


def test_fusion_follows_what_layers_declare():
    layers = [hn.Dense(4, 4), hn.ReLU(), hn.Dense(4, 4), hn.Softmax(), hn.Flatten(), hn.Tanh()]
    steps = fuse_activations(layers)
    assert [type(s).__name__ for s in steps] == ["Dense", "Dense", "Softmax", "Flatten", "Tanh"]
    assert layers[0].activation == "relu" and layers[2].activation == "identity"


def test_flat_weights_round_trip(device):
    model = _net(device)
    v = model.flat_weights()
    assert v.dtype == np.float32 and v.shape == (model.count_params(),)
    np.testing.assert_array_equal(v, np.concatenate([w.ravel() for w in model.get_weights()]))
    model.set_flat_weights(2 * v)
    np.testing.assert_array_equal(model.flat_weights(), 2 * v)
    with pytest.raises(ValueError, match="flat weight vector"):
        model.set_flat_weights(v[:-1])


def test_loss_and_flat_gradient_matches_loss_and_gradients(device):
    X, y = _data()
    model = _net(device)
    v = model.flat_weights() * 0.5
    loss, grad = model.loss_and_flat_gradient(v, X, y)
    np.testing.assert_array_equal(model.flat_weights(), v)      # left at v
    loss2, grads = model.loss_and_gradients(X, y)
    assert loss == pytest.approx(loss2, rel=1e-6)
    assert grad.dtype == np.float64
    assert_close(grad, np.concatenate([g.ravel() for g in grads]), what="flat gradient")


def test_population_loss_equals_single_evaluations(device):
    X, y = _data()
    model = _net(device)
    v0 = model.flat_weights()
    rng = np.random.default_rng(3)
    W = (v0 + 0.1 * rng.standard_normal((5, v0.size))).astype(np.float32)
    losses = model.population_loss(W, X, y)
    assert losses.shape == (5,)
    np.testing.assert_array_equal(model.flat_weights(), v0)     # the weights are back
    singles = []
    for w in W:
        model.set_flat_weights(w)
        singles.append(model.loss_and_gradients(X, y)[0])
    assert_close(losses, np.array(singles), rtol=1e-5, what="population vs single losses")
    assert len(set(np.round(losses, 6))) > 1                   # the candidates differ
    with pytest.raises(ValueError, match="flat weight vectors"):
        model.population_loss(W[:, :-1], X, y)


def test_gradient_hook_sees_every_gradient_before_the_update(device):
    X, y = _data()
    model = _net(device)
    model.fit(X, y, epochs=1, batch_size=12, optimizer=hn.SGD(lr=0.1), shuffle=False)
    before = model.flat_weights()
    _, expected = model.loss_and_gradients(X, y)
    seen = []

    def hook(grads):
        # every device holding parameters, each one flat buffer; nothing updated yet
        seen.append(sum(int(np.prod(dev.to_host(g).shape)) for dev, g in grads.items()))
        np.testing.assert_array_equal(model.flat_weights(), before)
        host = np.concatenate([np.ravel(dev.to_host(g)) for dev, g in grads.items()])
        total = np.concatenate([g.ravel() for g in expected])
        assert_close(np.sort(host[host != 0]), np.sort(total[total != 0]), what="hooked grads")

    assert model.add_gradient_hook(hook) is hook
    model.fit(X, y, epochs=1, batch_size=12, shuffle=False)
    assert seen and seen[0] >= model.count_params()
    assert not np.array_equal(model.flat_weights(), before)    # the update ran after it


def test_hooked_steps_train_like_interleaved_ones(device):
    """With a hook that changes nothing, full backward then update gives the
    weights the interleaved update-during-backward path gives."""
    X, y = _data(24)
    plain, hooked = _net(device), _net(device)
    hooked.add_gradient_hook(lambda grads: None)
    for m in (plain, hooked):
        m.fit(X, y, epochs=2, batch_size=8, optimizer=hn.SGD(lr=0.05, momentum=0.9),
              shuffle=False)
    for a, b in zip(plain.get_weights(), hooked.get_weights()):
        assert_close(a, b, rtol=1e-5, what="hooked vs interleaved")


def test_a_hook_that_zeroes_gradients_stops_learning(device):
    X, y = _data()
    model = _net(device)
    model.build((1, 8, 8))

    def zero(grads):
        for dev, g in grads.items():
            dev.scale(0.0, g)
    model.add_gradient_hook(zero)
    before = model.flat_weights()
    model.fit(X, y, epochs=2, batch_size=6, optimizer=hn.SGD(lr=0.5), shuffle=False)
    np.testing.assert_array_equal(model.flat_weights(), before)
    model.runtime.remove_gradient_hook(zero)
    model.fit(X, y, epochs=1, batch_size=6, shuffle=False)
    assert not np.array_equal(model.flat_weights(), before)


def test_lbfgs_through_flat_weights():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    X, y = _data(30)
    model = _net("numpy")
    start, _ = model.loss_and_flat_gradient(model.flat_weights(), X, y)
    res = scipy_optimize.minimize(lambda v: model.loss_and_flat_gradient(v, X, y),
                                  model.flat_weights().astype(np.float64), jac=True,
                                  method="L-BFGS-B", options={"maxiter": 30})
    assert res.fun < 0.5 * start


def test_runtime_places_and_times_a_chain():
    model = _net("numpy")
    rt = model.runtime
    assert isinstance(rt, Runtime) and rt.steps == model._steps
    assert rt.measure_placement([rt.steps[0].device] * len(rt.steps), 4, True, repeats=1) > 0
    with pytest.raises(ValueError, match="needs 5 devices"):
        rt.place([rt.steps[0].device])


def test_set_flat_weights_through_a_residual_block_keeps_its_batchnorm_state(device):
    # a block lists each sub-layer's parameters then state in turn, not all
    # parameters first: the flat vector must land in the right arrays
    model = hn.Sequential([
        hn.Conv2D(1, 2, 3, padding=1),
        hn.Residual([hn.Conv2D(2, 2, 3, padding=1), hn.BatchNorm2D(2), hn.ReLU(),
                     hn.Conv2D(2, 2, 1)], shortcut=[hn.Conv2D(2, 2, 1), hn.BatchNorm2D(2)]),
        hn.Flatten(), hn.Dense(2 * 8 * 8, 3)], device=device, seed=0, input_shape=(1, 8, 8))
    X, y = _data()
    model.fit(X, y, epochs=1, batch_size=6, optimizer=hn.SGD(lr=0.01))  # moves running stats
    states = [w for w in model.get_weights() if w.ndim == 1]
    v = model.flat_weights()
    model.set_flat_weights(-v)
    np.testing.assert_array_equal(model.flat_weights(), -v)
    after = [w for w in model.get_weights() if w.ndim == 1]
    block = model.layers[1]
    bn = block.branch[1]
    running = [bn.device.to_host(bn.state[k]) for k in bn.state]
    assert (running[1] > 0).all()                      # running_var still a variance
    assert len(after) == len(states)
    for a, b in zip(states, after):
        if not np.array_equal(a, b):                   # a parameter vector: negated
            np.testing.assert_array_equal(a, -b)
