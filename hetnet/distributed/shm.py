"""Averaging gradient buffers through an MPI-3 shared-memory window, for
ranks that are all on one host.

The ranks of a host (``comm.Split_type(COMM_TYPE_SHARED)``, the context's
``local_comm``) map one window (``MPI.Win.Allocate_shared``, rank 0 of the
window allocating it all, the others finding it by ``Win.Shared_query``)
laid out as::

    header   2 sets x K int64      (each rank's layout key, per set)
    slots    2 sets x K x N float32 (each rank's weighted gradient, per set)
    result   N float32              (the reduce-scatter's sums)

``N`` is the buffers' total floats (rounded up to 16, 64 bytes, so that
every slot starts on a cache line).  A call packs the rank's buffers into
its slot of the current set, scaled by its weight in the same pass
(``slot = g * w`` in float32, a copy when ``w == 1``; a device buffer is
downloaded straight into the slot and scaled there), then the ranks sum
the K slots in rank order, ``((s_0 + s_1) + s_2) + ...``, elementwise.  Two
ways, chosen by K (:data:`ALLSUM_MAX_RANKS`):

- *all-sum* (K <= :data:`ALLSUM_MAX_RANKS`): one barrier; then every rank
  sums all K slots itself, straight into its own buffers.  It reads K*N
  floats a rank, but needs no second barrier.
- *reduce-scatter*: a barrier; each rank sums its 1/K slice of the K slots
  into the result region; a barrier; each rank copies the whole result
  back into its buffers.  Each rank reads 2N floats (its slice of every
  slot, then the result), whatever K.

Either way every rank ends with the same bits: each element is the same
sum in the same order (all-sum and reduce-scatter give the same bits too).

Both passes are memory-bound, and one thread reads another core's slot at
well under the bandwidth the cores have together, so each rank splits them
over ``threads`` threads (:func:`hetnet._cpu.elementwise.scale_into` and
:func:`~hetnet._cpu.elementwise.sum_rows`, OpenMP; each thread a
contiguous chunk starting on a cache line of the array it writes).  The
threads change which core computes an element, not how: the product and
the adds of each element are the same float32 operations in the same
order, unfused and unreassociated, so the bits are those of one thread
(and of numpy's ``np.multiply``/``np.add``), and ranks may use different
numbers of threads.

Why two sets of slots, and why that removes a barrier from all-sum (but
not from reduce-scatter).  In all-sum the only barrier of call n (B_n)
sits between the writes of call n's slots and the reads of them.  Without
a second set, call n+1 would write a rank's slot while a slower rank may
still be reading it for call n: a second barrier at the end of each call
would be needed.  With call n in set n % 2, the slots of set A written by
call n are next written by call n+2, and a rank writes them then only after
it passed B_{n+1}; every rank arrives at B_{n+1} only after its reads of
call n are over (they come before it in program order).  So nobody writes
set A again before everyone has read it, with one barrier a call.  The
header's layout keys follow the same argument (written before B_n, read
right after it, per set).  Reduce-scatter has two barriers that are both
true dependencies of one call (all slots written before any slice is
summed; all slices summed before anyone copies the result); its
anti-dependencies across calls are covered by them already (slots of call
n are read before B2_n, written again after it; the result of call n is
read before B1_{n+1}, written again after it), so it uses one set.

The memory model: the window lives in the unified memory model (shared
memory windows are unified in Open MPI and MPICH; :class:`SharedSlots`
checks ``MPI.WIN_MODEL``).  Every rank opens one passive-target epoch on it
for the window's whole life (``win.Lock_all(MPI.MODE_NOCHECK)``), and every
barrier is ``win.Sync(); Barrier; win.Sync()``: MPI-3.1 section 11.7 (its
advice to users on MPI_WIN_SYNC, MPI Forum ticket #413) gives
``MPI_WIN_SYNC`` + process synchronisation + ``MPI_WIN_SYNC`` as what
orders a rank's stores to a shared-memory window before another rank's
loads in the unified model; the first Sync completes this rank's stores,
the barrier orders the ranks, the second keeps this rank's later loads
after it.  The threads of a pass do not change this: the pack's threads
end at the closing barrier of their parallel region (an OpenMP flush)
before this rank's first Sync, as if the rank's one thread had stored
their values, and the sum's threads start (a fork, also a flush) after the
second Sync; every read of a call is over when its parallel region ends,
before the rank goes on to the next barrier, which the alternating sets'
argument above needs.

Barriers are blocking ``MPI_Barrier`` calls under the context's watchdog
(:meth:`Context.watched`): a rank that died or hangs ends the job within
the timeout, as for every other collective.  The window is freed
collectively by :meth:`SharedSlots.free` (``GradientAverager.close``, the
end of a data-parallel fit or of a metaheuristic's search) or, for any still open, at exit (an
``atexit`` hook run before mpi4py finalises MPI; not watched there, as
``MPI_Finalize`` is not: a rank that ends early waits in it for a peer
still in a collective, whose watchdog reports the fault and ends the
job).
"""

from __future__ import annotations

import atexit
import zlib
from typing import Any

import numpy as np

from .._cpu.elementwise import sum_rows

#: up to this many ranks the all-sum (one barrier) is used, above it the
#: reduce-scatter (two barriers, 2N floats read a rank whatever K).  With 2
#: ranks on the 2-core machine the all-sum was the faster (61,706 floats,
#: interleaved rounds: 70-78 µs against 73-142 µs); where more ranks cross
#: over is not measured yet (a host with more cores can)
ALLSUM_MAX_RANKS = 2
#: floats per cache line: slots and slices start on one
_LINE = 16

# every window still open, freed at exit in the order they were made (the
# same on every rank: the windows are made by collectives)
_OPEN: list[SharedSlots] = []


def shm_possible(context: Any) -> str | None:
    """Why the shared-memory transport cannot serve ``context``'s ranks, or
    None when it can: every rank on this host, and an MPI-3 library."""
    if context.local_size != context.size:
        return (f"the {context.size} ranks span several hosts (this one, {context.host}, has "
                f"{context.local_size}); a shared-memory window joins the ranks of one host")
    MPI = context.MPI
    if not hasattr(MPI.Win, "Allocate_shared") or MPI.Get_version() < (3, 0):
        return (f"the MPI library is MPI {'.'.join(map(str, MPI.Get_version()))}; shared-memory "
                "windows need MPI 3")
    return None


def layout_key(sizes: tuple[int, ...]) -> int:
    """An int64 that names a layout of buffer sizes (the ranks compare it)."""
    return zlib.crc32(repr(sizes).encode()) | (len(sizes) << 32)


class SharedSlots:
    """One shared-memory window over the ranks of a host, for buffers of
    ``total`` floats in all: two sets of one slot per rank, a header, and a
    result region.  Made collectively (every rank of ``context.local_comm``
    at the same point); :meth:`free` is collective too.

    Parameters
    ----------
    context : Context
    total : int
        Floats a slot holds (the buffers' total).
    """

    def __init__(self, context: Any, total: int) -> None:
        MPI = context.MPI
        comm = context.local_comm
        self.context = context
        self.comm = comm
        self.total = int(total)
        self.k = comm.Get_size()
        self.rank = comm.Get_rank()
        self.cap = max(_LINE, -(-self.total // _LINE) * _LINE)
        header = 2 * -(-self.k * 8 // 64) * 64          # bytes, a cache line per set at least
        self._header_bytes = header
        nbytes = header + 4 * (2 * self.k * self.cap + self.cap)
        with context.watched(f"the allocation of a {nbytes:,}-byte shared-memory window for "
                             "the gradient averaging (every rank's buffers must have the same "
                             "layout)"):
            self.win = MPI.Win.Allocate_shared(nbytes if self.rank == 0 else 0, 1, comm=comm)
        try:
            model = self.win.Get_attr(MPI.WIN_MODEL)
            if model is not None and model != MPI.WIN_UNIFIED:
                raise RuntimeError("the MPI library gave a shared-memory window in the separate "
                                   "memory model; the averaging's loads and stores need the "
                                   "unified one (transport='mpi' avoids it)")
            buf, _ = self.win.Shared_query(0)
            raw = np.frombuffer(buf, dtype=np.uint8, count=nbytes)
        except BaseException:
            self.win.Free()
            raise
        self.header = raw[:header].view(np.int64).reshape(2, -1)[:, :self.k]
        floats = raw[header:].view(np.float32)
        self.slots = floats[:2 * self.k * self.cap].reshape(2, self.k, self.cap)
        self.result = floats[2 * self.k * self.cap:]
        self.win.Lock_all(MPI.MODE_NOCHECK)
        self.calls = 0
        self.allsum = self.k <= ALLSUM_MAX_RANKS
        step = -(-self.cap // (self.k * _LINE)) * _LINE
        self.lo = min(self.rank * step, self.total)
        self.hi = min(self.lo + step, self.total)
        _OPEN.append(self)

    @property
    def open(self) -> bool:
        return self.win is not None

    def barrier(self, what: str) -> None:
        """``win.Sync(); Barrier; win.Sync()`` under the watchdog: this
        rank's stores to the window before it are seen by every rank's
        loads after it (module notes)."""
        win = self.win
        win.Sync()
        with self.context.watched(what):
            self.comm.Barrier()
        win.Sync()

    def begin(self) -> int:
        """The set (0 or 1) this call writes: alternating with all-sum, 0
        with reduce-scatter (module notes)."""
        s = self.calls % 2 if self.allsum else 0
        self.calls += 1
        return s

    def check_layout(self, s: int, key: int) -> None:
        """After the first barrier: raise (on every rank alike) unless every
        rank wrote layout ``key`` for set ``s``."""
        keys = self.header[s].tolist()      # K ints: cheaper in Python than in numpy
        if keys.count(key) != self.k:
            raise ValueError(f"the ranks' gradient buffers do not line up (layout keys "
                             f"{keys} by rank of the host): every rank must pass buffers of the "
                             "same sizes in the same order")

    def sum_into(self, s: int, start: int, stop: int, out: np.ndarray, threads: int = 1
                 ) -> None:
        """``out = ((slot_0 + slot_1) + ...)[start:stop]`` of set ``s``, in
        rank order, over up to ``threads`` threads."""
        sum_rows(self.slots[s], start, stop, out, threads)

    def free(self, watched: bool = True) -> None:
        """Free the window (collective: every rank of the host calls it at
        the same point); idempotent.  ``watched``: under the watchdog, as
        the barriers (at exit it is not, like ``MPI_Finalize`` after it: a
        rank that ends early then waits there for a peer still in a
        collective, whose watchdog reports the fault and ends the job)."""
        win, self.win = self.win, None
        if win is None:
            return
        self.header = self.slots = self.result = None
        if self in _OPEN:
            _OPEN.remove(self)
        win.Unlock_all()
        if not watched:
            win.Free()
            return
        with self.context.watched("the release of the gradient averaging's shared-memory "
                                  "window"):
            win.Free()


@atexit.register
def _free_all():
    """Free the windows still open before mpi4py finalises MPI (its
    finaliser is registered with the interpreter's C-level exit hooks, which
    run after the ``atexit`` ones)."""
    for slots in list(_OPEN):
        try:
            if slots.context.MPI.Is_finalized():
                return
            slots.free(watched=False)
        except Exception:   # at exit, a window MPI already tore down needs nothing more
            pass


__all__ = ["SharedSlots", "shm_possible", "layout_key", "ALLSUM_MAX_RANKS"]
