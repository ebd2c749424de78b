"""Run under ``mpirun -n K python evolve.py MODE``: a metaheuristic's
``fit(distributed=...)`` against the same fit in one process, and the
callbacks that write files in data-parallel fits.

evolve       SHADE, SHADE-ILS (its L-BFGS local search) and the SHADE + Adam
             hybrid (its gradient epochs data-parallel too), each on every
             rank's shard of the training set, equal and unequal
             (balance=[1, 2, ...]) and speed-measured shares: every rank
             ends every epoch with the same best weights and history (to
             the bit: the search decides alike everywhere), those of one
             process within 1e-5; evaluations counted as in one process;
             validation over the ranks; the ranks built from different
             seeds search from rank 0's; seed=None searches alike too;
             BatchNorm's running statistics stay identical across ranks.
gdspeed      a hybrid's gradient epochs with balance="speed" and rank 1 made
             slower: the epochs share one DataParallel and, after the first,
             split their mini-batches by the measured speeds (rank 0 takes
             more rows), not equally; the ranks still agree to the bit.
single       one rank: ``distributed=True`` is the plain fit, to the bit.
files        ModelCheckpoint and CSVLogger in a data-parallel gradient fit and
             in a distributed metaheuristic's: rank 0 alone writes, the
             checkpoint loads as the trained model; ``argv[2]`` is the folder.
Prints ``OK rank R`` on success; any failure raises, which aborts the job.
"""

import os
import sys

import numpy as np

import hetnet as hn
from hetnet.callbacks import CSVLogger, ModelCheckpoint
from hetnet.distributed import init


def mlp(seed, device, bn=False):
    layers = [hn.Dense(12, 16)] + ([hn.BatchNorm1D(16)] if bn else []) + [
        hn.ReLU(), hn.Dense(16, 3)]
    return hn.Sequential(layers, seed=seed, device=device, input_shape=(12,))


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 12)).astype(np.float32)
    y = rng.integers(0, 3, n).astype(np.int32)
    return X, y


class SameEverywhere:
    """After every epoch: every rank holds the same weights and logs, to the bit."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.epochs = 0

    def on_epoch_end(self, model, epoch, logs):
        sums = self.ctx.checksum(model.get_weights())
        assert np.all(sums == sums[0]), f"epoch {epoch}: best weights differ: {sums.tolist()}"
        figures = np.array([logs["loss"], logs["evals"], logs.get("val_loss", 0.0)])
        every = self.ctx.allgather(figures)
        assert np.all(every == every[0]), f"epoch {epoch}: logs differ: {every.tolist()}"
        self.epochs += 1


def compare(ctx, opt, balance, max_evals=60, epochs=3, n=90, bn=False, tol=1e-5):
    X, y = data(n)
    val = data(17, seed=3)
    ref = mlp(7, ctx.device, bn)
    href = ref.fit(X, y, optimizer=opt(), max_evals=max_evals, epochs=epochs,
                   validation_data=val)
    ctx.balance = balance
    model = mlp(7 + 10 * ctx.rank, ctx.device, bn)      # the search takes rank 0's seed
    same = SameEverywhere(ctx)
    h = model.fit(X, y, optimizer=opt(), max_evals=max_evals, epochs=epochs,
                  validation_data=val, distributed=ctx, callbacks=[same], verbose=1)
    assert same.epochs == len(h["loss"]) >= 2, (same.epochs, h["loss"])
    assert h.n_evals == href.n_evals <= max_evals, (h.n_evals, href.n_evals)
    assert h["evals"] == href["evals"], (h["evals"], href["evals"])
    np.testing.assert_allclose(h["loss"], href["loss"], rtol=tol)
    np.testing.assert_allclose(h["val_loss"], href["val_loss"], rtol=tol)
    worst = max(float(np.abs(a - b).max()) for a, b in zip(model.get_weights(), ref.get_weights()))
    assert worst <= tol, f"{type(opt()).__name__} balance={balance}: weights differ by {worst:.3g}"
    assert sum(h["shares"][-1]) == n and len(h["shares"][-1]) == ctx.size, h["shares"]
    ctx.print(f"{type(opt()).__name__} balance={balance} shares={h['shares'][0]} "
              f"evals={h.n_evals} max |dw|={worst:.2g}")
    return model, h


def evolve(ctx):
    k = ctx.size
    compare(ctx, lambda: hn.SHADE(pop_size=8), "equal")
    compare(ctx, lambda: hn.SHADEILS(pop_size=6, de_evals=18, ls_evals=8), list(range(1, k + 1)))
    compare(ctx, lambda: hn.SHADE(pop_size=6, gd=hn.Adam(0.01), gd_every=12), "speed",
            max_evals=50)
    # BatchNorm: per-rank statistics in the evaluations (not one process's),
    # so only the agreement across ranks is checked, running statistics included
    from hetnet.distributed.data_parallel import batch_statistics
    X, y = data(64)
    ctx.balance = "equal"
    model = mlp(3, ctx.device, bn=True)
    same = SameEverywhere(ctx)
    model.fit(X, y, optimizer=hn.SHADE(pop_size=6), max_evals=30, epochs=2, distributed=ctx,
              callbacks=[same])
    stats = [np.asarray(layer.device.to_host(a)) for layer, _, _, a in batch_statistics(model)]
    sums = ctx.checksum(stats)
    assert len(stats) == 2 and np.all(sums == sums[0]), sums.tolist()
    # seed=None: rank 0 draws the seed, every rank searches alike
    model = hn.Sequential([hn.Dense(12, 3)], device=ctx.device, input_shape=(12,))
    same = SameEverywhere(ctx)
    model.fit(X, y, optimizer=hn.SHADE(pop_size=6), max_evals=24, epochs=2, distributed=ctx,
              callbacks=[same])


class Spy(CSVLogger):
    """A CSVLogger that notes whether it had its file open at an epoch's end."""

    opened = False

    def on_epoch_end(self, model, epoch, logs):
        self.opened |= self._file is not None
        return super().on_epoch_end(model, epoch, logs)


def single(ctx):
    """One rank: a distributed metaheuristic is the plain one, to the bit."""
    assert ctx.size == 1
    X, y = data(40)
    a, b = mlp(3, ctx.device), mlp(3, ctx.device)
    ha = a.fit(X, y, optimizer=hn.SHADEILS(pop_size=6, de_evals=12, ls_evals=6), max_evals=30,
               epochs=2)
    hb = b.fit(X, y, optimizer=hn.SHADEILS(pop_size=6, de_evals=12, ls_evals=6), max_evals=30,
               epochs=2, distributed=True)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert ha["loss"] == hb["loss"], (ha["loss"], hb["loss"])


def files(ctx, folder):
    X, y = data(64)
    ctx.balance = "equal"
    # a data-parallel gradient fit
    model = mlp(1, ctx.device)
    if not ctx.is_root:
        def refuse(path):
            raise AssertionError(f"rank {ctx.rank} wrote a checkpoint")
        model.save_checkpoint = refuse
    ckpt = os.path.join(folder, "ckpt-{epoch}.npz")
    log = os.path.join(folder, "log.csv")
    logger = Spy(log)
    model.fit(X, y, epochs=2, batch_size=16, optimizer=hn.SGD(lr=0.1), distributed=ctx,
              callbacks=[ModelCheckpoint(ckpt), logger])
    assert logger.opened == ctx.is_root, (ctx.rank, logger.opened)
    ctx.barrier()
    assert sorted(os.listdir(folder)) == ["ckpt-1.npz", "ckpt-2.npz", "log.csv"], \
        os.listdir(folder)
    loaded = hn.load(os.path.join(folder, "ckpt-2.npz"))
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    rows = open(log).read().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,loss"), rows
    # a distributed metaheuristic's log
    log2 = os.path.join(folder, "evolve.csv")
    logger = Spy(log2)
    model.fit(X, y, optimizer=hn.SHADE(pop_size=6), max_evals=24, epochs=2, distributed=ctx,
              callbacks=[logger])
    assert logger.opened == ctx.is_root, (ctx.rank, logger.opened)
    ctx.barrier()
    rows = open(log2).read().splitlines()
    assert len(rows) == 3 and "evals" in rows[0], rows


def gdspeed(ctx):
    import time
    from hetnet.distributed import data_parallel
    made = []

    class Recorded(data_parallel.DataParallel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)
    data_parallel.DataParallel = Recorded
    X, y = data(96)
    ctx.balance = "speed"
    model = mlp(5, ctx.device)
    if ctx.rank == 1:           # a slower device: every step and evaluation takes longer
        rt = model.runtime
        step, pop = rt.train_step, rt.population_loss

        def slow_step(*args, **kwargs):
            time.sleep(0.004)
            return step(*args, **kwargs)

        def slow_pop(*args, **kwargs):
            time.sleep(0.004)
            return pop(*args, **kwargs)
        rt.train_step, rt.population_loss = slow_step, slow_pop
    same = SameEverywhere(ctx)
    h = model.fit(X, y, optimizer=hn.SHADE(pop_size=6, gd=hn.Adam(0.01), gd_every=12),
                  max_evals=72, epochs=3, batch_size=24, distributed=ctx, callbacks=[same])
    assert h.result.n_gd >= 3 and len(made) == 1, (h.result.n_gd, len(made))
    shares = made[0].share_history
    assert len(shares) == h.result.n_gd, shares
    # the first gradient epoch may split equally (nothing measured yet); every later one
    # follows the speeds measured before it: the slowed rank 1 takes fewer rows
    assert all(sum(s) == 24 for s in shares), shares
    assert all(s[0] > s[1] for s in shares[1:]), shares
    # the gradient epochs' averager took the shared-memory window; the search freed it
    assert made[0].averager.transport_used == "shm" and made[0].averager._shm is None
    ctx.print(f"hybrid gradient epochs, balance=speed: shares {shares}")


def main(mode):
    ctx = init(device="cpu", timeout=60)
    if mode == "files":
        files(ctx, sys.argv[2])
    else:
        {"evolve": evolve, "single": single, "gdspeed": gdspeed}[mode](ctx)
    sys.stdout.write(f"OK rank {ctx.rank}\n")


if __name__ == "__main__":
    main(sys.argv[1])
