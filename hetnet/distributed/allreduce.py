"""Averaging flat gradient buffers over the ranks: the data-parallel
gradient hook.

Two transports (``GradientAverager(transport=...)``): when every rank is on
one host, by default, an MPI-3 shared-memory window (:mod:`.shm`: each rank
writes its weighted gradient into its slot, the ranks add the slots up in
rank order, one or two barriers a call; both passes split over a few
threads a rank, ``threads``); otherwise, or with ``transport="mpi"``, MPI's
reductions, as follows.

Each rank's flat gradient buffers (one per device the rank's model uses)
are cut into buckets of at most ``bucket_bytes``; each bucket is scaled by
the rank's weight (its share of the global batch, so that the weighted sum
over ranks is the mean gradient of the whole batch) and summed over the
ranks by mpi4py's uppercase, buffer-based calls on numpy memory (no
pickling), under the context's watchdog (:meth:`Context.wait`).  A bucket of
a device buffer goes by its own non-blocking ``Iallreduce``, all in flight
at once, overlapping the transfers.  Host buckets go the same way when any
rank has device buffers (a blocking collective does not match a
non-blocking one, so the ranks agree on it), else by blocking ``Allreduce``:
with nothing to overlap, Open MPI's blocking reductions use its tuned
algorithms, its non-blocking ones a generic schedule advanced only while
the rank is in an MPI call (benchmarks/bench_distributed.py times both).

Host buffers (the CPU's, the numpy reference's) are reduced in place.  A
device buffer (OpenCL) is staged through a host array kept from step to
step: every bucket's download is queued at once, each bucket's
``Iallreduce`` starts as soon as its download has landed (so the link to the
device and MPI work at the same time; the reductions are posted in bucket
order on every rank, as MPI requires of collectives), and each reduced
bucket's upload is queued as soon as it arrives.  The uploads are not
awaited: they are on the device's in-order queue, ahead of the update the
runtime queues next, and the host array is written again only after the
next step's download (also behind them on that queue) has completed.

Overlap with the rest of the backward pass is not done: the runtime calls
the hook once, after the whole backward pass, with whole flat buffers.  On
one host it would gain little besides: Open MPI makes progress on a
non-blocking collective only inside MPI calls (no progress thread), so a
bucket posted early advances only when the rank polls between layers, and
on a CPU rank the backward pass's threads already hold every core the rank
has.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._cpu.elementwise import scale_into
from .context import Context
from .shm import SharedSlots, layout_key, shm_possible

#: buckets of at most this many bytes (LeNet-5's 62k parameters fit in one;
#: large models get several reductions in flight, pipelined with the
#: transfers of a device buffer)
DEFAULT_BUCKET_BYTES = 4 << 20
#: the most threads a rank's shared-memory averaging takes by default: the
#: passes are memory-bound, and a few threads already draw the bandwidth
#: one core cannot (LeNet-5's 247 KB is ~62 KB a thread at 4), while each
#: one more costs a wake-up and a core the other ranks may want
DEFAULT_MAX_THREADS = 4


def default_threads(context: Context) -> int:
    """The threads a rank's shared-memory averaging takes by default: the
    cores this rank may use that the host's other ranks do not take
    (:meth:`Context.free_cores`: 1 when the launcher bound each rank to one
    core), at most :data:`DEFAULT_MAX_THREADS`.  A collective over the
    host's ranks."""
    return min(DEFAULT_MAX_THREADS, context.free_cores())


class GradientAverager:
    """Average the flat gradient buffers of every rank's replica.

    Call it (it is the runtime's gradient hook) with the per-device flat
    gradient buffers after the backward pass; on return every rank's buffers
    hold ``sum over ranks r of weight_r * g_r``.

    Parameters
    ----------
    context : Context
        From :func:`hetnet.distributed.init`.
    bucket_bytes : int
        Largest bucket, in bytes (a multiple of 4).
    weight : float, optional
        This rank's weight; default ``1 / size`` (the plain mean).  With
        unequal shares of the batch set it to ``share / global batch``
        (:func:`hetnet.distributed.share_weights`) every step the shares
        change: :meth:`set_weight`.
    transport : "auto", "mpi" or "shm"
        How the ranks' buffers are summed.  ``"mpi"``: mpi4py's
        ``Allreduce``/``Iallreduce`` (below).  ``"shm"``: through an MPI-3
        shared-memory window over the ranks of the host
        (:mod:`hetnet.distributed.shm`: each rank writes its weighted
        gradient into its slot, the ranks sum the slots in rank order);
        only when every rank is on one host (a ValueError otherwise).
        ``"auto"`` (default): ``"shm"`` when every rank is on one host and
        the MPI library has shared-memory windows (agreed by the ranks at
        the first call, one small allgather), else ``"mpi"``.  A job over
        several hosts takes the MPI path.
    threads : int, optional
        Threads (OpenMP) that split this rank's passes of the shared-memory
        transport: the packing of its weighted gradient into its slot and
        the sum of the slots (each thread a contiguous chunk; buffers under
        two chunks of 4,096 floats take fewer, down to one).  Default
        (None): :func:`default_threads`, the cores this rank may use that
        the host's other ranks do not take, at most
        :data:`DEFAULT_MAX_THREADS` (1 when the launcher bound each rank to
        one core, as Open MPI does by default for 2 ranks: ``--bind-to
        none`` or ``--map-by slot:PE=4`` give a rank more).  The sums'
        bits do not depend on it (every element is the same adds in the
        same order), so ranks may differ in it.  More threads than the
        rank's cores slow the averaging down severalfold (they wait for
        one another on a shared core).  The MPI path ignores it.
    nonblocking : bool, optional
        ``True``: every bucket by ``Iallreduce``, all in flight at once.
        ``False``: host buckets by blocking ``Allreduce``, one after the
        other (device buckets are always non-blocking, overlapping their
        transfers).  Default (None): non-blocking if any rank has a device
        buffer, else blocking: with nothing to overlap, Open MPI's blocking
        reduction is the faster (its tuned algorithms against the generic
        schedule of its non-blocking ones).  Every rank must make the same
        choice (a blocking collective does not match a non-blocking one), so
        the default is agreed on by the ranks at the first call (one small
        allgather), and again whenever :meth:`agree` is called (by every
        rank: after the buffers' devices changed).

    Attributes
    ----------
    calls : int
        Averagings done.
    seconds : float
        Wall time spent in them, in all (staging, scaling, reduction).
    last_s : float
        Wall time of the last one.
    ready_at : float
        ``time.perf_counter()`` when the last call had this rank's gradient
        ready (on entry for host buffers, when the last download landed for
        device buffers): the end of this rank's compute, before any waiting
        for the others.
    transport_used : str or None
        ``"mpi"`` or ``"shm"``, what the calls use (None before the first
        call of ``transport="auto"``).
    threads_used : int or None
        The threads of the shared-memory passes (``threads``, or its
        default, which is found at the first shared-memory call; None
        before it).

    Notes
    -----
    With ``transport="shm"`` the window (two sets of one slot per rank of
    the buffers' total floats, and a result region) is allocated
    collectively at the first call and again whenever the buffers' total
    changes; :meth:`close` frees it (collective: every rank calls it), as
    does the end of a data-parallel ``fit``; one still open at exit is
    freed then.  Before the first window the host's ranks exchange their
    CPU affinity masks (for the default of ``threads``; whatever
    ``threads`` is, so that every rank makes the same collectives).
    ``nonblocking`` and ``bucket_bytes`` concern the MPI path only,
    ``threads`` the shared-memory one.
    """

    def __init__(self, context: Context, bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                 weight: float | None = None, nonblocking: bool | None = None,
                 transport: str = "auto", threads: int | None = None) -> None:
        bucket_bytes = int(bucket_bytes)
        if bucket_bytes < 4:
            raise ValueError(f"bucket_bytes must be at least 4, got {bucket_bytes}")
        self.context = context
        self.bucket_floats = bucket_bytes // 4
        if nonblocking not in (None, True, False):
            raise ValueError(f"nonblocking must be None, True or False, got {nonblocking!r}")
        self.nonblocking = nonblocking
        if transport not in ("auto", "mpi", "shm"):
            raise ValueError(f"transport must be 'auto', 'mpi' or 'shm', got {transport!r}")
        if transport == "shm":
            why = shm_possible(context)
            if why is not None:
                raise ValueError(f"transport='shm' is impossible here: {why}; use "
                                 "transport='mpi' or 'auto'")
        if threads is not None and (isinstance(threads, bool)
                                    or not isinstance(threads, (int, np.integer)) or threads < 1):
            raise ValueError(f"threads must be None or an int at least 1, got {threads!r}")
        self.transport = transport
        self.transport_used = None if transport == "auto" else transport
        self.threads = None if threads is None else int(threads)
        self.threads_used = None
        self._shm = None            # the SharedSlots of transport "shm"
        self._shm_key = None        # (sizes, layout key, [(start, stop)]) of the last shm call
        self._uploads = []          # the last shm call's uploads to devices (events)
        self._agreed = None         # the ranks' choice for nonblocking=None
        self.weight = None
        self.set_weight(weight)
        self.calls = 0
        self.seconds = 0.0
        self.last_s = 0.0
        self.last_buckets = 0
        self.ready_at = 0.0
        self._staging = {}

    def set_weight(self, weight: float | None = None) -> None:
        """This rank's weight in the sum (None: ``1 / size``)."""
        if weight is None:
            weight = 1.0 / self.context.size
        weight = float(weight)
        if not np.isfinite(weight) or weight < 0:
            raise ValueError(f"weight must be finite and at least 0, got {weight!r}")
        self.weight = weight

    def agree(self, has_device_buffers: bool) -> bool:
        """Agree with the other ranks (a collective: every rank calls it) on
        blocking or non-blocking host buckets, from whether this rank's
        buffers include device arrays; returns the choice (True:
        non-blocking)."""
        flag = np.array([1 if has_device_buffers else 0], dtype=np.int8)
        every = self.context.allgather(flag, what="the choice of blocking or non-blocking "
                                                  "reductions")
        self._agreed = bool(every.any())
        return self._agreed

    def __call__(self, buffers):
        self.average(buffers)

    def close(self) -> None:
        """Free the shared-memory window, if any (collective with
        ``transport="shm"``: every rank calls it); the next call allocates
        a new one."""
        if self._shm is not None:
            _wait_events(self._uploads)
            self._uploads = []
            self._shm.free()
            self._shm = None

    def __enter__(self) -> GradientAverager:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _choose_transport(self):
        """``"shm"`` or ``"mpi"`` for ``transport="auto"``, agreed by every
        rank (an allgather at the first call)."""
        ok = np.array([shm_possible(self.context) is None], dtype=np.int8)
        every = self.context.allgather(ok, what="the choice of the gradient transport")
        return "shm" if every.all() else "mpi"

    def reset_stats(self) -> None:
        self.calls, self.seconds, self.last_s = 0, 0.0, 0.0

    def average(self, buffers: Sequence[Any], weight: float | None = None) -> None:
        """Replace each buffer by the weighted sum of the ranks' buffers.

        Parameters
        ----------
        buffers : mapping Device -> flat array, or sequence of (Device, array)
            Each rank's float32 flat gradient buffers, the same devices'
            layout on every rank (the same model, the same placement), in
            the same order.  Host arrays must be C-contiguous.
        weight : float, optional
            This call's weight instead of :attr:`weight`.
        """
        t0 = self.ready_at = time.perf_counter()
        items = list(buffers.items()) if hasattr(buffers, "items") else list(buffers)
        w = self.weight if weight is None else float(weight)
        ctx = self.context
        if ctx.size == 1 and w == 1.0:      # one rank: its gradient is the mean already
            self._done(t0, 0)
            return
        if self.transport_used is None:
            self.transport_used = self._choose_transport()
        if self.transport_used == "shm" and ctx.size > 1:
            self._average_shm(items, w)
            self._done(t0, 1)
            return
        MPI = ctx.MPI
        requests, hosts, after = [], [], []
        staged = []             # (device, device array, host staging, [(start, stop)], events)
        for k, (dev, g) in enumerate(items):
            if isinstance(g, np.ndarray):
                _check_host_buffer(k, g)
                flat = g.reshape(-1)
                for start, stop in self._buckets(flat.size):
                    part = flat[start:stop]
                    if w != 1.0:
                        np.multiply(part, np.float32(w), out=part)
                    hosts.append(part)
                    after.append(None)
            else:
                staged.append(self._stage_out(k, dev, g))
        buckets = len(hosts) + sum(len(st[3]) for st in staged)

        def post(part):     # one rank (only with a weight other than 1): nothing to add
            return (ctx.comm.Iallreduce(MPI.IN_PLACE, part, op=MPI.SUM) if ctx.size > 1
                    else MPI.Request())

        nonblocking = self.nonblocking
        if nonblocking is None:
            if self._agreed is None:
                self.agree(bool(staged))
            nonblocking = self._agreed
        if nonblocking:
            for part in hosts:
                requests.append(post(part))
        else:
            n = len(hosts)
            with ctx.watched(f"the gradient allreduce ({n} host bucket{'s' if n != 1 else ''})"):
                for part in hosts:
                    ctx.comm.Allreduce(MPI.IN_PLACE, part, op=MPI.SUM)
            after = after[len(hosts):]
        # device buckets start their reduction as their downloads land, in
        # bucket order: every rank must post its collectives in the same order
        waiting = [(s, b) for s in range(len(staged)) for b in range(len(staged[s][3]))]
        while waiting:
            s, b = waiting[0]
            dev, g, host, ranges, events = staged[s]
            if not _event_done(events[b]):
                if requests:    # progress the reductions posted while the rest land
                    for r in requests:
                        r.Test()
                else:
                    events[b].wait()
                continue
            waiting.pop(0)
            if not waiting:
                self.ready_at = time.perf_counter()
            start, stop = ranges[b]
            part = host[start:stop]
            if w != 1.0:
                np.multiply(part, np.float32(w), out=part)
            requests.append(post(part))
            after.append((s, b))

        def upload(i):
            if after[i] is not None:
                s, b = after[i]
                self._stage_in(staged[s], b)

        n = len(requests)
        ctx.wait(requests, f"the gradient allreduce ({n} bucket{'s' if n != 1 else ''})", upload)
        self._done(t0, buckets)

    # ------------------------------------------------ shared-memory path
    def _average_shm(self, items, w):
        """The sum over the ranks through the shared-memory window
        (:mod:`hetnet.distributed.shm`'s notes: the layout, the two
        algorithms, why the barriers suffice).  Per call it costs, besides
        the memory traffic (split over :attr:`threads_used` threads), one
        barrier (two above :data:`~hetnet.distributed.shm.ALLSUM_MAX_RANKS`
        ranks) and a few microseconds of Python: the layout's offsets are
        kept from call to call."""
        sizes, flats = [], []
        for k, (dev, g) in enumerate(items):
            if isinstance(g, np.ndarray):
                _check_host_buffer(k, g)
                flats.append(g.reshape(-1))
                sizes.append(g.size)
            else:
                _pyopencl_for(dev, g)
                flats.append(None)
                sizes.append(int(np.prod(g.shape)))
        sizes = tuple(sizes)
        layout = self._shm_key
        if layout is None or layout[0] != sizes:
            bounds = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).tolist()
            layout = self._shm_key = (sizes, layout_key(sizes), list(zip(bounds, bounds[1:])))
        _, key, ranges = layout
        total = ranges[-1][1] if ranges else 0
        # the last call's uploads read the window (or the staging arrays):
        # they are done before anyone may write those again
        if self._uploads:
            _wait_events(self._uploads)
            self._uploads = []
        shm = self._shm
        if shm is None or shm.total != total:
            if shm is not None:
                shm.free()
            self._shm = None
            if self.threads_used is None:
                # a collective whatever ``threads`` is: every rank is at its
                # first window here, as at the allocation below
                default = default_threads(self.context)
                self.threads_used = self.threads or default
            shm = self._shm = SharedSlots(self.context, total)
        threads = self.threads_used
        s = shm.begin()
        slot = shm.slots[s, shm.rank]
        events = []
        for k, (dev, g) in enumerate(items):
            start, stop = ranges[k]
            if flats[k] is not None:
                scale_into(flats[k], slot[start:stop], w, threads)
            elif stop > start:      # download straight into the slot
                import pyopencl as cl
                events.append((k, cl.enqueue_copy(dev.queue, slot[start:stop], g.base_data,
                                                  src_offset=g.offset, is_blocking=False)))
                dev.queue.flush()
        for k, event in events:
            event.wait()
            if w != 1.0:
                start, stop = ranges[k]
                scale_into(slot[start:stop], slot[start:stop], w, threads)
        self.ready_at = time.perf_counter()
        shm.header[s, shm.rank] = key
        shm.barrier("the gradient averaging's shared-memory barrier (slots written)")
        shm.check_layout(s, key)
        if shm.allsum:
            for k, (dev, g) in enumerate(items):
                start, stop = ranges[k]
                if flats[k] is not None:
                    shm.sum_into(s, start, stop, flats[k], threads)
                elif stop > start:
                    host = self._staging.get(k)
                    if host is None or host.size != stop - start:
                        host = self._staging[k] = np.empty(stop - start, dtype=np.float32)
                    shm.sum_into(s, start, stop, host, threads)
                    self._uploads.append(_upload(dev, g, host))
            return
        if shm.hi > shm.lo:
            shm.sum_into(s, shm.lo, shm.hi, shm.result[shm.lo:shm.hi], threads)
        shm.barrier("the gradient averaging's shared-memory barrier (slices summed)")
        for k, (dev, g) in enumerate(items):
            start, stop = ranges[k]
            if flats[k] is not None:
                scale_into(shm.result[start:stop], flats[k], 1.0, threads)
            elif stop > start:
                self._uploads.append(_upload(dev, g, shm.result[start:stop]))

    def _done(self, t0, buckets):
        self.last_s = time.perf_counter() - t0
        self.seconds += self.last_s
        self.calls += 1
        self.last_buckets = buckets

    def _buckets(self, n):
        step = self.bucket_floats
        return [(s, min(s + step, n)) for s in range(0, n, step)] or [(0, 0)]

    # ----------------------------------------------------- device staging
    def _stage_out(self, k, dev, g):
        """Queue the download of every bucket of device array ``g`` into a
        host array kept for buffer ``k``; returns the staging record."""
        cl = _pyopencl_for(dev, g)
        n = int(np.prod(g.shape))
        host = self._staging.get(k)
        if host is None or host.size != n:
            host = self._staging[k] = np.empty(n, dtype=np.float32)
        ranges = self._buckets(n)
        events = [cl.enqueue_copy(dev.queue, host[start:stop], g.base_data,
                                  src_offset=g.offset + 4 * start, is_blocking=False)
                  for start, stop in ranges]
        dev.queue.flush()
        return dev, g, host, ranges, events

    @staticmethod
    def _stage_in(record, b):
        dev, g, host, ranges, _ = record
        import pyopencl as cl
        start, stop = ranges[b]
        cl.enqueue_copy(dev.queue, g.base_data, host[start:stop],
                        dst_offset=g.offset + 4 * start, is_blocking=False)
        dev.queue.flush()


def _check_host_buffer(k, g):
    if g.dtype != np.float32 or not g.flags.c_contiguous:
        raise ValueError(f"gradient buffer {k} must be a C-contiguous float32 array, got "
                         f"{g.dtype} {'C' if g.flags.c_contiguous else 'non-C'}-contiguous")


def _upload(dev, g, host):
    """Queue the copy of ``host`` into device array ``g``; its event."""
    import pyopencl as cl
    event = cl.enqueue_copy(dev.queue, g.base_data, host, dst_offset=g.offset,
                            is_blocking=False)
    dev.queue.flush()
    return event


def _wait_events(events):
    for event in events:
        event.wait()


def _event_done(event):
    import pyopencl as cl
    return event.command_execution_status == cl.command_execution_status.COMPLETE


def _pyopencl_for(dev, g):
    """pyopencl, checking that ``g`` is a float32 pyopencl array of ``dev``."""
    if not (hasattr(g, "base_data") and hasattr(dev, "queue")):
        raise TypeError(f"cannot stage a gradient buffer of type {type(g).__name__} on "
                        f"{dev!r}: expected a numpy array or a pyopencl array of an "
                        "OpenCL device")
    if g.dtype != np.float32 or not g.flags.c_contiguous:
        raise ValueError(f"the gradient buffer on {dev.name} must be C-contiguous float32, "
                         f"got {g.dtype}")
    import pyopencl as cl
    return cl


__all__ = ["GradientAverager", "DEFAULT_BUCKET_BYTES", "DEFAULT_MAX_THREADS", "default_threads"]
