"""Data-parallel training over processes, GPUs and hosts, on MPI (mpi4py).

Start K processes with ``mpirun -n K python script.py``; in each,
:func:`init` joins the job and picks the rank's device (GPU ``i`` of the host
for local rank ``i``, else the CPU with the rank's share of the cores).
Every rank holds a replica of the model; each global mini-batch is split
across the ranks (:mod:`.shares`, in proportion to their measured speed),
and after the backward pass :class:`GradientAverager` (the runtime's gradient
hook) replaces each rank's flat gradient buffers by their weighted sum over
the ranks (within one host through an MPI-3 shared-memory window,
:mod:`.shm`; otherwise buffer-based ``Allreduce``/``Iallreduce`` in
buckets), so that every rank applies the same update.  Every collective is waited for under a watchdog:
a rank that dies or hangs ends the job with an error instead of a hang
(:mod:`.context`).

mpi4py is optional (``pip install 'hetnet[mpi]'``); importing this package
works without it, :func:`init` says what is missing.
"""

from ._mpi import MPIUnavailableError, require_mpi, launched_by_mpi
from .context import (init, Context, rank_device, host_gpus,
                      DEFAULT_TIMEOUT_S, TIMEOUT_ENV)
from .allreduce import GradientAverager, DEFAULT_BUCKET_BYTES, DEFAULT_MAX_THREADS, default_threads
from .shares import split_batch, measured_speeds, rebalance, share_weights, offsets

__all__ = ["init", "Context", "MPIUnavailableError", "require_mpi",
           "launched_by_mpi", "rank_device", "host_gpus", "GradientAverager", "split_batch",
           "measured_speeds", "rebalance", "share_weights", "offsets", "DEFAULT_TIMEOUT_S",
           "TIMEOUT_ENV", "DEFAULT_BUCKET_BYTES", "DEFAULT_MAX_THREADS", "default_threads"]
