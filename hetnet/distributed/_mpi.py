"""Finding MPI: mpi4py, the MPI library under it, and the launcher that
started this process; clear messages when one is missing."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

#: environment variables that MPI launchers set in every process they start
#: (Open MPI's mpirun, PMIx, Hydra / MPICH / Intel MPI, Slurm's srun)
LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK",
                 "MPI_LOCALNRANKS", "SLURM_STEP_NUM_TASKS")

INSTALL_HINT = ("install an MPI library and mpi4py: on Debian/Ubuntu `apt-get install "
                "openmpi-bin libopenmpi-dev`, then `pip install 'hetnet[mpi]'` (or "
                "`pip install mpi4py`)")


class MPIUnavailableError(ImportError):
    """mpi4py (or the MPI library it needs) cannot be loaded: nothing
    distributed can run.  The message says what is missing and how to
    install it."""


def require_mpi() -> Any:
    """The ``mpi4py.MPI`` module, MPI initialised (at mpi4py's default
    thread level, ``MPI_THREAD_MULTIPLE``: the watchdog thread of
    :mod:`.context` may call ``MPI_Abort`` while the main thread waits).

    Raises
    ------
    MPIUnavailableError
        If mpi4py is not installed, or it is but the MPI library it was
        built for cannot be loaded.
    """
    try:
        import mpi4py
    except ImportError as exc:
        raise MPIUnavailableError(
            f"distributed training needs mpi4py, which is not installed ({exc}); "
            + INSTALL_HINT) from None
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as exc:
        raise MPIUnavailableError(
            f"mpi4py is installed but could not load an MPI library ({exc}); " + INSTALL_HINT
        ) from None
    return MPI


def launched_by_mpi(environ: Mapping[str, str] | None = None) -> bool:
    """Whether an MPI launcher (mpirun, mpiexec, srun) started this process:
    one of :data:`LAUNCHER_VARS` is set."""
    env = os.environ if environ is None else environ
    return any(env.get(v) for v in LAUNCHER_VARS)


def launch_hint(script="your_script.py"):
    return (f"start K processes with `mpirun -n K python {script}` (Open MPI as root also "
            "needs --allow-run-as-root; more processes than cores, --oversubscribe)")
