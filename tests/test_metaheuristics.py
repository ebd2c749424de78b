"""SHADE and SHADE-ILS on known functions; budget, seeding and bad input."""

import numpy as np
import pytest

import hetnet as hn
from hetnet.metaheuristics import Problem, minimize


def sphere(X):
    return np.sum(X * X, axis=1)


def rosenbrock(X):
    return np.sum(100.0 * (X[:, 1:] - X[:, :-1] ** 2) ** 2 + (1.0 - X[:, :-1]) ** 2, axis=1)


def rosenbrock_grad(x):
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return g


class Counted:
    """A vectorised function that counts its calls and the rows it evaluated."""

    def __init__(self, fun):
        self.fun, self.calls, self.rows = fun, 0, 0

    def __call__(self, X):
        assert X.ndim == 2
        self.calls += 1
        self.rows += len(X)
        return self.fun(X)


def box(d, r):
    return [(-r, r)] * d


@pytest.mark.parametrize("seed", [0, 1])
def test_shade_sphere_10d(seed):
    res = minimize(sphere, bounds=box(10, 100.0), method="shade", max_evals=20000, seed=seed)
    assert res.fun < 1e-8
    assert res.nfev == 20000
    assert res.fun == pytest.approx(float(sphere(res.x[None])[0]))


def test_shadeils_sphere_and_rosenbrock():
    res = minimize(sphere, bounds=box(10, 100.0), method="shade-ils", max_evals=3000, seed=0)
    assert res.fun < 1e-8
    res = minimize(rosenbrock, bounds=box(5, 5.0), method="shade-ils", max_evals=5000, seed=0,
                   jac=rosenbrock_grad)
    assert res.fun < 1e-8
    assert np.allclose(res.x, 1.0, atol=1e-4)
    # The finite-difference gradient path (D + 1 evaluations per gradient).
    res = minimize(rosenbrock, bounds=box(5, 5.0), method="shade-ils", max_evals=5000, seed=0)
    assert res.fun < 1e-6


@pytest.mark.parametrize("method", ["shade", "shade-ils"])
def test_reproducible(method):
    kw = dict(bounds=box(6, 5.0), method=method, max_evals=1500)
    a = minimize(rosenbrock, seed=7, **kw)
    b = minimize(rosenbrock, seed=7, **kw)
    c = minimize(rosenbrock, seed=8, **kw)
    assert np.array_equal(a.x, b.x) and a.fun == b.fun
    assert np.array_equal(a.history["nfev"], b.history["nfev"])
    assert np.array_equal(a.history["fun"], b.history["fun"])
    assert not np.array_equal(a.x, c.x)


def test_same_seed_same_initial_population_for_every_strategy():
    pops = []
    for opt in (hn.SHADE(pop_size=8), hn.SHADEILS(pop_size=8),
                hn.SHADE(pop_size=8, memory_size=3, gd=lambda x: x, gd_every=5)):
        p = Problem(sphere, 4, 100, lower=np.full(4, -1.0), upper=np.full(4, 1.0))
        opt.start(p, seed=11)
        de = opt.de if isinstance(opt, hn.SHADEILS) else opt
        pops.append(de.pop.copy())
        assert p.nfev == 8
    assert np.array_equal(pops[0], pops[1]) and np.array_equal(pops[0], pops[2])
    # The initial-population stream is public, for a gradient run to start from row 0.
    init_rng, _ = hn.SHADE.seeded_streams(11)
    assert np.array_equal(pops[0], -1.0 + 2.0 * init_rng.random((8, 4)))


def _archive_after(seed, n_beaten, pre_archived, pop_size=10):
    """SHADE whose archive (cap = pop_size) holds ``pre_archived`` parents, after a
    generation where rows 0 .. n_beaten-1 are beaten strictly: (archive rows, the
    parents of that generation, the earlier archive rows)."""
    p = Problem(sphere, 3, 10_000, lower=np.full(3, -1.0), upper=np.full(3, 1.0))
    opt = hn.SHADE(pop_size=pop_size)
    opt.start(p, seed=seed)
    for n_wins in (pre_archived, n_beaten):
        trials = opt.ask(p)
        f = opt.fit.copy()
        f[:n_wins] -= 1.0
        parents = opt.pop.copy()
        earlier = opt.archive[:opt.n_archive].copy()
        opt.tell(trials, f)
    return opt.archive[:opt.n_archive], parents, earlier


def _rows_kept(archive, rows):
    return np.array([any(np.array_equal(a, r) for a in archive) for r in rows])


def test_archive_rule_is_the_authors_one_parent_at_a_time():
    # Each strictly beaten parent is appended while there is room, otherwise it
    # overwrites a uniformly drawn member, which may be a parent archived earlier in
    # the same generation.  Full archive of 10, 5 parents beaten: the first survives
    # the 4 later draws with probability 0.9^4, an older member all 5 with 0.9^5.
    # (Protecting the generation's parents from each other would keep the first
    # always and exactly half the older members.)
    first, old = [], []
    for seed in range(1500):
        arch, parents, earlier = _archive_after(seed, 5, pre_archived=10)
        assert len(arch) == 10
        first.append(_rows_kept(arch, parents[:1])[0])
        old.append(_rows_kept(arch, earlier).mean())
        assert _rows_kept(arch, parents[4:5])[0]          # the last one always stays
    assert np.mean(first) == pytest.approx(0.9 ** 4, abs=0.04)
    assert np.mean(old) == pytest.approx(0.9 ** 5, abs=0.03)
    # Room for 3 of 5: those 3 fill it, the last 2 overwrite random members.
    first = []
    for seed in range(1500):
        arch, parents, earlier = _archive_after(seed, 5, pre_archived=7)
        assert len(arch) == 10 and _rows_kept(arch, parents[4:5])[0]
        first.append(_rows_kept(arch, parents[:1])[0])
    assert np.mean(first) == pytest.approx(0.9 ** 2, abs=0.04)
    # More beaten parents than slots.
    arch, parents, earlier = _archive_after(0, 10, pre_archived=10, pop_size=10)
    assert len(arch) == 10 and _rows_kept(arch, parents[9:10])[0]


@pytest.mark.parametrize("method,jac", [("shade", None), ("shade-ils", None),
                                        ("shade-ils", rosenbrock_grad)])
@pytest.mark.parametrize("max_evals", [1, 9, 10, 23, 157, 1003])
def test_max_evals_never_exceeded(method, jac, max_evals):
    f = Counted(rosenbrock)
    phases = dict(ls_evals=37, de_evals=45) if method == "shade-ils" else {}
    res = minimize(f, bounds=box(5, 5.0), method=method, max_evals=max_evals, seed=0, jac=jac,
                   **phases)
    assert f.rows == res.nfev <= max_evals
    assert res.history["nfev"][-1] == res.nfev
    assert np.all(np.diff(res.history["nfev"]) > 0)
    assert np.all(np.diff(res.history["fun"]) <= 0)
    if method == "shade":
        assert res.nfev == max_evals          # a partial last generation uses what is left


def test_restarts_and_local_searches_keep_the_count_exact():
    # Small phase budgets and a demanding threshold force many cycles and restarts.
    def rastrigin(X):
        return 10 * X.shape[1] + np.sum(X * X - 10 * np.cos(2 * np.pi * X), axis=1)
    f = Counted(rastrigin)
    opt = hn.SHADEILS(pop_size=10, de_evals=20, ls_evals=15, threshold=0.5, max_stagnation=1)
    p = Problem(f, 4, 777, lower=np.full(4, -5.12), upper=np.full(4, 5.12))
    res = opt.run(p, seed=2)
    assert opt.n_restarts >= 3 and opt.n_ls >= 5
    assert f.rows == res.nfev == p.nfev <= 777
    assert res.fun == min(res.history["fun"]) == p.best_f


def test_vectorized_false_equals_vectorized():
    for method in ("shade", "shade-ils"):
        kw = dict(bounds=box(4, 5.0), method=method, max_evals=600, seed=5)
        a = minimize(rosenbrock, **kw)
        b = minimize(lambda x: float(rosenbrock(x[None])[0]), vectorized=False, **kw)
        assert np.array_equal(a.x, b.x) and a.fun == b.fun and a.nfev == b.nfev
        assert np.array_equal(a.history["fun"], b.history["fun"])


@pytest.mark.parametrize("method", ["shade", "shade-ils"])
def test_nan_candidates_lose(method):
    def fun(X):
        f = sphere(X - 0.5)
        f[X[:, 0] > 0.0] = np.nan          # half the box returns NaN
        f[X[:, 1] > 0.8] = np.inf
        return f
    res = minimize(fun, bounds=box(3, 2.0), method=method, max_evals=2000, seed=0)
    assert np.isfinite(res.fun)
    assert res.x[0] <= 0.0 and res.x[1] <= 0.8
    assert res.fun == pytest.approx(0.25, abs=1e-4)   # the best point with x0 <= 0


@pytest.mark.parametrize("method", ["shade", "shade-ils"])
def test_all_nan_function(method):
    res = minimize(lambda X: np.full(len(X), np.nan), bounds=box(3, 1.0), method=method,
                   max_evals=50, seed=0)
    assert res.fun == np.inf and res.nfev == 50 and res.x.shape == (3,)
    assert np.all(np.diff(res.history["nfev"]) > 0)


def test_unbounded_with_x0():
    x0 = np.full(6, 3.0)
    res = minimize(sphere, x0=x0, method="shade", max_evals=6000, seed=0)
    assert res.fun < 1e-8
    res = minimize(rosenbrock, x0=np.zeros(4), method="shade-ils", max_evals=2000, seed=0,
                   jac=rosenbrock_grad)
    assert res.fun < 1e-8


def test_x0_is_the_first_individual():
    x0 = np.full(3, 0.25)
    res = minimize(sphere, bounds=box(3, 1.0), x0=x0, max_evals=1, seed=0)
    assert np.array_equal(res.x, x0) and res.nfev == 1


def test_hybrid_gd_calls_and_never_loses_its_best():
    calls = []

    def gd(x):                      # one gradient step on the shifted sphere
        calls.append(x.copy())
        return x - 0.25 * 2.0 * (x - 0.3)

    f = Counted(lambda X: sphere(X - 0.3))
    opt = hn.SHADE(pop_size=10, gd=gd, gd_every=50)
    p = Problem(f, 5, 1000, lower=np.full(5, -5.0), upper=np.full(5, 5.0))
    res = opt.run(p, seed=0)
    assert res.n_gd == len(calls) and 1000 // 60 <= res.n_gd <= 1000 // 50
    assert f.rows == res.nfev == 1000
    first = res.history["fun"][0]
    assert res.fun <= first
    # The gradient steps help on a convex function, against the same run without them.
    plain = minimize(lambda X: sphere(X - 0.3), bounds=box(5, 5.0), max_evals=1000, seed=0)
    assert res.fun < plain.fun

    # A gd that makes things worse is never accepted in place of the best.
    bad = hn.SHADEILS(pop_size=6, gd=lambda x: x + 10.0, gd_every=20, de_evals=30, ls_evals=10)
    p = Problem(lambda X: sphere(X - 0.3), 5, 400, lower=np.full(5, -20.0),
                upper=np.full(5, 20.0))
    res = bad.run(p, seed=1)
    assert res.n_gd > 0 and np.all(np.diff(res.history["fun"]) <= 0)
    assert res.fun < 1.0


def test_callback_stops():
    seen = []

    def cb(r):
        seen.append(r.nfev)
        return r.nfev >= 200

    res = minimize(sphere, bounds=box(3, 1.0), max_evals=10000, seed=0, callback=cb)
    assert res.nfev == 200 and res.message == "stopped by callback" and seen[-1] == 200


def test_step_engine_driven_by_hand():
    p = Problem(sphere, 4, 55, lower=np.full(4, -1.0), upper=np.full(4, 1.0))
    opt = hn.SHADE(pop_size=10)
    opt.start(p, seed=0)
    steps = 0
    while opt.step(p):
        steps += 1
    assert steps == 5 and p.nfev == 55 and not opt.step(p)
    x, f = opt.best
    assert f == p.best_f and np.array_equal(x, p.best_x)


@pytest.mark.parametrize("kw,match", [
    (dict(pop_size=3), "pop_size must be an int >= 4, got 3"),
    (dict(pop_size=2.5), "pop_size"),
    (dict(pop_size=True), "pop_size"),
    (dict(max_evals=0), "max_evals must be an int >= 1, got 0"),
    (dict(max_evals=-5), "max_evals"),
    (dict(max_evals=10.5), "max_evals"),
    (dict(bounds=[(-1, 1, 0)] * 3), r"shape \(D, 2\).*\(3, 3\)"),
    (dict(bounds=[-1, 1]), r"shape \(D, 2\).*\(2,\)"),
    (dict(bounds=[(-1, 1), (2, 2), (0, 1)]), "variable 1 has lower=2.0 >= upper=2.0"),
    (dict(bounds=[(-1, 1), (0, np.inf)]), "finite"),
    (dict(x0=np.zeros(4)), r"x0 must have shape \(3,\), got shape \(4,\)"),
    (dict(x0=np.zeros((3, 1))), r"x0 must have shape \(3,\)"),
    (dict(x0=np.full(3, 5.0)), "outside bounds"),
    (dict(bounds=None), "give bounds"),
    (dict(method="jade"), "method must be one of"),
    (dict(memory_size=0), "memory_size"),
    (dict(p_max=0.0), "p_max"),
    (dict(gd_every=0, gd=lambda x: x), "gd_every"),
])
def test_bad_settings(kw, match):
    args = dict(bounds=box(3, 1.0), max_evals=100, seed=0)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        minimize(sphere, **args)


def test_bad_functions():
    with pytest.raises(TypeError, match="fun must be callable"):
        minimize(42, bounds=box(3, 1.0))
    with pytest.raises(ValueError, match=r"shape \(10, 1\).*expected shape \(10,\)"):
        minimize(lambda X: sphere(X)[:, None], bounds=box(3, 1.0), max_evals=100)
    with pytest.raises(ValueError, match=r"expected shape \(10,\)"):
        minimize(lambda X: 1.0, bounds=box(3, 1.0), max_evals=100)
    with pytest.raises(ValueError, match="must return a scalar"):
        minimize(lambda x: x, bounds=box(3, 1.0), max_evals=100, vectorized=False)
    with pytest.raises(TypeError, match="jac must be callable"):
        minimize(sphere, bounds=box(3, 1.0), jac="yes")
    with pytest.raises(TypeError, match="gd must be callable"):
        minimize(sphere, bounds=box(3, 1.0), gd=3)
    with pytest.raises(ValueError, match=r"gd returned shape \(2,\)"):
        minimize(sphere, bounds=box(3, 1.0), max_evals=100, gd=lambda x: x[:2], gd_every=10)
