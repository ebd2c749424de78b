"""Learning-rate schedules and their use in fit."""

import numpy as np
import pytest

import hetnet as hn


def test_one_cycle_shape():
    s = hn.OneCycle(max_lr=0.1, pct_start=0.25, div_factor=10, final_div_factor=100)
    lrs = [s(i, 100) for i in range(100)]
    assert lrs[0] == pytest.approx(0.01)
    assert max(lrs) == pytest.approx(0.1) and int(np.argmax(lrs)) == 25
    assert lrs[-1] == pytest.approx(0.01 / 100)
    assert all(a <= b for a, b in zip(lrs[:25], lrs[1:26]))       # warm-up rises
    assert all(a >= b for a, b in zip(lrs[25:], lrs[26:]))        # annealing falls


def test_cosine_decay():
    s = hn.CosineDecay(0.2, final_lr=0.02)
    assert s(0, 11) == pytest.approx(0.2)
    assert s(5, 11) == pytest.approx(0.11)
    assert s(10, 11) == pytest.approx(0.02)


def test_fit_applies_schedule_every_step():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((10, 3)).astype(np.float32), rng.integers(0, 2, 10)
    seen = []

    class Spy:
        def on_batch_end(self, model, batch):
            seen.append(model.optimizer.lr)

    model = hn.models.mlp([3, 2], seed=0)
    model.fit(X, y, epochs=2, batch_size=4, lr_schedule=lambda step, total: 0.1 * (step + 1) / total,
              callbacks=[Spy()])
    assert seen == pytest.approx([0.1 * (i + 1) / 6 for i in range(6)])


@pytest.mark.parametrize("make", [lambda: hn.OneCycle(0), lambda: hn.OneCycle(0.1, pct_start=1.5),
                                  lambda: hn.CosineDecay(0.1, final_lr=0.5)])
def test_bad_schedules(make):
    with pytest.raises(ValueError):
        make()


def test_non_callable_schedule_is_refused():
    model = hn.models.mlp([3, 2], seed=0)
    with pytest.raises(ValueError, match="lr_schedule"):
        model.fit(np.zeros((4, 3)), np.zeros(4, dtype=int), lr_schedule=0.1)
