"""A metaheuristic's objective spread over the ranks: data-parallel, as
gradient training is.

Every rank runs the same search (the same population, the same random
draws: the seed is rank 0's, broadcast) on a replica of the model, and holds
one shard of the training set: the contiguous block of rows that
:func:`~hetnet.distributed.split_batch` gives it when the whole set is one
global batch, as the gradient path splits a mini-batch (in proportion to
the ranks' measured speeds with ``balance="speed"``, re-measured every
epoch).  An evaluation is still a loss over the whole (global) training
set: each rank computes the loss of every candidate on its rows (their
mean), and one ``Allreduce`` of the ``(P + 1,)`` float64 vector ``[n_r *
loss_r, n_r]`` sums them into ``sum_r n_r * loss_r / n``, the loss one
process computes over all ``n`` rows (the losses are means over their rows,
sample weights included).  An L-BFGS loss and gradient is the same, the
gradient in the same reduced vector.  So every rank sees the same losses
and takes the same decisions; :meth:`PopulationShards.verify` checks it (the
best weights agree to the bit on every rank) at the end of the fit.

BatchNorm in the evaluations normalises by each rank's rows (as a
data-parallel gradient step does, :mod:`.data_parallel`); the running
statistics recomputed for the best individual at each epoch end are the
share-weighted mean of the ranks' own.
"""

import time

import numpy as np

from .shares import split_batch, measured_speeds, offsets
from .data_parallel import batch_statistics, _write_in_place, _Split
from ..layers import BatchNorm1D, BatchNorm2D, walk

#: seeds travel as this many 32-bit words (a seed must be below 2**256)
_SEED_WORDS = 8


class PopulationShards(_Split):
    """The data-parallel side of one metaheuristic ``fit`` on one rank.

    Parameters
    ----------
    context : Context
    model : Sequential
        Built, the same architecture on every rank.
    n : int
        Rows of the (global) training set, the same on every rank.

    Attributes
    ----------
    shares : numpy.ndarray of int64, (size,)
        Rows each rank holds this epoch.
    share_history : list of list of int
        ``shares`` of every epoch so far.
    reduce_s : float
        Wall seconds in the reductions of losses and gradients this epoch
        (waiting for the slower ranks included).
    """

    def __init__(self, context, model, n):
        self.context = context
        self.model = model
        self.n = int(n)
        self.balance = context.balance
        self.speeds = (np.ones(context.size) if isinstance(self.balance, str)
                       else np.asarray(self.balance, dtype=np.float64))
        # BatchNorm in training mode needs two rows a rank for a variance
        self.minimum = 2 if any(isinstance(layer, (BatchNorm1D, BatchNorm2D))
                                for layer in walk(model.layers)) else 1
        if self.n < self.minimum * context.size:
            raise ValueError(f"a metaheuristic over {context.size} ranks needs at least "
                             f"{self.minimum * context.size} training samples ({self.minimum} a "
                             f"rank), got {self.n}")
        self.shares = split_batch(self.n, self.speeds, self.minimum)
        self.share_history = [self.shares.tolist()]
        self.reduce_s = 0.0
        self._compute_s = 0.0
        self._since = time.perf_counter()

    @property
    def _split_total(self):
        return self.n

    # ---------------------------------------------------------- the data
    @property
    def rows(self):
        """This rank's rows of the training set: a slice."""
        o = offsets(self.shares)
        r = self.context.rank
        return slice(int(o[r]), int(o[r + 1]))

    @property
    def count(self):
        """Rows this rank holds."""
        return int(self.shares[self.context.rank])

    def begin(self):
        """At the start of the fit: every rank's model has the same number
        of parameters (the flat vectors the search moves line up)."""
        dim = np.array([self.model.count_params()], dtype=np.int64)
        every = self.context.allgather(dim, what="the comparison of the ranks' parameter counts")
        if not np.all(every == every[0]):
            raise ValueError(f"the ranks' models have {every[:, 0].tolist()} parameters: every "
                             "rank must build the same model")

    def seed(self, seed):
        """Rank 0's ``seed`` on every rank (an int); ``None`` on rank 0
        draws a fresh one there, so a seedless fit still searches alike
        everywhere."""
        words = np.zeros(_SEED_WORDS, dtype=np.uint64)
        if self.context.is_root:
            value = int(np.random.SeedSequence().entropy if seed is None else seed)
            if not 0 <= value < 2 ** (32 * _SEED_WORDS):
                raise ValueError(f"seed must be an int in [0, 2**{32 * _SEED_WORDS}) for a "
                                 f"distributed search, got {seed!r}")
            for i in range(_SEED_WORDS):
                words[i] = (value >> (32 * i)) & 0xFFFFFFFF
        self.context.bcast(words, what="the broadcast of the search's seed")
        return sum(int(w) << (32 * i) for i, w in enumerate(words))

    # ------------------------------------------------------ the objective
    def population_loss(self, local):
        """The global losses ``(P,)`` from this rank's ``local`` ones (the
        mean over its rows of each candidate), one ``Allreduce``."""
        t = time.perf_counter()
        local = np.asarray(local, dtype=np.float64).reshape(-1)
        buf = np.empty(local.size + 1, dtype=np.float64)
        buf[:-1] = local * self.count
        buf[-1] = self.count
        return self._reduce(buf, t, "the sum of the population's losses")

    def loss_and_gradient(self, loss, grad):
        """The global ``(loss, gradient (D,) float64)`` from this rank's
        (the means over its rows), one ``Allreduce``."""
        t = time.perf_counter()
        grad = np.asarray(grad, dtype=np.float64).reshape(-1)
        buf = np.empty(grad.size + 2, dtype=np.float64)
        buf[0] = loss * self.count
        buf[1:-1] = grad * self.count
        buf[-1] = self.count
        out = self._reduce(buf, t, "the sum of the local search's loss and gradient")
        return float(out[0]), out[1:]

    def _reduce(self, buf, t, what):
        self._compute_s += t - self._since
        t0 = time.perf_counter()
        self.context.allreduce(buf, what=what)
        self.reduce_s += time.perf_counter() - t0
        if buf[-1] != self.n:
            raise RuntimeError(f"the ranks' shards hold {buf[-1]:g} rows in all, not the "
                               f"{self.n} of the training set")
        return buf[:-1] / self.n

    def computing(self):
        """Call before this rank's share of an evaluation: its compute time
        (what the speed balance measures) runs from here to the reduction."""
        self._since = time.perf_counter()

    # ------------------------------------------------------------ epochs
    def average_batch_statistics(self):
        """Replace every running statistic by the share-weighted mean of the
        ranks' (after each recomputed them on its own rows)."""
        stats = batch_statistics(self.model)
        if not stats:
            return
        host = [np.asarray(dev.to_host(a), dtype=np.float64).reshape(-1)
                for _, _, dev, a in stats]
        flat = np.concatenate(host) * (self.count / self.n)
        self.context.allreduce(flat, what="the average of the running statistics")
        start = 0
        for (_, _, dev, a), h in zip(stats, host):
            _write_in_place(dev, a, flat[start:start + h.size].astype(np.float32))
            start += h.size

    def end_epoch(self):
        """Measure every rank's speed; with ``balance="speed"`` share the
        next epoch's rows by it.  Returns whether this rank's shard changed."""
        mine = np.array([self.count, self._compute_s], dtype=np.float64)
        every = self.context.allgather(mine, what="the gathering of evaluation times")
        self._compute_s = self.reduce_s = 0.0
        before = self.shares
        if isinstance(self.balance, str) and self.balance == "speed":
            self.speeds = measured_speeds(every[:, 0], every[:, 1])
            self.shares = split_batch(self.n, self.speeds, self.minimum)
        self.share_history.append(self.shares.tolist())
        return not np.array_equal(before, self.shares)

    def verify(self, best_x):
        """Raise unless every rank ends with the same best point and model
        weights, to the bit (compared by checksum)."""
        arrays = [np.zeros(0) if best_x is None else np.asarray(best_x)]
        arrays += self.model.get_weights()
        sums = self.context.checksum(arrays)
        if not np.all(sums == sums[0]):
            bad = [r for r in range(len(sums)) if not np.array_equal(sums[r], sums[0])]
            raise RuntimeError(f"the ranks' searches diverged: ranks {bad} end with another best "
                               f"point than rank 0 (checksums {sums.tolist()})")


__all__ = ["PopulationShards"]
