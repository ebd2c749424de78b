"""Run under ``mpirun -n K``: the collectives of hetnet.distributed on the
CPU, each result checked on every rank against what it must be (every rank
can make every other rank's inputs: they are seeded by rank).  Prints
``OK rank R`` on success; any failure raises, which aborts the job."""

import sys

import numpy as np

import hetnet
from hetnet.distributed import init, GradientAverager, share_weights


def inputs(rank, sizes):
    rng = np.random.default_rng(100 + rank)
    return [rng.standard_normal(n).astype(np.float32) for n in sizes]


def main():
    ctx = init(device="cpu", timeout=20)
    k, r = ctx.size, ctx.rank
    assert k >= 2, "run me under mpirun -n 2 (or more)"
    assert ctx.local_size == k and ctx.local_rank == r, (ctx.local_rank, ctx.local_size)
    assert ctx.device.name == "cpu" and ctx.device.num_threads == ctx.cpu_threads >= 1

    # weighted averaging, several buffers, many buckets of 64 floats, by
    # blocking Allreduce (the MPI path's default for host buffers) and by
    # Iallreduce (the shared-memory transport: tests/mpi/shm.py)
    sizes = [1000, 37, 64, 1]
    shares = np.arange(1, k + 1) * 3        # unequal shares of a batch of 3k(k+1)/2
    weights = share_weights(shares)
    for nonblocking in (None, True):
        avg = GradientAverager(ctx, bucket_bytes=256, weight=weights[r], nonblocking=nonblocking,
                               transport="mpi")
        bufs = inputs(r, sizes)
        avg.average([(ctx.device, b) for b in bufs])
        expect = [sum(weights[q] * inputs(q, sizes)[i].astype(np.float64) for q in range(k))
                  for i in range(len(sizes))]
        for got, want in zip(bufs, expect):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert avg.last_buckets == sum(-(-n // 64) for n in sizes), avg.last_buckets
        # every rank holds the same bits, not only close values
        cs = ctx.checksum(bufs)
        assert np.all(cs == cs[0]), cs

    # the plain mean (weight 1/k), one bucket, a mapping of devices
    g = inputs(r, [513])[0]
    GradientAverager(ctx, transport="mpi")({ctx.device: g})
    want = np.mean([inputs(q, [513])[0].astype(np.float64) for q in range(k)], axis=0)
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)

    # broadcast of the initial weights: replicas seeded differently end as rank 0's
    model = hetnet.Sequential([hetnet.Dense(4, 5), hetnet.ReLU(), hetnet.Dense(5, 3)], seed=r,
                              device=ctx.device, input_shape=(4,))
    ref = hetnet.Sequential([hetnet.Dense(4, 5), hetnet.ReLU(), hetnet.Dense(5, 3)], seed=0,
                            device=ctx.device, input_shape=(4,))
    ctx.broadcast_weights(model)
    for a, b in zip(model.get_weights(), ref.get_weights()):
        np.testing.assert_array_equal(a, b)

    # allgatherv of unequal row counts, in rank order
    rows = np.full((r + 1, 2), r, dtype=np.int64)
    out = ctx.allgatherv(rows)
    assert out.tolist() == [[q, q] for q in range(k) for _ in range(q + 1)], out.tolist()

    # rank-0-only printing and atomic writing
    ctx.print("printed by rank", r)
    path = sys.argv[1] if len(sys.argv) > 1 else None
    if path:
        ctx.write(path, lambda tmp: open(tmp, "w").write(f"written by rank {r}\n"))
        assert open(path).read() == "written by rank 0\n"
    sys.stdout.write(f"OK rank {r}\n")


if __name__ == "__main__":
    main()
