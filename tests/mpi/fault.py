"""Run under ``mpirun -n 2 python fault.py MODE``: rank 1 fails in the way
MODE says while rank 0 averages a gradient; the job must end with an error
within seconds, not hang.

exit   rank 1 returns early (MPI finalised cleanly at exit): rank 0's
       allreduce times out and aborts the job
hang   rank 1 sleeps far past the timeout: the same
raise  rank 1 raises: the exception hook aborts the job
kill   rank 1 is killed (SIGKILL): mpirun ends the job

A second argument names the averager's transport (default "auto": the
shared-memory window, whose barriers are watched like the collectives).
"""

import os
import signal
import sys
import time

import numpy as np

from hetnet.distributed import init, GradientAverager


def main(mode, transport="auto"):
    ctx = init(device="cpu", timeout=float(os.environ.get("FAULT_TIMEOUT", "2")))
    g = np.ones(1000, dtype=np.float32)
    avg = GradientAverager(ctx, transport=transport)
    avg.average([(ctx.device, g)])          # one good step first
    assert np.all(g == 1.0), g[:4]
    if ctx.rank == 1:
        if mode == "exit":
            return
        if mode == "hang":
            time.sleep(120)
        if mode == "raise":
            raise RuntimeError("rank 1 fails on purpose")
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
    avg.average([(ctx.device, g)])
    print(f"rank {ctx.rank}: the second allreduce completed, which it must not", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
