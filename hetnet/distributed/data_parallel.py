"""What a data-parallel ``fit`` does differently from a plain one, in one
object the fit loop consults (:class:`DataParallel`), and the gathering
evaluation and prediction.

Every rank runs the same fit loop on a replica of the model:

- the replicas start from rank 0's weights (one ``Ibcast``);
- every epoch's sample order is rank 0's (broadcast), so every rank forms
  the same global mini-batches;
- each global mini-batch is split across the ranks, in proportion to each
  rank's measured speed (re-measured every epoch; :mod:`.shares`), and each
  rank computes the batch-mean gradient of its rows;
- the gradient hook (:class:`GradientAverager`) replaces every rank's
  gradient by the sum over ranks of ``share_r / batch`` times it, which is
  the mean gradient of the whole mini-batch, so every rank applies the
  same update to the same weights;
- losses and metrics are summed over the ranks; only rank 0 shows progress;
- after every epoch, a rank whose parameters differ from rank 0's in any bit
  takes rank 0's (ranks on unlike devices, a CPU and a GPU, round the same
  update differently, by an ulp now and then).

BatchNorm (layers with running statistics in ``layer.state``) follows
PyTorch's DistributedDataParallel without SyncBatchNorm: each rank
normalises by the statistics of its own rows, so a model with BatchNorm
trains like one process whose batches are normalised in groups (the ranks'
shares), not like one process at the global batch.  The running statistics
are averaged over the ranks in the same reduction as the gradients, every
step, weighted by the ranks' shares (where DDP copies rank 0's), so the
replicas stay identical, running statistics included; the average of the
ranks' moving averages is the moving average of their share-weighted batch
statistics.  Networks without BatchNorm train as one process at the global
batch, to float32 rounding.
"""

import contextlib
import time
import zlib

import numpy as np

from .allreduce import GradientAverager, DEFAULT_BUCKET_BYTES
from .shares import split_batch, measured_speeds, offsets
from ..layers import BatchNorm1D, BatchNorm2D, walk


class _Split:
    """What the data-parallel sides of a gradient fit (:class:`DataParallel`)
    and of a metaheuristic's (:class:`~.population.PopulationShards`) share:
    the split over the ranks (``shares`` of ``_split_total`` rows, from
    ``speeds``) as a checkpoint keeps it, and rank 0's stop decision."""

    def balance_state(self):
        """The split the next epoch uses, for a checkpoint: ``{"shares":
        rows per rank, "speeds": the speeds (or weights) it came from}``."""
        return {"shares": [int(v) for v in self.shares],
                "speeds": [float(v) for v in self.speeds]}

    def restore_balance(self, state):
        """With ``balance="speed"``, continue with the split of a checkpoint
        (:meth:`balance_state`), the one the interrupted run measured last,
        when it was written by a job of as many ranks (a job of another
        size, or another balance, starts from its own split)."""
        if not (isinstance(self.balance, str) and self.balance == "speed"):
            return
        shares = np.asarray(state.get("shares", ()), dtype=np.int64)
        speeds = np.asarray(state.get("speeds", ()), dtype=np.float64)
        if shares.shape != (self.context.size,) or speeds.shape != shares.shape:
            return
        total = self._split_total
        if shares.sum() != total or (shares < 0).any() or not (speeds > 0).all():
            raise ValueError(f"the checkpoint's shares {shares.tolist()} (speeds "
                             f"{speeds.tolist()}) do not split {total} rows over "
                             f"{self.context.size} ranks")
        self.speeds, self.shares = speeds, shares

    def stop(self, requested):
        """Rank 0's decision whether to stop (its callbacks'), on every rank."""
        flag = np.array([1 if requested else 0], dtype=np.int8)
        return bool(self.context.bcast(flag, what="the broadcast of the stop decision")[0])


class DataParallel(_Split):
    """The data-parallel side of one ``fit`` call on one rank.

    Parameters
    ----------
    context : Context
    model : Sequential
        Built, the same architecture on every rank.
    batch_size : int
        The global mini-batch (all ranks together).
    balance : "speed", "equal" or sequence of float, optional
        ``"speed"``: shares proportional to each rank's measured speed,
        measured again every epoch (the first epoch splits equally).
        ``"equal"``: equal shares throughout.  Weights, one per rank:
        shares proportional to them throughout.  Default: the context's
        (:attr:`Context.balance`).
    bucket_bytes : int
        :class:`GradientAverager`'s bucket size.
    transport : "auto", "mpi" or "shm"
        :class:`GradientAverager`'s transport (``"auto"``: the shared-memory
        window when every rank is on one host).

    Attributes
    ----------
    shares : numpy.ndarray of int64, (size,)
        Rows of a full global batch each rank takes this epoch.
    share_history : list of list of int
        ``shares`` of every epoch so far.
    speed_history : list of list of float
        Each rank's measured speed (samples/s of compute) after every epoch.
    averager : GradientAverager
    """

    def __init__(self, context, model, batch_size, balance=None,
                 bucket_bytes=DEFAULT_BUCKET_BYTES, transport="auto"):
        if balance is not None:
            context.balance = balance           # validates it
        self.context = context
        self.model = model
        self.batch_size = int(batch_size)
        self.balance = context.balance
        self.averager = GradientAverager(context, bucket_bytes, transport=transport)
        self.speeds = (np.ones(context.size) if isinstance(self.balance, str)
                       else np.asarray(self.balance, dtype=np.float64))
        # BatchNorm in training mode needs two rows a rank for a variance, so a
        # speed-based split never leaves a rank one row of a full batch
        self.minimum = 2 if any(isinstance(layer, (BatchNorm1D, BatchNorm2D))
                                for layer in walk(model.layers)) else 1
        self.shares = split_batch(self.batch_size, self.speeds, self.minimum)
        self.share_history = []
        self.speed_history = []
        self._epoch_rows = 0
        self._epoch_compute_s = 0.0
        self._step_t0 = None
        self._step_rows = 0

    @property
    def _split_total(self):
        return self.batch_size

    # ----------------------------------------------------------- the fit
    def begin(self):
        """At the start of the fit: every replica takes rank 0's weights."""
        self.context.broadcast_weights(self.model)

    def close(self):
        """Free the averager's shared-memory window (collective); a later
        fit with this object allocates it again.  ``fit`` calls it at its
        end for the DataParallel it made itself."""
        self.averager.close()

    @contextlib.contextmanager
    def attached(self):
        """Within: :meth:`gradient_hook` is the model's gradient hook
        (``model.add_gradient_hook``), removed on the way out."""
        hook = self.model.add_gradient_hook(self.gradient_hook)
        try:
            yield self
        finally:
            self.model.runtime.remove_gradient_hook(hook)

    def epoch_order(self, order):
        """Rank 0's sample order for this epoch (int64 ``(n,)``), on every rank."""
        order = np.ascontiguousarray(order, dtype=np.int64)
        self.share_history.append(self.shares.tolist())
        self._epoch_rows, self._epoch_compute_s = 0, 0.0
        return self.context.bcast(order, what="the broadcast of the epoch's sample order")

    def local_rows(self, idx):
        """This rank's rows of the global batch ``idx`` and the number of
        samples they count for: ``(rows, count)``.

        A rank whose share of a short last batch is zero (fewer rows than
        ranks) computes on the batch's first row with weight 0 (``count``
        0): it still takes part in the reduction and the update.  The step
        itself follows :meth:`step_begins`.
        """
        m = len(idx)
        r = self.context.rank
        if m == self.batch_size:
            shares = self.shares
        else:
            shares = split_batch(m, self.speeds, self.minimum)
        o = offsets(shares)
        count = int(shares[r])
        self.averager.set_weight(count / m)
        rows = idx[o[r]:o[r + 1]] if count else idx[:1]
        self._step_rows = count
        return rows, count

    def step_begins(self):
        """Call right before the fit's training step: the next gradient
        hook call is that step's (averaged), and its compute time is
        measured from here."""
        self._step_t0 = time.perf_counter()

    def gradient_hook(self, buffers):
        """The runtime's gradient hook: average ``buffers`` over the ranks
        and account this rank's compute time.  Only the fit's own steps
        (after :meth:`step_begins`) are averaged: the steps planning times
        on one rank have no counterpart on the others."""
        if self._step_t0 is None:
            return
        items = list(buffers.items()) if hasattr(buffers, "items") else list(buffers)
        self.averager(items + [(dev, a) for _, _, dev, a in batch_statistics(self.model)])
        self._epoch_compute_s += self.averager.ready_at - self._step_t0
        self._epoch_rows += self._step_rows
        self._step_t0 = None

    def check_placement(self):
        """Raise unless every rank placed the model alike: the same
        parameters on the same sequence of devices (by position; which GPU
        may differ), so that the ranks' gradient buffers line up.  Call
        after every (re-)placement, at the same point on every rank.  Also
        agrees on the averager's blocking or non-blocking reductions (the
        ranks with device buffers need non-blocking ones; all must match)."""
        model = self.model
        devices = model._devices_in_use()
        layout = [[tuple(s.params[k].shape) for s in model._steps if s.device is d
                   for k in s.params] for d in devices]
        on_device = any(not isinstance(d.zeros((1,)), np.ndarray) for d in devices)
        key = np.array([zlib.crc32(repr(layout).encode()), int(on_device)], dtype=np.int64)
        every = self.context.allgather(key, what="the comparison of the ranks' placements")
        self.averager._agreed = bool(every[:, 1].any())
        if not np.all(every[:, 0] == every[0, 0]):
            where = ", ".join(f"{d.name}: {len(p)} parameters" for d, p in zip(devices, layout))
            raise RuntimeError(
                f"rank {self.context.rank} placed the model unlike rank 0 ({where}), so their "
                "gradient buffers do not line up; give every rank one device "
                "(Sequential(..., device=ctx.device) with ctx from hetnet.distributed.init) "
                "or the same placement")

    def sum(self, value):
        """``value`` (a float) summed over the ranks."""
        buf = np.array([value], dtype=np.float64)
        return float(self.context.allreduce(buf, what="the sum of the epoch's losses")[0])

    def end_epoch(self):
        """After an epoch's steps: measure every rank's speed and, with
        ``balance="speed"``, share the next epoch's batches by it."""
        mine = np.array([self._epoch_rows, self._epoch_compute_s], dtype=np.float64)
        every = self.context.allgather(mine, what="the gathering of step times")
        speeds = measured_speeds(every[:, 0], every[:, 1])
        self.speed_history.append(speeds.tolist())
        if isinstance(self.balance, str) and self.balance == "speed":
            self.speeds = speeds
            self.shares = split_batch(self.batch_size, speeds, self.minimum)
        self.resync()

    def resync(self):
        """Give every rank rank 0's parameters where they differ in any bit.

        Ranks on the same kind of device apply the same update to the same
        averaged gradient and stay identical to the bit.  Ranks on unlike
        devices (a CPU rank and a GPU rank) round the update differently,
        by an ulp now and then, and would drift apart as slowly; this
        (called after every epoch) brings them back.  The parameters are
        written in place: the optimizer's state and the flat buffers' views
        stay as they are."""
        params = [(layer, k) for layer in self.model.layers for k in layer.params]
        host = [layer.device.to_host(layer.params[k]).reshape(-1) for layer, k in params]
        flat = np.concatenate(host).astype(np.float32) if host else np.zeros(0, np.float32)
        root = self.context.bcast(flat.copy(), what="the broadcast of rank 0's weights")
        if np.array_equal(root.view(np.uint32), flat.view(np.uint32)):
            return
        start = 0
        for (layer, k), h in zip(params, host):
            part = root[start:start + h.size]
            start += h.size
            if not np.array_equal(part.view(np.uint32), h.view(np.uint32)):
                _write_in_place(layer.device, layer.params[k], part)

    def verify_replicas(self):
        """Raise if the ranks' weights differ (compared by checksum)."""
        sums = self.context.checksum(self.model.get_weights())
        if not np.all(sums == sums[0]):
            bad = [r for r in range(len(sums)) if not np.array_equal(sums[r], sums[0])]
            raise RuntimeError(f"the replicas' weights differ after the fit: ranks {bad} differ "
                               f"from rank 0 (checksums {sums.tolist()})")



def _write_in_place(dev, a, values):
    """Device array ``a`` takes ``values`` (host, as many), keeping its memory."""
    if isinstance(a, np.ndarray):
        a.reshape(-1)[...] = values
    else:
        dev.scale(0.0, a)
        dev.axpy(1.0, dev.reshape(dev.asarray(values), tuple(a.shape)), a)


def batch_statistics(model):
    """``(layer, name, device, array)`` of every running statistic of
    ``model``: the float32 arrays of each layer's ``state`` (BatchNorm's
    ``running_mean`` and ``running_var``), in layer order.  A block's
    (:class:`~hetnet.layers.Residual`) ``state`` holds its sub-layers'
    arrays themselves (keys ``"b<i>.<name>"``), so a BatchNorm inside a
    block is found here too, through the block."""
    found = []
    for layer in model.layers:
        for name, a in sorted(getattr(layer, "state", {}).items()):
            if getattr(a, "dtype", None) == np.float32:
                found.append((layer, name, layer.device, a))
    return found


def resolve(distributed, device=None):
    """The :class:`Context` a ``distributed=`` argument asks for, or None.

    ``False``/``None``: None.  ``True``: the job's context (:func:`init`;
    made here with ``device`` when the script has not called it).  A
    Context: itself.
    """
    if distributed is None or distributed is False:
        return None
    from .context import Context, init
    if isinstance(distributed, Context):
        return distributed
    if distributed is True:
        return init(device=device if device is not None else "auto")
    raise TypeError(f"distributed must be True, False or a hetnet.distributed.Context, "
                    f"got {distributed!r}")


# ---------------------------------------------------- evaluation, prediction
def rank_block(n, context):
    """This rank's equal block of ``n`` rows: a slice (possibly empty)."""
    o = offsets(split_batch(n, np.ones(context.size), minimum=0))
    return slice(int(o[context.rank]), int(o[context.rank + 1]))


def evaluate_sums(context, local):
    """Combine per-rank ``{"loss": mean, "accuracy": mean, "n": rows}``
    results into the global means (one allreduce of the sums)."""
    keys = sorted(k for k in local if k != "n")
    n = local["n"]
    buf = np.array([local[k] * n for k in keys] + [n], dtype=np.float64)
    context.allreduce(buf, what="the sum of evaluation results")
    return {k: float(v / buf[-1]) for k, v in zip(keys, buf[:-1])}


def gather_rows(context, local):
    """Every rank's rows of ``local`` (a numpy array of equal per-row shape
    everywhere), concatenated in rank order (``Iallgatherv``)."""
    return context.allgatherv(np.ascontiguousarray(local), what="the gathering of predictions")


__all__ = ["DataParallel", "resolve", "rank_block", "evaluate_sums", "gather_rows", "batch_statistics"]
