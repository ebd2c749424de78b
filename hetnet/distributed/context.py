"""The MPI world of a data-parallel job: ranks, each rank's device, and
collectives that never hang.

Every collective here is a non-blocking MPI call (``Ibcast``,
``Iallreduce``, ...) on numpy buffers (mpi4py's uppercase, buffer-based
methods: no pickling), then waited for with ``MPI_Waitall`` / ``MPI_Waitany``
under a watchdog (:meth:`Context.wait`).  A peer that died after
finalising MPI, or hangs, would leave the wait blocked forever; the
watchdog, a thread of each rank that looks every ``min(1 s, timeout / 4)``,
sees a wait older than :attr:`Context.timeout` seconds, prints which
collective on which rank timed out and calls ``MPI_Abort``, which ends
every rank of the job (mpirun exits non-zero).  A rank that dies without
finalising (killed, crashed) is seen by mpirun itself, which ends the job at
once; an uncaught Python exception on a rank aborts the job too (:func:`init`
installs a ``sys.excepthook`` that prints the traceback, then aborts)
instead of leaving the other ranks in their next collective.

Why a watchdog and not a wait that polls ``MPI_Test`` against a clock:
Open MPI advances a non-blocking collective only inside MPI calls, a
reduction of a few hundred kilobytes over shared memory takes many such
rounds, and a poll loop that sleeps between its tests (to leave the core to
the rank it waits for) stretched LeNet-5's 62k-float allreduce from tens of
microseconds to milliseconds (docs/performance.md).  ``MPI_Waitall`` lets the library
progress at its own pace; the watchdog costs the wait two attribute writes.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..devices import Device
from ._mpi import require_mpi, launched_by_mpi, launch_hint

#: seconds a rank waits in one collective before it declares a peer dead or
#: hung and aborts the job.  Long enough for what ranks legitimately do at
#: different speeds between two collectives (a first step's planning and
#: kernel builds, an evaluation, a checkpoint written by rank 0)
DEFAULT_TIMEOUT_S = 300.0
#: environment variable that overrides :data:`DEFAULT_TIMEOUT_S`
TIMEOUT_ENV = "HETNET_MPI_TIMEOUT"
#: the watchdog looks at the current wait this often at most (seconds)
_WATCH_PERIOD_S = 1.0
#: exit status of a job aborted by a timed-out collective
TIMEOUT_ERRORCODE = 3
#: exit status of a job aborted by an uncaught exception on a rank
EXCEPTION_ERRORCODE = 4


_CONTEXT = {}


def init(device: str | Device = "auto", timeout: float | None = None, comm: Any = None,
         abort_on_exception: bool = True, balance: str | Sequence[float] = "speed") -> Context:
    """Join the MPI job this process was started in.

    Parameters
    ----------
    device : str or Device
        ``"auto"`` (default): GPU ``i`` of the host for local rank ``i``
        while there are OpenCL GPUs for it, else the CPU with this rank's
        share of the cores (:func:`rank_device`).  ``"gpu"``: GPU ``i`` for
        local rank ``i``, an error if the host has fewer GPUs than ranks.
        ``"cpu"``: the CPU, with its share of the cores, on every rank.
        Anything else (``"opencl:P:D"``, ``"numpy"``, a Device): that
        device on every rank.
    timeout : float, optional
        Seconds a collective may wait for the other ranks before the job is
        aborted (the error printed, then ``MPI_Abort``: every rank ends);
        default ``$HETNET_MPI_TIMEOUT`` or :data:`DEFAULT_TIMEOUT_S`.
    comm : mpi4py.MPI.Comm, optional
        The ranks taking part; default ``MPI.COMM_WORLD``.
    abort_on_exception : bool
        Install a ``sys.excepthook`` that, after printing an uncaught
        exception, aborts the job (with more than one rank).
    balance : "speed", "equal" or sequence of float
        How ``fit(distributed=...)`` splits each global mini-batch:
        ``"speed"`` in proportion to each rank's measured compute speed,
        measured again every epoch (the first splits equally); ``"equal"``;
        or fixed relative weights, one per rank (``[1, 3]``: rank 1 takes
        three quarters).  :attr:`Context.balance` may be changed between fits.

    Returns
    -------
    Context
        The same object for later calls with the same ``comm``.

    Raises
    ------
    MPIUnavailableError
        If mpi4py or an MPI library is missing (the message says how to
        install them).
    """
    MPI = require_mpi()
    if comm is None:
        comm = MPI.COMM_WORLD
    key = comm.py2f()
    ctx = _CONTEXT.get(key)
    if ctx is None:
        if not launched_by_mpi() and comm.Get_size() == 1:
            warnings.warn("hetnet.distributed: this process was not started by an MPI launcher, "
                          "so it is a job of one rank (training runs as a plain fit); to use "
                          "several, " + launch_hint(os.path.basename(sys.argv[0] or "script.py")),
                          RuntimeWarning, stacklevel=2)
        ctx = _CONTEXT[key] = Context(MPI, comm, device, timeout, balance)
        if abort_on_exception and ctx.size > 1:
            _install_excepthook(ctx)
    else:
        if timeout is not None:
            ctx.timeout = _check_timeout(timeout)
        ctx.balance = balance
    return ctx


def _install_excepthook(ctx):
    previous = sys.excepthook
    if getattr(previous, "_hetnet_abort", False):
        return

    def hook(kind, value, tb):
        previous(kind, value, tb)
        sys.stderr.write(f"hetnet.distributed: rank {ctx.rank} of {ctx.size} ended with the "
                         f"uncaught {kind.__name__} above; aborting the job\n")
        sys.stderr.flush()
        ctx.comm.Abort(EXCEPTION_ERRORCODE)
    hook._hetnet_abort = True
    sys.excepthook = hook


def _timeout_default():
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    if not value:
        return DEFAULT_TIMEOUT_S
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={value!r} is not a number of seconds") from None


def _check_timeout(timeout):
    timeout = _timeout_default() if timeout is None else timeout
    try:
        timeout = float(timeout)
    except (TypeError, ValueError):
        raise TypeError(f"timeout must be a number of seconds, got {timeout!r}") from None
    if not timeout > 0:
        raise ValueError(f"timeout must be more than 0 seconds, got {timeout!r}")
    return timeout


def host_gpus() -> list[str]:
    """Device specs ``"opencl:P:D"`` of this host's OpenCL GPUs, those of the
    first platform that has any (one GPU is often listed by two platforms),
    in device order; empty without pyopencl or GPUs."""
    try:
        from ..devices.opencl.platform import get_platforms, device_type_name
        platforms = get_platforms()
    except Exception:   # no pyopencl, no ICD, no platform: no GPU for any rank
        return []
    for pi, p in enumerate(platforms):
        try:
            devices = p.get_devices()
        except Exception:   # a platform without devices raises on some ICD loaders
            continue
        gpus = [f"opencl:{pi}:{di}" for di, d in enumerate(devices) if device_type_name(d) == "gpu"]
        if gpus:
            return gpus
    return []


def rank_device(spec: str, local_rank: int, local_size: int, gpus: Sequence[str], cores: int
                ) -> tuple[str, int | None]:
    """Which device a rank takes: ``(device_spec, cpu_threads)``.

    Parameters
    ----------
    spec : str
        ``"auto"``, ``"gpu"`` or ``"cpu"`` (as :func:`init`'s ``device``).
    local_rank, local_size : int
        This rank's index among the ranks of its host, and their number.
    gpus : list of str
        The host's GPUs (:func:`host_gpus`).
    cores : int
        CPU cores the host's ranks share.

    Returns
    -------
    (str, int or None)
        ``("opencl:P:D", None)`` for a GPU rank; ``("cpu", threads)`` for a
        CPU rank, ``threads`` being the cores left after one for each GPU
        rank of the host (it drives its GPU), shared equally among the CPU
        ranks, at least 1.
    """
    spec = spec.strip().lower()
    if spec not in ("auto", "gpu", "cpu"):
        raise ValueError(f"spec must be 'auto', 'gpu' or 'cpu', got {spec!r}")
    if not 0 <= local_rank < local_size:
        raise ValueError(f"local_rank {local_rank} is not in [0, {local_size})")
    if spec == "gpu" and len(gpus) < local_size:
        raise ValueError(f"device='gpu' needs a GPU for each of the {local_size} ranks of this "
                         f"host, but it has {len(gpus)} ({', '.join(gpus) or 'none'}); start "
                         f"fewer ranks per host or use device='auto' (the others on the CPU)")
    n_gpu_ranks = 0 if spec == "cpu" else min(len(gpus), local_size)
    if local_rank < n_gpu_ranks:
        return gpus[local_rank], None
    cpu_ranks = local_size - n_gpu_ranks
    return "cpu", max(1, (int(cores) - n_gpu_ranks) // cpu_ranks)


class Context:
    """One rank's view of a data-parallel job (made by :func:`init`).

    Attributes
    ----------
    comm : mpi4py.MPI.Comm
        The job's ranks.
    rank, size : int
        This rank and the number of ranks.
    local_comm : mpi4py.MPI.Comm
        The ranks of this host (``COMM_TYPE_SHARED`` split).
    local_rank, local_size : int
        This rank among them, and their number.
    host : str
        ``MPI.Get_processor_name()``.
    device : Device
        This rank's device (see :func:`init`); give it to the model.
    cpu_threads : int or None
        The CPU threads this rank's share of the cores allows (None on a GPU
        rank).
    timeout : float
        Seconds a collective may wait (:meth:`wait`).
    balance : "speed", "equal" or numpy.ndarray
        How a data-parallel fit splits its mini-batches (see :func:`init`).
    """

    def __init__(self, MPI: Any, comm: Any, device: str | Device = "auto",
                 timeout: float | None = None, balance: str | Sequence[float] = "speed"
                 ) -> None:
        self.MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.timeout = _check_timeout(timeout)
        self.balance = balance
        self._waiting_since = None      # when the current wait began (the watchdog reads it)
        self._waiting_for = ""
        if self.size > 1:
            threading.Thread(target=self._watchdog, name="hetnet-mpi-watchdog",
                             daemon=True).start()
        self.local_comm = comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank = self.local_comm.Get_rank()
        self.local_size = self.local_comm.Get_size()
        self.host = MPI.Get_processor_name()
        self.cpu_threads = None
        self.device = self._choose_device(device)

    @property
    def balance(self) -> str | tuple[float, ...]:
        return self._balance

    @balance.setter
    def balance(self, value: str | Sequence[float]) -> None:
        if isinstance(value, str):
            if value not in ("speed", "equal"):
                raise ValueError(f"balance must be 'speed', 'equal' or one weight per rank, "
                                 f"got {value!r}")
            self._balance = value
            return
        w = np.asarray(value, dtype=np.float64)
        if w.shape != (self.size,) or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError(f"balance weights must be {self.size} finite positive numbers "
                             f"(one per rank), got {value!r}")
        self._balance = w

    def __repr__(self):
        return (f"<hetnet.distributed.Context rank {self.rank}/{self.size}, local "
                f"{self.local_rank}/{self.local_size} on {self.host}, {self.device.name}>")

    @property
    def is_root(self) -> bool:
        """Whether this is rank 0, the one that prints and writes."""
        return self.rank == 0

    # ------------------------------------------------------------ devices
    def _host_cores(self):
        """``(cores, bound, own)``: the CPU cores this rank's threads may
        share with the host's other CPU ranks, whether the launcher bound
        each rank to cores of its own (their affinity masks do not overlap;
        then ``cores`` counts this rank's own), and the cores this rank may
        run on.  Collective over the host's ranks."""
        ncpu = os.cpu_count() or 1
        mine = np.zeros(ncpu, dtype=np.uint8)
        try:
            mine[sorted(c for c in os.sched_getaffinity(0) if c < ncpu)] = 1
        except AttributeError:      # not Linux: all cores
            mine[:] = 1
        masks = np.empty((self.local_size, ncpu), dtype=np.uint8)
        self.wait(self.local_comm.Iallgather(mine, masks), "the exchange of CPU affinity masks")
        overlap = bool((masks.sum(axis=0) > 1)[mine.astype(bool)].any())
        own = int(mine.sum())
        if self.local_size > 1 and not overlap:
            return own, True, own
        return int(masks.max(axis=0).sum()), False, own

    def free_cores(self) -> int:
        """The CPU cores this rank may use that the host's other ranks do
        not take: its own when the launcher bound the ranks to cores of
        their own, else an equal share of the cores they all may run on
        (never more than this rank's affinity mask holds), at least 1.  A
        collective: every rank of the host calls it at the same point."""
        cores, bound, own = self._host_cores()
        return own if bound else max(1, min(own, cores // self.local_size))

    def _choose_device(self, spec):
        from ..devices import Device, get_device
        if isinstance(spec, Device):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"device must be a device name or a Device, got {spec!r}")
        key = spec.strip().lower()
        if key not in ("auto", "gpu", "cpu"):
            return get_device(spec)
        gpus = [] if key == "cpu" else host_gpus()
        cores, bound, _ = self._host_cores()
        name, threads = rank_device(key, self.local_rank, self.local_size, gpus, cores)
        if bound and name == "cpu":     # the launcher gave this rank its own cores
            threads = cores
        if name != "cpu":
            return get_device(name)
        for var in ("HETNET_NUM_THREADS", "OMP_NUM_THREADS"):
            if os.environ.get(var, "").strip():    # the user's explicit choice wins
                from ..devices.cpu import default_num_threads
                threads = default_num_threads()
                break
        else:
            # devices made later by name ("cpu", a model's "auto") take the share too
            os.environ["HETNET_NUM_THREADS"] = str(threads)
        self.cpu_threads = threads
        dev = get_device("cpu")
        if getattr(dev, "num_threads", threads) != threads:
            from ..devices.cpu import CPUDevice
            dev = CPUDevice(num_threads=threads)
        return dev

    # -------------------------------------------------------- collectives
    def wait(self, requests: Any, what: str, on_complete: Callable[..., Any] | None = None
             ) -> None:
        """Wait for MPI requests; the job is aborted if this takes more than
        :attr:`timeout` seconds (see the module's notes).

        Parameters
        ----------
        requests : mpi4py.MPI.Request or list of them
        what : str
            The collective, for the error message.
        on_complete : callable, optional
            ``on_complete(i)`` is called once request ``i`` completes (in
            completion order, ``MPI_Waitany``), the others still in flight.
        """
        reqs = list(requests) if isinstance(requests, (list, tuple)) else [requests]
        if not reqs:
            return
        MPI = self.MPI
        with self.watched(what):
            if on_complete is None:
                MPI.Request.Waitall(reqs)
                return
            pending = set(range(len(reqs)))
            while pending:
                i = MPI.Request.Waitany(reqs)
                if i == MPI.UNDEFINED:      # the rest were null requests (nothing to wait for)
                    for j in sorted(pending):
                        on_complete(j)
                    return
                pending.discard(i)
                on_complete(i)

    @contextlib.contextmanager
    def watched(self, what: str) -> Iterator[None]:
        """Within: a blocking MPI call (a wait, a blocking collective) that
        the watchdog ends the job for if it takes more than :attr:`timeout`
        seconds; ``what`` names it in the error."""
        self._waiting_for = what
        self._waiting_since = time.monotonic()
        try:
            yield
        finally:
            self._waiting_since = None

    def _watchdog(self):
        """Abort the job when a wait has lasted more than :attr:`timeout`."""
        while True:
            time.sleep(min(_WATCH_PERIOD_S, self.timeout / 4))
            since = self._waiting_since
            if since is not None and time.monotonic() - since > self.timeout:
                self._timed_out(self._waiting_for, time.monotonic() - since)

    def _timed_out(self, what, waited):
        message = (f"hetnet.distributed: rank {self.rank} of {self.size} ({self.host}) waited "
                   f"{waited:.1f} s for {what}: another rank has died or hangs. Aborting the "
                   f"job (the limit is {self.timeout:g} s: hetnet.distributed.init(timeout=...) "
                   f"or {TIMEOUT_ENV} sets it)")
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
        self.comm.Abort(TIMEOUT_ERRORCODE)
        os._exit(TIMEOUT_ERRORCODE)     # Abort does not return; if it ever did, still end

    def barrier(self, what: str = "a barrier") -> None:
        self.wait(self.comm.Ibarrier(), what)

    def bcast(self, array: NDArray[Any], root: int = 0, what: str = "a broadcast"
              ) -> NDArray[Any]:
        """Broadcast numpy ``array`` (C-contiguous) from ``root`` in place."""
        _check_buffer(array)
        if self.size > 1:
            self.wait(self.comm.Ibcast(array, root=root), what)
        return array

    def allreduce(self, array: NDArray[Any], op: Any = None, what: str = "an allreduce"
                  ) -> NDArray[Any]:
        """Reduce numpy ``array`` over the ranks in place (default: sum)."""
        _check_buffer(array)
        if self.size > 1:
            op = self.MPI.SUM if op is None else op
            self.wait(self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=op), what)
        return array

    def allgather(self, array: ArrayLike, what: str = "an allgather") -> NDArray[Any]:
        """Every rank's numpy ``array`` (same shape everywhere), stacked:
        ``(size, *array.shape)``."""
        array = np.ascontiguousarray(array)
        out = np.empty((self.size,) + array.shape, dtype=array.dtype)
        if self.size == 1:
            out[0] = array
            return out
        self.wait(self.comm.Iallgather(array, out), what)
        return out

    def allgatherv(self, array: ArrayLike, what: str = "an allgatherv") -> NDArray[Any]:
        """Every rank's rows of ``array`` (same per-row shape everywhere, any
        number of rows) concatenated in rank order."""
        array = np.ascontiguousarray(array)
        row = int(np.prod(array.shape[1:], dtype=np.int64))
        counts = self.allgather(np.array([array.shape[0]], dtype=np.int64),
                                what=what + " (row counts)")[:, 0]
        out = np.empty((int(counts.sum()),) + array.shape[1:], dtype=array.dtype)
        if self.size == 1:
            out[...] = array
            return out
        sizes = counts * row
        displs = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.wait(self.comm.Iallgatherv(array, [out, (sizes.tolist(), displs.tolist())]), what)
        return out

    def abort(self, message: str, errorcode: int = 1) -> None:
        """Print ``message`` and end every rank of the job."""
        sys.stderr.write(f"hetnet.distributed: rank {self.rank}: {message}\n")
        sys.stderr.flush()
        self.comm.Abort(errorcode)

    # ----------------------------------------------------- rank 0 writes
    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on rank 0 only (flushed); the other ranks print nothing."""
        if self.is_root:
            kwargs.setdefault("flush", True)
            print(*args, **kwargs)

    def write(self, path: str | os.PathLike[str], writer: Callable[[str], Any], what: str | None = None
              ) -> None:
        """Rank 0 writes ``path`` atomically, every rank returns after.

        ``writer(tmp_path)`` writes the file under a temporary name beside
        ``path`` (same directory, so the rename cannot cross file systems),
        renamed onto ``path`` once it is complete: a job killed mid-write
        leaves the previous file whole.  The other ranks wait (within the
        timeout) until it is there.  A failure on rank 0 is raised there
        (and, as any uncaught exception, aborts the job).
        """
        path = os.fspath(path)
        if self.is_root:
            directory = os.path.dirname(os.path.abspath(path))
            # the name keeps path's ending, for writers that add a missing suffix
            tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
            try:
                writer(tmp)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        self.barrier(what or f"rank 0 to write {path}")

    # ------------------------------------------------------------ models
    def broadcast_weights(self, model: Any) -> None:
        """Give every rank rank 0's weights of ``model`` (built the same way
        on every rank), in one ``Ibcast`` of all parameters packed into one
        float32 buffer.

        Where every rank held rank 0's weights already (a later ``fit`` of
        replicas kept in step), nothing changes.  Otherwise the ranks that
        differ take rank 0's and every rank's optimizer state is reset (as
        :meth:`Sequential.set_weights` does), so that the replicas' optimizer
        states agree too."""
        weights = model.get_weights()
        flat = np.concatenate([w.reshape(-1) for w in weights]).astype(np.float32) \
            if weights else np.zeros(0, np.float32)
        shapes = np.array([w.size for w in weights], dtype=np.int64)
        root_shapes = self.bcast(shapes.copy(), what="the broadcast of the parameter sizes")
        if not np.array_equal(root_shapes, shapes):
            raise ValueError(f"rank {self.rank}'s model has parameters of sizes "
                             f"{shapes.tolist()}, rank 0's {root_shapes.tolist()}: every rank "
                             "must build the same model")
        root = self.bcast(flat.copy(), what="the broadcast of the initial weights")
        same = bool(np.array_equal(root.view(np.uint32), flat.view(np.uint32)))
        if self.allgather(np.array([same], dtype=np.int8), what="the check of the weights").all():
            return
        if not same:
            out, start = [], 0
            for w in weights:
                out.append(root[start:start + w.size].reshape(w.shape))
                start += w.size
            model.set_weights(out)
        if getattr(model, "optimizer", None) is not None:
            model.optimizer.reset()

    def checksum(self, arrays: Sequence[Any]) -> NDArray[np.float64]:
        """A float64 checksum of ``arrays`` (host or device arrays)
        gathered from every rank: ``(size,)``; equal entries mean the ranks
        hold the same values (to float64 rounding of the sums)."""
        total = np.zeros(2, dtype=np.float64)
        for i, a in enumerate(arrays):
            a = np.asarray(a, dtype=np.float64).reshape(-1)
            # position-weighted too, so that swapped values do not cancel
            total[0] += a.sum()
            total[1] += (a * (1.0 + (np.arange(a.size) % 7) + i)).sum()
        return self.allgather(total, what="the gathering of checksums")


def _check_buffer(array):
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(array).__name__}")
    if not array.flags.c_contiguous:
        raise ValueError("the buffer must be C-contiguous (np.ascontiguousarray makes one)")


__all__ = ["init", "Context", "rank_device", "host_gpus",
           "DEFAULT_TIMEOUT_S", "TIMEOUT_ENV"]
