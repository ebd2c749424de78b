"""Run under ``mpirun -n K``: gradient buffers on an OpenCL device (PoCL in
CI) averaged through host staging, in buckets, beside a host buffer; the
device array is a view at an offset into a larger one, whose other values
must stay untouched.  Prints ``OK rank R``, or ``SKIP reason`` (rank 0) when
no OpenCL device can build kernels."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from conftest import working_opencl_device          # noqa: E402

from hetnet.distributed import init, GradientAverager, share_weights   # noqa: E402


def inputs(rank, n):
    return np.random.default_rng(7 + rank).standard_normal(n).astype(np.float32)


def main():
    ctx = init(device="cpu", timeout=30)
    dev = working_opencl_device()
    have = ctx.allgather(np.array([dev is not None], dtype=np.int8))
    if not have.all():
        ctx.print("SKIP no OpenCL device that can build kernels")
        return
    k, r = ctx.size, ctx.rank
    n, off = 1000, 64
    whole = dev.asarray(np.full(off + n + 64, -5.0, dtype=np.float32))
    g = dev.batch_slice(whole, off, off + n)
    host_g = inputs(100 + r, 77)
    g_init = inputs(r, n)
    staged = dev.asarray(g_init)
    dev.axpy(1.0, staged, g)            # g = -5 + g_init, queued like a backward pass's writes
    dev.axpy(5.0, dev.asarray(np.ones(n, np.float32)), g)
    weights = share_weights(np.arange(1, k + 1))
    avg = GradientAverager(ctx, bucket_bytes=1024, weight=weights[r], transport="mpi")
    for call in range(3):      # later calls reuse the staging arrays; the last all blocking
        avg.nonblocking = False if call == 2 else None
        avg.average([(dev, g), (ctx.device, host_g)])
        want = sum(weights[q] * inputs(q, n).astype(np.float64) for q in range(k))
        want_host = sum(weights[q] * inputs(100 + q, 77).astype(np.float64) for q in range(k))
        got = dev.to_host(whole)
        np.testing.assert_allclose(got[off:off + n], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got[:off], -5.0)
        np.testing.assert_array_equal(got[off + n:], -5.0)
        np.testing.assert_allclose(host_g, want_host, rtol=1e-5, atol=1e-6)
        assert avg.last_buckets == -(-n // 256) + 1, avg.last_buckets
        # again from the same inputs
        dev.scale(0.0, g)
        dev.axpy(1.0, staged, g)
        host_g[:] = inputs(100 + r, 77)
    sys.stdout.write(f"OK rank {r}\n")


if __name__ == "__main__":
    main()
