"""Run under ``mpirun -n K python fit.py MODE``: ``fit(distributed=...)``
against a plain fit of the same model in the same process.

equivalence  K ranks at global batch B end with the weights of one process
             at batch B (same seed, same shuffle) within 1e-5 after at least
             10 steps, for an MLP and a small conv net, with equal shares,
             with a fixed unequal split (balance=[1, 3, ...]) and with shares
             re-measured by speed each epoch; a last batch smaller than K
             (a rank with no rows) and a second fit continuing the first's
             optimizer state included, and a short last batch whose split
             matches one rank's plan and not another's.  No BatchNorm here: with it the
             ranks normalise by per-rank statistics (PyTorch DDP without
             SyncBatchNorm), which is not one process at batch B
             (mode ``batchnorm``).  Every rank's weights are compared by
             checksum after every step.  evaluate/predict with
             ``distributed=`` match the plain ones.
single       one rank: ``fit(distributed=True)`` gives the plain fit's
             weights and history to the bit.
batchnorm    (when hetnet has BatchNorm1D) the replicas stay identical,
             running statistics included, at the top level and inside an
             ``hn.Residual`` block.
placement    ranks that placed the model on unlike devices are refused.
opencl       rank 0 on the CPU, the others on an OpenCL device: the same
             within 1e-5; replicas equal to 1e-6 after every step (the
             devices round their updates differently) and to the bit after
             every epoch (rank 0's weights re-broadcast where they differ).
transports   the same data-parallel fits (an MLP with unequal shares, the
             conv net with speed shares over two epochs) with
             transport="shm" and transport="mpi": weights within 1e-6 and
             bit-identical replicas; the window a fit made for itself is
             freed at its end, one of a DataParallel passed in is kept for
             the next fit, until closed.
resume       a data-parallel fit interrupted after epoch 2 and resumed from
             rank 0's checkpoint (``resume_from=`` on every rank) ends as the
             uninterrupted data-parallel fit (weights within 1e-6, history
             equal; Adam's state, the shuffle position and Dropout's counters
             travel in the file); with ``balance="speed"`` the resumed fit's
             first epoch uses the split the checkpoint recorded; a
             distributed SHADE hybrid resumes to the uninterrupted search's
             best weights.  ``argv[2]`` is the folder for the checkpoints.
Prints ``OK rank R`` on success; any failure raises, which aborts the job.
"""

import sys

import numpy as np

import hetnet as hn
from hetnet.distributed import init


def mlp(seed, device):
    return hn.Sequential([hn.Dense(12, 16), hn.ReLU(), hn.Dense(16, 10), hn.Tanh(),
                          hn.Dense(10, 3)], seed=seed, device=device, input_shape=(12,))


def convnet(seed, device):
    return hn.Sequential([hn.Conv2D(1, 4, 3, padding=1), hn.ReLU(), hn.MaxPool2D(2),
                          hn.Flatten(), hn.Dense(4 * 4 * 4, 3)], seed=seed, device=device,
                         input_shape=(1, 8, 8))


def data(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n,) + shape).astype(np.float32)
    y = rng.integers(0, 3, n).astype(np.int32)
    return X, y


class SameEverywhere:
    """Checks after every step that every rank holds the same weights (by
    checksum; with ``rtol``, the same to that relative tolerance: ranks on
    unlike devices round their updates differently) and after every epoch
    the same to the bit."""

    def __init__(self, ctx, rtol=0.0):
        self.ctx = ctx
        self.rtol = rtol
        self.steps = 0

    def on_batch_end(self, model, batch):
        sums = self.ctx.checksum(model.get_weights())
        assert np.allclose(sums, sums[0], rtol=self.rtol, atol=0), \
            f"step {self.steps}: replicas differ: {sums.tolist()}"
        self.steps += 1

    def on_epoch_end(self, model, epoch, logs):
        sums = self.ctx.checksum(model.get_weights())
        assert np.all(sums == sums[0]), f"epoch {epoch}: replicas differ: {sums.tolist()}"


def compare(ctx, build, shape, n, batch, epochs, balance, opt, fits=1):
    """Train ``build``'s model on one process and data-parallel, ``fits``
    calls of ``fit`` each (one optimizer object kept across them: the second
    call continues with its state); compare the weights and losses."""
    X, y = data(shape, n)
    ref, ref_opt = build(7, ctx.device), opt()
    ref_hist = [ref.fit(X, y, epochs=epochs, batch_size=batch, optimizer=ref_opt)
                for _ in range(fits)]
    ctx.balance = balance
    model, model_opt = build(7 + ctx.rank, ctx.device), opt()   # rank 0's weights are broadcast
    same = SameEverywhere(ctx)
    hist = [model.fit(X, y, epochs=epochs, batch_size=batch, optimizer=model_opt,
                      distributed=ctx, callbacks=[same], verbose=1) for _ in range(fits)]
    assert same.steps >= 10, same.steps
    worst = max(float(np.abs(a - b).max()) for a, b in zip(model.get_weights(), ref.get_weights()))
    assert worst <= 1e-5, f"{build.__name__} balance={balance}: weights differ by {worst:.3g}"
    for h, r in zip(hist, ref_hist):
        np.testing.assert_allclose(h["loss"], r["loss"], rtol=1e-5)
    ctx.print(f"{build.__name__} balance={balance} fits={fits} shares={hist[-1]['shares']} "
              f"max |dw|={worst:.2g}")
    return model, X, y


def equivalence(ctx):
    k = ctx.size
    sgd = lambda: hn.SGD(lr=0.1, momentum=0.9)          # noqa: E731
    adam = lambda: hn.Adam(lr=0.01)                      # noqa: E731
    # 10 steps of 16, then (161 rows) a last batch of one row: a rank without rows
    compare(ctx, mlp, (12,), 161, 16, 1, "equal", sgd)
    compare(ctx, mlp, (12,), 80, 16, 1, list(range(1, k + 1)), adam, fits=2)
    # 9 steps of 16 split [4, 12], then a last batch of 15 split [4, 11]: rank 0's rows
    # match its plan, rank 1's do not; the placement check still runs on every rank
    compare(ctx, mlp, (12,), 159, 16, 1, [1] + [3] * (k - 1), sgd)
    model, X, y = compare(ctx, convnet, (1, 8, 8), 96, 16, 2, "speed", sgd)
    # evaluation and prediction split over the ranks and gathered
    ev, ev_d = model.evaluate(X, y), model.evaluate(X, y, distributed=ctx)
    assert abs(ev["loss"] - ev_d["loss"]) <= 1e-6 * max(1.0, ev["loss"]), (ev, ev_d)
    assert ev["accuracy"] == ev_d["accuracy"], (ev, ev_d)
    np.testing.assert_array_equal(model.predict(X), model.predict(X, distributed=ctx))
    if hasattr(hn, "metrics"):      # metrics that are not sums over rows: from gathered outputs
        m, m_d = (model.evaluate(X, y, metrics=["balanced_accuracy"], distributed=d)
                  for d in (False, ctx))
        assert m.keys() == m_d.keys() and abs(m["balanced_accuracy"] - m_d["balanced_accuracy"]) \
            <= 1e-12, (m, m_d)
    # blocks of other sizes than the whole may round differently in the GEMMs
    np.testing.assert_allclose(model.predict_proba(X[:5]), model.predict_proba(X[:5], distributed=ctx),
                               rtol=1e-6, atol=1e-7)


def transports(ctx):
    from hetnet.distributed.data_parallel import DataParallel
    from hetnet.model.fit import fit
    k = ctx.size
    cases = [(mlp, (12,), 80, 16, 1, list(range(1, k + 1))),
             (convnet, (1, 8, 8), 96, 16, 2, "speed")]
    for build, shape, n, batch, epochs, balance in cases:
        X, y = data(shape, n)
        weights = {}
        for transport in ("mpi", "shm"):
            model = build(7 + ctx.rank, ctx.device)
            dp = DataParallel(ctx, model, batch, balance=balance, transport=transport)
            same = SameEverywhere(ctx)
            fit(model, X, y, epochs=epochs, batch_size=batch,     # as evolve's gd epochs do
                optimizer=hn.SGD(lr=0.1, momentum=0.9), distributed=ctx, data_parallel=dp,
                callbacks=[same])
            assert dp.averager.transport_used == transport, dp.averager.transport_used
            assert same.steps >= 5, same.steps
            # a DataParallel passed in keeps its window for the next fit
            assert (dp.averager._shm is not None) == (transport == "shm")
            dp.close()
            assert dp.averager._shm is None
            weights[transport] = model.get_weights()
        worst = max(float(np.abs(a - b).max()) for a, b in zip(weights["shm"], weights["mpi"]))
        assert worst <= 1e-6, f"{build.__name__}: shm and mpi differ by {worst:.3g}"
        ctx.print(f"{build.__name__} transports: max |w_shm - w_mpi| = {worst:.2g}")
    # fit's own DataParallel picks the window on one host, and frees it at its end
    from hetnet.distributed import shm
    model = mlp(7, ctx.device)
    before = len(shm._OPEN)
    model.fit(*data((12,), 64), epochs=1, batch_size=16, distributed=ctx)
    assert len(shm._OPEN) == before, (len(shm._OPEN), before)


def single(ctx):
    assert ctx.size == 1
    X, y = data((12,), 70)
    a, b = mlp(3, ctx.device), mlp(3, ctx.device)
    ha = a.fit(X, y, epochs=2, batch_size=16, optimizer=hn.SGD(lr=0.1, momentum=0.9))
    hb = b.fit(X, y, epochs=2, batch_size=16, optimizer=hn.SGD(lr=0.1, momentum=0.9),
               distributed=True)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert ha["loss"] == hb["loss"], (ha["loss"], hb["loss"])


def batchnorm(ctx):
    if not hasattr(hn, "BatchNorm1D"):
        ctx.print("SKIP hetnet has no BatchNorm1D")
        return
    from hetnet.distributed.data_parallel import batch_statistics

    def build(seed):
        return hn.Sequential([hn.Dense(12, 16), hn.BatchNorm1D(16, momentum=0.1), hn.ReLU(),
                              hn.Dense(16, 3)], seed=seed, device=ctx.device, input_shape=(12,))
    X, y = data((12,), 96)
    model = build(1 + ctx.rank)
    same = SameEverywhere(ctx)
    model.fit(X, y, epochs=2, batch_size=16, optimizer=hn.SGD(lr=0.1, momentum=0.9),
              distributed=ctx, callbacks=[same])
    stats = [layer.device.to_host(a) for layer, _, _, a in batch_statistics(model)]
    assert len(stats) == 2, "BatchNorm1D keeps two running statistics"
    # the semantics: each rank normalises by its own rows' statistics, and the
    # running statistics move by the share-weighted mean of the ranks' batch
    # statistics.  One step of a batch of 16, no shuffle: rank r has rows
    # offsets[r]:offsets[r + 1] of the equal split.
    from hetnet.distributed import offsets, split_batch
    ctx.balance = "equal"
    model = build(1)
    W, b = model.get_weights()[:2]
    model.fit(X[:16], y[:16], epochs=1, batch_size=16, shuffle=False, distributed=ctx)
    o = offsets(split_batch(16, np.ones(ctx.size)))
    h = X[:16].astype(np.float64) @ W + b
    parts = [h[o[q]:o[q + 1]] for q in range(ctx.size)]
    share = [(o[q + 1] - o[q]) / 16 for q in range(ctx.size)]
    want_mean = 0.1 * sum(w * p.mean(axis=0) for w, p in zip(share, parts))
    want_var = 0.9 + 0.1 * sum(w * p.var(axis=0, ddof=1) for w, p in zip(share, parts))
    mean, var = (layer.device.to_host(a) for layer, _, _, a in batch_statistics(model))
    np.testing.assert_allclose(mean, want_mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(var, want_var, rtol=1e-4, atol=1e-6)
    # not the statistics of the whole batch (what SyncBatchNorm would give)
    assert not np.allclose(var, 0.9 + 0.1 * h.var(axis=0, ddof=1), rtol=1e-4)
    # the same for a BatchNorm inside a residual block (its statistics reach the
    # reduction through the block's state)
    block = hn.Residual([hn.Dense(12, 12), hn.BatchNorm1D(12, momentum=0.1)])
    model = hn.Sequential([block, hn.Dense(12, 3)], seed=1, device=ctx.device,
                          input_shape=(12,))
    W, b = model.get_weights()[:2]
    model.fit(X[:16], y[:16], epochs=1, batch_size=16, shuffle=False, distributed=ctx)
    h = X[:16].astype(np.float64) @ W + b
    parts = [h[o[q]:o[q + 1]] for q in range(ctx.size)]
    bn = model.layers[0].sublayers[1]
    mean, var = (bn.device.to_host(bn.state[k]) for k in ("running_mean", "running_var"))
    np.testing.assert_allclose(mean, 0.1 * sum(w * p.mean(axis=0) for w, p in zip(share, parts)),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(var, 0.9 + 0.1 * sum(w * p.var(axis=0, ddof=1)
                                                    for w, p in zip(share, parts)),
                               rtol=1e-4, atol=1e-6)
    sums = ctx.checksum([mean, var])
    assert np.all(sums == sums[0]), sums.tolist()


def placement(ctx):
    """Ranks that placed the model differently are refused, on every rank."""
    X, y = data((12,), 32)
    layers = [hn.Dense(12, 16), hn.ReLU(), hn.Dense(16, 3)]
    device = ctx.device if ctx.rank == 0 else [ctx.device, ctx.device, hn.get_device("numpy")]
    model = hn.Sequential(layers, seed=0, device=device, input_shape=(12,))
    try:
        model.fit(X, y, batch_size=8, distributed=ctx)
    except RuntimeError as exc:
        assert "placed the model unlike rank 0" in str(exc), exc
        sys.stdout.write(f"refused on rank {ctx.rank}\n")
    else:
        raise AssertionError("a fit over unlike placements ran")


def opencl(ctx):
    """Rank 0 on the CPU, the others on an OpenCL device (PoCL in CI): the
    device ranks' gradients are staged through the host; the job still
    trains as one CPU process at the global batch."""
    import os
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from conftest import working_opencl_device
    dev = working_opencl_device() if ctx.rank else ctx.device
    have = ctx.allgather(np.array([dev is not None], dtype=np.int8))
    if not have.all():
        ctx.print("SKIP no OpenCL device that can build kernels")
        return
    X, y = data((12,), 96)
    ref = mlp(5, ctx.device)
    ref.fit(X, y, epochs=2, batch_size=16, optimizer=hn.SGD(lr=0.1, momentum=0.9))
    ctx.balance = "equal"
    model = mlp(5, dev)
    same = SameEverywhere(ctx, rtol=1e-6)
    model.fit(X, y, epochs=2, batch_size=16, optimizer=hn.SGD(lr=0.1, momentum=0.9),
              distributed=ctx, callbacks=[same])
    worst = max(float(np.abs(a - b).max()) for a, b in zip(model.get_weights(), ref.get_weights()))
    assert worst <= 1e-5, f"weights differ from one CPU process by {worst:.3g}"
    ctx.print(f"cpu + opencl ranks: max |dw| = {worst:.2g}")


def resume(ctx, folder):
    import os
    from hetnet.callbacks import ModelCheckpoint

    def build(seed):
        return hn.Sequential([hn.Dense(12, 16), hn.ReLU(), hn.Dropout(0.2), hn.Dense(16, 3)],
                             seed=seed, device=ctx.device, input_shape=(12,))
    X, y = data((12,), 90)
    kw = dict(epochs=4, batch_size=16, distributed=ctx, validation_data=(X[:20], y[:20]))
    for balance in ("equal", "speed"):
        ctx.balance = balance
        ckpt = os.path.join(folder, f"{balance}-{{epoch}}.npz")
        whole = build(4)
        h_whole = whole.fit(X, y, optimizer=hn.Adam(0.01), callbacks=[ModelCheckpoint(ckpt)],
                            **kw)
        again = build(40 + ctx.rank)      # the file, not the seed, gives the weights
        same = SameEverywhere(ctx)
        h_again = again.fit(X, y, resume_from=ckpt.format(epoch=2), callbacks=[same], **kw)
        assert same.steps == 2 * 6, same.steps
        assert again.optimizer.t == whole.optimizer.t == 4 * 6, again.optimizer.t
        if balance == "equal":
            worst = max(float(np.abs(a - b).max())
                        for a, b in zip(again.get_weights(), whole.get_weights()))
            assert worst <= 1e-6, f"resumed weights differ by {worst:.3g}"
            np.testing.assert_allclose(h_again["loss"], h_whole["loss"], rtol=1e-6)
            np.testing.assert_allclose(h_again["val_loss"], h_whole["val_loss"], rtol=1e-6)
            ctx.print(f"resumed data-parallel fit: max |dw| = {worst:.2g}")
        else:
            # the split the interrupted run measured after epoch 2 is epoch 3's
            assert h_again["shares"][2] == h_whole["shares"][2], (h_again["shares"],
                                                                   h_whole["shares"])
    # a distributed hybrid metaheuristic, resumed on every rank from rank 0's file
    ctx.balance = "equal"
    opt = lambda: hn.SHADE(pop_size=6, gd=hn.Adam(0.01), gd_every=12)       # noqa: E731
    mkw = dict(max_evals=60, epochs=4, batch_size=16, distributed=ctx)
    ckpt = os.path.join(folder, "shade-{epoch}.npz")
    whole = build(4)
    h_whole = whole.fit(X, y, optimizer=opt(), callbacks=[ModelCheckpoint(ckpt)], **mkw)
    again = build(40 + ctx.rank)
    h_again = again.fit(X, y, optimizer=opt(), resume_from=ckpt.format(epoch=2), **mkw)
    worst = max(float(np.abs(a - b).max()) for a, b in zip(again.get_weights(),
                                                           whole.get_weights()))
    assert worst <= 1e-6 and h_again["evals"] == h_whole["evals"], (worst, h_again["evals"])
    np.testing.assert_allclose(h_again["loss"], h_whole["loss"], rtol=1e-6)


def main(mode):
    ctx = init(device="cpu", timeout=60)
    if mode == "resume":
        resume(ctx, sys.argv[2])
    else:
        {"equivalence": equivalence, "single": single, "batchnorm": batchnorm,
         "placement": placement, "opencl": opencl, "transports": transports}[mode](ctx)
    sys.stdout.write(f"OK rank {ctx.rank}\n")


if __name__ == "__main__":
    main(sys.argv[1])
