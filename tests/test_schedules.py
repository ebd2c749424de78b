"""Learning-rate schedules and their use in fit."""

import numpy as np
import pytest

import hetnet as hn


def _fastai_cos(start, end, pos):
    return start + (1 + np.cos(np.pi * (1 - pos))) * (end - start) / 2


def test_one_cycle_is_fastais_fit_one_cycle():
    """fastai: pos = i / T; lr combined_cos(pct, max/div, max, max/div_final),
    mom combined_cos(pct, *moms)."""
    s = hn.OneCycle(max_lr=0.1, pct_start=0.25, div_factor=10, final_div_factor=100,
                    moms=(0.95, 0.85, 0.9))
    T = 100
    for i in range(T):
        pos = i / T
        if pos < 0.25:
            lr, mom = _fastai_cos(0.01, 0.1, pos / 0.25), _fastai_cos(0.95, 0.85, pos / 0.25)
        else:
            q = (pos - 0.25) / 0.75
            lr, mom = _fastai_cos(0.1, 0.1 / 100, q), _fastai_cos(0.85, 0.9, q)
        assert s(i, T) == pytest.approx(lr, rel=1e-12)
        assert s.momentum(i, T) == pytest.approx(mom, rel=1e-12)
    lrs = [s(i, T) for i in range(T)]
    assert lrs[0] == pytest.approx(0.01) and int(np.argmax(lrs)) == 25
    assert lrs[25] == pytest.approx(0.1) and s(T, T) == pytest.approx(0.1 / 100)
    assert all(a <= b for a, b in zip(lrs[:25], lrs[1:26]))       # warm-up rises
    assert all(a >= b for a, b in zip(lrs[25:], lrs[26:]))        # annealing falls


def test_one_cycle_defaults_are_fastais():
    s = hn.OneCycle(1.0)
    assert (s.pct_start, s.div_factor, s.final_div_factor, s.moms) == (0.25, 25.0, 1e5,
                                                                       (0.95, 0.85, 0.95))
    assert s(0, 40) == pytest.approx(1 / 25) and s(10, 40) == pytest.approx(1.0)
    assert s.momentum(0, 40) == pytest.approx(0.95) and s.momentum(10, 40) == pytest.approx(0.85)
    assert hn.OneCycle(1.0, moms=None).momentum(3, 40) is None


def test_one_cycle_matches_torch_where_they_coincide():
    """PyTorch's OneCycleLR (cos, two phases) over T + 1 steps with its peak
    at step pct*T (pct_start = (pct*T + 1) / (T + 1)) and final_div_factor
    = ours / div_factor is fastai's schedule for steps 0..T."""
    torch = pytest.importorskip("torch")
    T, pct = 40, 0.25
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.3, total_steps=T + 1, pct_start=(pct * T + 1) / (T + 1),
        anneal_strategy="cos", div_factor=25, final_div_factor=1e5 / 25, three_phase=False,
        base_momentum=0.85, max_momentum=0.95)
    ours = hn.OneCycle(0.3, pct_start=pct)
    for i in range(T + 1):
        group = opt.param_groups[0]
        assert ours(i, T) == pytest.approx(group["lr"], rel=1e-9)
        assert ours.momentum(i, T) == pytest.approx(group["momentum"], rel=1e-9)
        opt.step()
        if i < T:
            sched.step()


def test_fit_cycles_the_optimizers_momentum():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((16, 3)).astype(np.float32), rng.integers(0, 2, 16)
    s = hn.OneCycle(0.05, pct_start=0.5)
    for opt, attr in ((hn.SGD(0.01, momentum=0.9), "momentum"), (hn.Adam(), "beta1"),
                      (hn.RMSProp(), "momentum")):
        seen = []

        class Spy:
            def on_batch_end(self, model, batch):
                seen.append((model.optimizer.lr, getattr(model.optimizer, attr)))

        model = hn.models.mlp([3, 2], seed=0)
        model.fit(X, y, epochs=2, batch_size=4, optimizer=opt, lr_schedule=s, callbacks=[Spy()])
        expected = [(s(i, 8), s.momentum(i, 8)) for i in range(8)]
        assert np.allclose(seen, expected, rtol=1e-12), (attr, seen)


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
                                  lambda: hn.OneCycle(0.1, moms=(0.9, 1.0, 0.9)),
                                  lambda: hn.OneCycle(0.1, moms=(0.9, 0.8)),
                                  lambda: hn.CosineDecay(0.1, final_lr=0.5)])
def test_bad_schedules(make):
    with pytest.raises(ValueError):
        make()


def test_non_callable_schedule_is_refused():
    model = hn.models.mlp([3, 2], seed=0)
    with pytest.raises(ValueError, match="lr_schedule"):
        model.fit(np.zeros((4, 3)), np.zeros(4, dtype=int), lr_schedule=0.1)
