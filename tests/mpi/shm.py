"""Run under ``mpirun -n K python shm.py MODE``: the shared-memory transport
of GradientAverager (hetnet.distributed.shm), each result checked on every
rank against the numpy weighted sum of every rank's inputs (seeded by rank)
and against the MPI path.

average   odd sizes (1 float, 61,706, sizes not a multiple of K), several
          buffers at once, weights other than 1 (unequal shares) and 1,
          bit-identical buffers on every rank, within 1e-6 of the MPI path;
          60 calls with changing data (the alternating slot sets); layout
          changes (another total: a new window; the same total cut
          otherwise); a slow reader (rank 0 sums late) while the others
          write their next call; close() and a fresh window; "auto" picks
          "shm"; threads (3, and a different count on each rank) give the
          bits of one thread and of numpy's float32 sum in rank order, for
          odd sizes, several buffers, weights other than 1 and 1.
mismatch  ranks passing buffers of unlike layouts (same total) get a clear
          error on every rank, not a wrong sum.
opencl    a device buffer (a view into a larger array) beside a host buffer,
          downloaded into the slot and uploaded from the sum, with the
          default threads and with 3; prints
          ``SKIP`` without an OpenCL device that builds kernels.
A second argument ``reduce-scatter`` makes 2 ranks use the algorithm of
more (the reduce-scatter) instead of the all-sum.
Prints ``OK rank R`` on success; any failure raises, which aborts the job.
"""

import os
import sys
import time

import numpy as np

from hetnet._cpu.elementwise import AVERAGE_MIN_CHUNK
from hetnet.distributed import init, GradientAverager, share_weights
from hetnet.distributed import shm
from hetnet.distributed.allreduce import default_threads


def inputs(rank, sizes, call=0):
    rng = np.random.default_rng(1000 * call + 100 + rank)
    return [rng.standard_normal(n).astype(np.float32) for n in sizes]


def expected(k, weights, sizes, call=0):
    """float64 weighted sum over the ranks, per buffer."""
    per_rank = [inputs(q, sizes, call) for q in range(k)]
    return [sum(weights[q] * per_rank[q][i].astype(np.float64) for q in range(k))
            for i in range(len(sizes))]


def same_bits_everywhere(ctx, bufs):
    flat = np.concatenate([b.reshape(-1) for b in bufs]).view(np.uint32)
    every = ctx.allgather(flat)
    assert np.all(every == every[0]), "the ranks' buffers differ in their bits"


def average(ctx):
    k, r = ctx.size, ctx.rank
    shares = np.arange(1, k + 1) * 3
    weights = share_weights(shares)
    layouts = [[1], [61706], [k * 7 + 1, 3, 61706, 1], [2 * k + 1]]
    for w_kind in ("shares", "one"):
        ws = weights if w_kind == "shares" else np.ones(k)
        via_shm = GradientAverager(ctx, weight=ws[r], transport="shm")
        mpi = GradientAverager(ctx, weight=ws[r], transport="mpi")
        for sizes in layouts:
            bufs = inputs(r, sizes)
            via_shm.average([(ctx.device, b) for b in bufs])
            ref = inputs(r, sizes)
            mpi.average([(ctx.device, b) for b in ref])
            for got, via_mpi, want in zip(bufs, ref, expected(k, ws, sizes)):
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(got, via_mpi, rtol=0, atol=1e-6)
            same_bits_everywhere(ctx, bufs)
            assert via_shm.transport_used == "shm" and via_shm.last_buckets == 1
        via_shm.close()
        mpi.close()         # nothing to free on the MPI path
    # the same sums in numpy's order: slot 0 + slot 1 + ..., in float32
    sizes = [61706]
    avg = GradientAverager(ctx, weight=weights[r], transport="shm")
    bufs = inputs(r, sizes)
    avg.average([(ctx.device, bufs[0])])
    np.testing.assert_array_equal(bufs[0], numpy_sum(k, weights, sizes)[0])
    assert avg.threads is None and avg.threads_used == default_threads(ctx) >= 1
    avg.close()
    threaded(ctx, weights)

    # 60 calls with data changing every call, the layout changed twice on
    # the way (a new total: a new window; the same total cut differently)
    plan = [[5000, 3]] * 25 + [[5003]] * 5 + [[17, 61706, 4]] * 30
    windows = []        # the windows in use, kept alive (so that no two are the same object)
    for call, sizes in enumerate(plan):
        avg.set_weight(weights[(r + call) % k] if call % 3 else 1.0 / k)
        wc = [weights[(q + call) % k] if call % 3 else 1.0 / k for q in range(k)]
        bufs = inputs(r, sizes, call)
        avg.average([(ctx.device, b) for b in bufs])
        for got, want in zip(bufs, expected(k, wc, sizes, call)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        if call % 10 == 0:
            same_bits_everywhere(ctx, bufs)
        if not windows or windows[-1] is not avg._shm:
            windows.append(avg._shm)
    assert len(windows) == 2 and avg.calls == 61, (len(windows), avg.calls)
    assert avg.last_s > 0 and avg.seconds >= avg.last_s and avg.ready_at > 0
    avg.close()
    assert avg._shm is None
    with avg:       # a closed averager allocates again at its next call
        g = inputs(r, [10])[0]
        avg.average({ctx.device: g}, weight=1.0 / k)
        np.testing.assert_allclose(g, expected(k, np.full(k, 1.0 / k), [10])[0], rtol=1e-5,
                                   atol=1e-6)
    assert avg._shm is None

    # a slow reader: rank 0 sums 3 ms after the barrier, while the others
    # return and write their next call's slots; with one set of slots (or
    # without the reduce-scatter's second barrier) rank 0 would sum those
    avg = GradientAverager(ctx, weight=weights[r], transport="shm")
    if r == 0:
        plain = shm.SharedSlots.sum_into

        def avg_sum(self, *args):
            time.sleep(0.003)
            plain(self, *args)
        shm.SharedSlots.sum_into = avg_sum
    for call in range(20):
        bufs = inputs(r, [4099, 5], call)
        avg.average([(ctx.device, b) for b in bufs])
        for got, want in zip(bufs, expected(k, weights, [4099, 5], call)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if r == 0:
        shm.SharedSlots.sum_into = plain
    avg.close()

    # "auto" on one host takes the window; "mpi" never does
    auto = GradientAverager(ctx)
    g = inputs(r, [513])[0]
    auto([(ctx.device, g)])
    assert auto.transport_used == "shm", auto.transport_used
    np.testing.assert_allclose(g, expected(k, np.full(k, 1.0 / k), [513])[0], rtol=1e-5,
                               atol=1e-6)
    auto.close()
    for bad in ("tcp", None):
        try:
            GradientAverager(ctx, transport=bad)
        except ValueError as exc:
            assert "transport must be" in str(exc), exc
        else:
            raise AssertionError(f"transport={bad!r} was accepted")
    # an averager left open is freed at exit (no hang, no error)
    GradientAverager(ctx, transport="shm").average([(ctx.device, inputs(r, [100])[0])])


def numpy_sum(k, weights, sizes, call=0):
    """Per buffer, numpy's float32 ``w_0 g_0 + w_1 g_1 + ...`` in rank order."""
    want = [np.float32(weights[0]) * g for g in inputs(0, sizes, call)]
    for q in range(1, k):
        want = [a + np.float32(weights[q]) * g for a, g in zip(want, inputs(q, sizes, call))]
    return want


def threaded(ctx, weights):
    """Threads split the passes, not the sums: 3 threads (several chunks in
    the buffers over 2 * AVERAGE_MIN_CHUNK floats, odd sizes, buffers not on
    cache lines) and 1 + 2 * rank threads (the ranks unlike) give the bits
    of one thread and of numpy, with weights other than 1 and 1."""
    k, r = ctx.size, ctx.rank
    sizes = [7 * AVERAGE_MIN_CHUNK + 5, 1, 61706, 2 * k + 1, 3 * AVERAGE_MIN_CHUNK - 3]
    for ws in (weights, np.ones(k)):
        for threads in (1, 3, 1 + 2 * r):
            avg = GradientAverager(ctx, weight=ws[r], transport="shm", threads=threads)
            for call in range(3):       # both slot sets
                bufs = inputs(r, sizes, call)
                avg.average([(ctx.device, b) for b in bufs])
                for got, want in zip(bufs, numpy_sum(k, ws, sizes, call)):
                    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
            assert avg.threads_used == threads, (avg.threads_used, threads)
            avg.close()
            same_bits_everywhere(ctx, bufs)
    for bad in (0, -1, 2.5, True):
        try:
            GradientAverager(ctx, transport="shm", threads=bad)
        except ValueError as exc:
            assert "threads must be" in str(exc), exc
        else:
            raise AssertionError(f"threads={bad!r} was accepted")


def mismatch(ctx):
    r = ctx.rank
    avg = GradientAverager(ctx, transport="shm")
    sizes = [10, 20] if r == 0 else [20, 10]
    try:
        avg.average([(ctx.device, b) for b in inputs(r, sizes)])
    except ValueError as exc:
        assert "do not line up" in str(exc), exc
        sys.stdout.write(f"refused on rank {r}\n")
    else:
        raise AssertionError("unlike layouts were summed")


def opencl(ctx):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from conftest import working_opencl_device
    dev = working_opencl_device()
    have = ctx.allgather(np.array([dev is not None], dtype=np.int8))
    if not have.all():
        ctx.print("SKIP no OpenCL device that can build kernels")
        return
    weights = share_weights(np.arange(1, ctx.size + 1))
    for threads in (None, 3):
        device_and_host(ctx, dev, weights, threads)


def device_and_host(ctx, dev, weights, threads):
    """Six calls of a device buffer (several threads' chunks) beside a host one."""
    k, r = ctx.size, ctx.rank
    n, off = 3 * AVERAGE_MIN_CHUNK + 1001, 64
    avg = GradientAverager(ctx, weight=weights[r], transport="shm", threads=threads)
    for call in range(6):
        whole = dev.asarray(np.full(off + n + 64, -5.0, dtype=np.float32))
        g = dev.batch_slice(whole, off, off + n)
        dev.axpy(1.0, dev.asarray(inputs(r, [n], call)[0]), g)
        dev.axpy(5.0, dev.asarray(np.ones(n, np.float32)), g)
        host_g = inputs(100 + r, [77], call)[0]
        avg.average([(dev, g), (ctx.device, host_g)])
        got = dev.to_host(whole)
        want = expected(k, weights, [n], call)[0]
        want_host = sum(weights[q] * inputs(100 + q, [77], call)[0].astype(np.float64)
                        for q in range(k))
        np.testing.assert_allclose(got[off:off + n], want, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got[:off], -5.0)
        np.testing.assert_array_equal(got[off + n:], -5.0)
        np.testing.assert_allclose(host_g, want_host, rtol=1e-5, atol=1e-6)
        same_bits_everywhere(ctx, [got[off:off + n], host_g])
    avg.close()


def main(mode, algorithm="default"):
    if algorithm == "reduce-scatter":     # the algorithm of more ranks, on these few
        shm.ALLSUM_MAX_RANKS = 1
    ctx = init(device="cpu", timeout=20)
    assert ctx.size >= 2, "run me under mpirun -n 2 (or more)"
    {"average": average, "mismatch": mismatch, "opencl": opencl}[mode](ctx)
    sys.stdout.write(f"OK rank {ctx.rank}\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
