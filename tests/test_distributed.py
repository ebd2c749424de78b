"""hetnet.distributed: the split of a batch over ranks (pure functions, here),
and the collectives, fault handling and single-rank behaviour in real MPI
jobs: ``mpirun -n 2`` on the CPU, started from here with a timeout (the
scripts are in tests/mpi/), skipped when mpirun or mpi4py is missing."""

import importlib.util
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from hetnet.distributed import (split_batch, rebalance, share_weights, offsets, rank_device,
                                launched_by_mpi, MPIUnavailableError)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "tests", "mpi")
MPIRUN = shutil.which("mpirun")


def _mpi_missing():
    """Why the MPI jobs cannot run here, or None.  mpi4py is loaded in a
    child process: loading it here would make pytest itself an MPI process."""
    if MPIRUN is None:
        return "no mpirun"
    if importlib.util.find_spec("mpi4py") is None:
        return "no mpi4py"
    probe = subprocess.run([sys.executable, "-c", "from mpi4py import MPI"], capture_output=True,
                           text=True, timeout=60)
    if probe.returncode:
        lines = probe.stderr.strip().splitlines() or ["(no message)"]
        return "mpi4py cannot load an MPI library: " + lines[-1]
    return None


MPI_MISSING = _mpi_missing()
needs_mpi = pytest.mark.skipif(
    MPI_MISSING is not None,
    reason=f"{MPI_MISSING}: the MPI tests need Open MPI and mpi4py (apt-get install "
           "openmpi-bin libopenmpi-dev; pip install 'hetnet[mpi]'); scripts/test.sh installs "
           "them as root")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    # one thread per rank on a 2-core machine running two ranks
    env.setdefault("HETNET_NUM_THREADS", "1")
    # containers often forbid the cross-memory attach Open MPI's shared-memory
    # transport uses for large messages (process_vm_readv: EPERM)
    env.setdefault("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    for var in [v for v in env if v.startswith(("OMPI_COMM_WORLD", "PMIX_", "PMI_"))]:
        del env[var]        # a launcher's variables, if pytest itself runs under one
    return env


def mpirun(script, *args, n=2, timeout=60, env=None):
    """Run tests/mpi/``script`` on ``n`` ranks; ``(returncode, output, seconds)``."""
    cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-n", str(n), sys.executable,
           os.path.join(SCRIPTS, script), *args]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=env or _env(), cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"mpirun {script} {args} hung past {timeout} s; output so far:\n{out}")
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - t0


def _ok_on_both_ranks(script, *args, timeout=60):
    """Run ``script`` on two ranks: a clean exit and "OK" from each, or the skip
    the script printed (a device it needs is absent)."""
    rc, out, _ = mpirun(script, *args, timeout=timeout)
    assert rc == 0, out
    if "SKIP" in out:
        pytest.skip(next(line for line in out.splitlines() if "SKIP" in line))
    assert "OK rank 0" in out and "OK rank 1" in out, out


# ------------------------------------------------------------- the split
def test_split_batch_sums_and_is_proportional():
    rng = np.random.default_rng(0)
    for _ in range(300):
        k = int(rng.integers(1, 9))
        total = int(rng.integers(0, 2000))
        w = rng.uniform(0.05, 10, k)
        s = split_batch(total, w)
        assert s.dtype == np.int64 and s.shape == (k,)
        assert s.sum() == total
        if total >= k:
            assert s.min() >= 1
            # no share is more than one sample from its quota unless raised to the minimum
            quota = total * w / w.sum()
            raised = s == 1
            assert np.all(np.abs(s - quota)[~raised] < 1 + (raised.sum() * 1.0))
        else:
            assert set(s.tolist()) <= {0, 1}


def test_split_batch_exact_cases():
    assert split_batch(256, [1, 1]).tolist() == [128, 128]
    assert split_batch(256, [3, 1]).tolist() == [192, 64]
    assert split_batch(10, [1, 1, 1]).tolist() == [4, 3, 3]      # leftover to the lower rank
    assert split_batch(10, [1, 1, 2]).tolist() == [3, 2, 5]      # largest fraction first
    assert split_batch(100, [1000, 1]).tolist() == [99, 1]        # the minimum share
    assert split_batch(100, [1000, 1], minimum=0).tolist() == [100, 0]
    assert split_batch(100, [1, 1000, 1], minimum=5).tolist() == [5, 90, 5]
    assert split_batch(2, [1, 5, 3]).tolist() == [0, 1, 1]        # fewer samples than ranks
    assert split_batch(0, [1, 2]).tolist() == [0, 0]
    assert split_batch(7, [2.5]).tolist() == [7]


def test_split_batch_rejects_bad_input():
    for w in ([], [1, 0], [1, -1], [1, np.nan], [[1, 2]]):
        with pytest.raises(ValueError, match="weights"):
            split_batch(10, w)
    with pytest.raises(ValueError, match="total"):
        split_batch(-1, [1])
    with pytest.raises(ValueError, match="minimum"):
        split_batch(3, [1], minimum=-1)


def test_rebalance_follows_speed():
    # rank 1 went through its 128 in half the time: it is twice as fast
    assert rebalance([128, 128], [2.0, 1.0]).tolist() == [85, 171]
    # speeds measured at an unequal split give the same answer
    assert rebalance([64, 192], [1.0, 1.5]).tolist() == [85, 171]
    # a rank without a share or a time takes the others' median speed
    assert rebalance([0, 100, 100], [0.0, 1.0, 1.0]).tolist() == [67, 67, 66]
    assert rebalance([10, 10], [0.0, 0.0], total=9).tolist() == [5, 4]
    with pytest.raises(ValueError, match="shapes"):
        rebalance([1, 2], [1.0])


def test_share_weights_make_the_global_mean():
    rng = np.random.default_rng(1)
    g = rng.standard_normal((256, 5))                    # per-sample gradients
    shares = np.array([100, 31, 125])
    o = offsets(shares)
    assert o.tolist() == [0, 100, 131, 256]
    w = share_weights(shares)
    local_means = [g[o[r]:o[r + 1]].mean(axis=0) for r in range(3)]
    np.testing.assert_allclose(sum(wr * m for wr, m in zip(w, local_means)), g.mean(axis=0),
                               rtol=1e-12)
    with pytest.raises(ValueError):
        share_weights([0, 0])


# --------------------------------------------------------------- devices
def test_rank_device_gpu_by_local_rank_then_cpu_share():
    gpus = ["opencl:0:0", "opencl:0:1"]
    assert rank_device("auto", 0, 2, gpus, 16) == ("opencl:0:0", None)
    assert rank_device("auto", 1, 2, gpus, 16) == ("opencl:0:1", None)
    # a third and fourth rank on the CPU: 16 cores less one per GPU rank, shared by two
    assert rank_device("auto", 2, 4, gpus, 16) == ("cpu", 7)
    assert rank_device("auto", 1, 2, [], 16) == ("cpu", 8)
    assert rank_device("auto", 0, 2, [], 2) == ("cpu", 1)
    assert rank_device("cpu", 0, 2, gpus, 16) == ("cpu", 8)
    assert rank_device("auto", 0, 3, [], 2) == ("cpu", 1)           # at least one thread
    assert rank_device("gpu", 1, 2, gpus, 16) == ("opencl:0:1", None)
    with pytest.raises(ValueError, match="needs a GPU for each"):
        rank_device("gpu", 0, 3, gpus, 16)
    with pytest.raises(ValueError, match="local_rank"):
        rank_device("auto", 2, 2, gpus, 16)
    with pytest.raises(ValueError, match="spec"):
        rank_device("tpu", 0, 1, gpus, 16)


def test_launcher_detection():
    assert not launched_by_mpi({})
    assert launched_by_mpi({"OMPI_COMM_WORLD_SIZE": "2"})
    assert launched_by_mpi({"PMI_SIZE": "4"})


def test_no_mpi4py_says_what_to_install(monkeypatch):
    from hetnet.distributed import init
    monkeypatch.setitem(sys.modules, "mpi4py", None)     # import mpi4py now fails
    with pytest.raises(MPIUnavailableError) as exc:
        init()
    text = str(exc.value)
    assert "mpi4py" in text and "apt-get install openmpi-bin libopenmpi-dev" in text
    assert "hetnet[mpi]" in text


# ------------------------------------------------------------ MPI jobs
@needs_mpi
def test_collectives_on_two_ranks(tmp_path):
    path = str(tmp_path / "written.txt")
    rc, out, _ = mpirun("collectives.py", path)
    assert rc == 0, out
    assert "OK rank 0" in out and "OK rank 1" in out, out
    assert out.count("printed by rank") == 1 and "printed by rank 0" in out, out
    assert open(path).read() == "written by rank 0\n"
    assert not [f for f in os.listdir(tmp_path) if f != "written.txt"]    # no temporary left


@needs_mpi
@pytest.mark.parametrize("n, algorithm", [(2, "default"), (2, "reduce-scatter"), (3, "default")])
def test_shared_memory_averaging_is_the_weighted_sum(n, algorithm):
    """Two ranks take the all-sum (one barrier, alternating slot sets),
    three the reduce-scatter; ``reduce-scatter`` forces it on two."""
    rc, out, _ = mpirun("shm.py", "average", algorithm, n=n, timeout=90)
    assert rc == 0, out
    assert all(f"OK rank {r}" in out for r in range(n)), out


@needs_mpi
def test_shared_memory_averaging_refuses_unlike_layouts():
    rc, out, _ = mpirun("shm.py", "mismatch")
    assert rc == 0, out
    assert "refused on rank 0" in out and "refused on rank 1" in out, out


@needs_mpi
@pytest.mark.parametrize("algorithm", ["default", "reduce-scatter"])
def test_shared_memory_averaging_of_device_buffers(algorithm):
    _ok_on_both_ranks("shm.py", "opencl", algorithm)


@needs_mpi
def test_data_parallel_fit_by_shared_memory_is_the_mpi_one():
    rc, out, _ = mpirun("fit.py", "transports", timeout=120)
    assert rc == 0, out
    assert "OK rank 0" in out and "OK rank 1" in out, out
    assert "mlp transports" in out and "convnet transports" in out, out


class _TwoHosts:
    """A stand-in Context: 4 ranks, 2 of them on this host."""
    size, local_size, rank, host, MPI = 4, 2, 0, "node-a", None

    def allgather(self, array, what=""):
        return np.stack([np.asarray(array)] * self.size)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_shared_memory_passes_have_numpy_bits_whatever_the_threads(threads):
    """The averaging's pack (``slot = g * w``) and sum (rows in order) against
    numpy's float32 ``np.multiply`` / ``np.add`` chain, bit for bit: K = 1-4
    rows, odd sizes around the threads' chunk, columns and outputs off the
    cache lines, in place; nothing outside the output written."""
    from hetnet._cpu.elementwise import AVERAGE_MIN_CHUNK, scale_into, sum_rows
    rng = np.random.default_rng(threads)
    for n in (0, 1, 17, 2 * AVERAGE_MIN_CHUNK - 1, 5 * AVERAGE_MIN_CHUNK + 3, 61706):
        for k in (1, 2, 3, 4):
            rows = rng.standard_normal((k, n + 21)).astype(np.float32)
            for start, off in ((0, 0), (3, 1), (21, 7)):
                want = rows[0, start:start + n].copy()
                for q in range(1, k):
                    want = want + rows[q, start:start + n]
                whole = np.full(n + off + 1, 7.0, dtype=np.float32)
                sum_rows(rows, start, start + n, whole[off:off + n], threads)
                np.testing.assert_array_equal(whole[off:off + n].view(np.uint32),
                                              want.view(np.uint32))
                assert np.all(whole[:off] == 7.0) and whole[-1] == 7.0
        g = rng.standard_normal(n).astype(np.float32)
        for w in (1.0, 0.5, 1 / 3):
            want = g * np.float32(w)
            out = np.empty_like(g)
            scale_into(g, out, w, threads)
            np.testing.assert_array_equal(out.view(np.uint32), want.view(np.uint32))
            in_place = g.copy()
            scale_into(in_place, in_place, w, threads)
            np.testing.assert_array_equal(in_place.view(np.uint32), want.view(np.uint32))
    with pytest.raises(ValueError, match="sum_rows"):
        sum_rows(np.zeros((2, 10), np.float32), 5, 11, np.zeros(6, np.float32), threads)
    with pytest.raises(ValueError, match="scale_into"):
        scale_into(np.zeros(3, np.float32), np.zeros(4, np.float32), 1.0, threads)


def test_shared_memory_transport_needs_every_rank_on_one_host():
    from hetnet.distributed import GradientAverager
    with pytest.raises(ValueError, match="impossible here: the 4 ranks span several hosts"):
        GradientAverager(_TwoHosts(), transport="shm")
    with pytest.raises(ValueError, match="transport must be"):
        GradientAverager(_TwoHosts(), transport="nccl")
    auto = GradientAverager(_TwoHosts())
    assert auto.transport_used is None and auto._choose_transport() == "mpi"
    assert GradientAverager(_TwoHosts(), transport="mpi").transport_used == "mpi"


@needs_mpi
def test_device_buffers_staged_through_the_host():
    _ok_on_both_ranks("staging.py")


@needs_mpi
@pytest.mark.parametrize("mode", ["exit", "hang"])
@pytest.mark.parametrize("transport", ["shm", "mpi"])
def test_a_rank_that_leaves_or_hangs_ends_the_job_within_the_timeout(mode, transport):
    rc, out, seconds = mpirun("fault.py", mode, transport, timeout=30)
    assert rc != 0, out
    assert "another rank has died or hangs" in out and "rank 0 of 2" in out, out
    assert "the second allreduce completed" not in out
    assert seconds < 15, (seconds, out)      # a 2 s timeout, Open MPI's start and abort


@needs_mpi
def test_an_exception_on_one_rank_aborts_the_job():
    rc, out, seconds = mpirun("fault.py", "raise", timeout=30)
    assert rc != 0, out
    assert "rank 1 fails on purpose" in out and "uncaught RuntimeError" in out, out
    assert seconds < 15, (seconds, out)


@needs_mpi
def test_a_killed_rank_ends_the_job():
    rc, out, seconds = mpirun("fault.py", "kill", timeout=30)
    assert rc != 0, out
    assert "the second allreduce completed" not in out
    assert seconds < 15, (seconds, out)


@needs_mpi
def test_without_a_launcher_one_rank_warns_and_averages_nothing():
    code = ("import warnings, numpy as np\n"
            "from hetnet.distributed import init, GradientAverager\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    ctx = init(device='cpu')\n"
            "g = np.arange(5, dtype=np.float32)\n"
            "GradientAverager(ctx)([(ctx.device, g)])\n"
            "assert ctx.size == 1 and ctx.rank == 0 and ctx.is_root\n"
            "assert g.tolist() == [0, 1, 2, 3, 4]\n"
            "print(w[0].message)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "not started by an MPI launcher" in proc.stdout and "mpirun -n K" in proc.stdout


# ------------------------------------------------- fit(distributed=...)
@needs_mpi
def test_two_ranks_train_as_one_process_at_the_global_batch():
    """No BatchNorm in these nets: with it the ranks normalise by per-rank
    statistics (test_batchnorm_uses_per_rank_statistics), not one process's."""
    rc, out, _ = mpirun("fit.py", "equivalence", timeout=120)
    assert rc == 0, out
    assert "OK rank 0" in out and "OK rank 1" in out, out
    assert "balance=[1, 2] fits=2 shares=[[5, 11]]" in out, out       # the unequal split ran


@needs_mpi
def test_a_resumed_data_parallel_fit_is_the_uninterrupted_one(tmp_path):
    """Rank 0 writes the checkpoint, every rank resumes from it: the same
    weights, optimizer state, epoch and shuffle position on every rank."""
    rc, out, _ = mpirun("fit.py", "resume", str(tmp_path), timeout=120)
    assert rc == 0, out
    assert "OK rank 0" in out and "OK rank 1" in out and "resumed data-parallel fit" in out, out


@needs_mpi
def test_one_rank_is_a_plain_fit():
    rc, out, _ = mpirun("fit.py", "single", n=1)
    assert rc == 0, out
    assert "OK rank 0" in out, out


@needs_mpi
def test_batchnorm_uses_per_rank_statistics():
    """PyTorch DDP's semantics without SyncBatchNorm: each rank normalises by
    its rows' statistics; the running statistics are the share-weighted
    mean over the ranks, so the replicas stay identical after every step."""
    _ok_on_both_ranks("fit.py", "batchnorm")


@needs_mpi
def test_a_cpu_rank_and_an_opencl_rank_train_as_one_process():
    _ok_on_both_ranks("fit.py", "opencl", timeout=120)


@needs_mpi
def test_unlike_placements_are_refused():
    rc, out, _ = mpirun("fit.py", "placement")
    assert rc == 0, out
    assert "refused on rank 0" in out and "refused on rank 1" in out, out


@needs_mpi
def test_train_command_distributed(tmp_path):
    out_file = tmp_path / "m.hetnet.npz"
    cmd_args = ["-m", "hetnet", "train", "--distributed", "--source", "sample", "--arch", "mlp",
                "--epochs", "1", "--limit", "512", "--batch-size", "64", "--quiet",
                "--out", str(out_file)]
    cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-n", "2", sys.executable, *cmd_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env(),
                          cwd=str(tmp_path))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert out.count("epoch 1: loss") == 1 and "2 ranks" in out, out     # rank 0 alone prints
    assert [p.name for p in tmp_path.iterdir()] == ["m.hetnet.npz"], list(tmp_path.iterdir())
    # the same run in one process gives the same model
    plain = tmp_path / "plain"
    plain.mkdir()
    args = [a if a != str(out_file) else str(plain / "p.hetnet.npz") for a in cmd_args
            if a != "--distributed"]
    proc = subprocess.run([sys.executable, *args, "--threads", "1"], capture_output=True,
                          text=True, timeout=120, env=_env(), cwd=str(plain))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import hetnet
    a, b = hetnet.load(str(out_file)), hetnet.load(str(plain / "p.hetnet.npz"))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=0, atol=1e-5)


@needs_mpi
def test_metaheuristics_spread_over_ranks_as_one_process():
    """SHADE, SHADE-ILS and a hybrid, each rank on its shard: every rank the
    same best weights to the bit (one search), one process's within 1e-5."""
    rc, out, _ = mpirun("evolve.py", "evolve", timeout=120)
    assert rc == 0, out
    assert "OK rank 0" in out and "OK rank 1" in out, out
    assert "SHADEILS balance=[1, 2] shares=[30, 60]" in out, out     # the unequal shards ran
    assert out.count("evals=60 max") == 2 and "evals=50 max" in out, out


@needs_mpi
def test_hybrid_gradient_epochs_split_by_measured_speed():
    rc, out, _ = mpirun("evolve.py", "gdspeed", timeout=120)
    assert rc == 0, out
    assert "OK rank 0" in out and "OK rank 1" in out and "balance=speed: shares" in out, out


@needs_mpi
def test_one_rank_metaheuristic_is_a_plain_one():
    rc, out, _ = mpirun("evolve.py", "single", n=1)
    assert rc == 0, out
    assert "OK rank 0" in out, out


@needs_mpi
def test_checkpoints_and_csv_logs_are_written_by_rank_0_alone(tmp_path):
    rc, out, _ = mpirun("evolve.py", "files", str(tmp_path), timeout=120)
    assert rc == 0, out
    assert "OK rank 0" in out and "OK rank 1" in out, out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-1.npz", "ckpt-2.npz",
                                                          "evolve.csv", "log.csv"]


def test_distributed_fit_without_mpi4py_says_what_to_install(monkeypatch):
    import hetnet
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    model = hetnet.Sequential([hetnet.Dense(3, 2)], device="numpy", input_shape=(3,))
    X = np.zeros((4, 3), np.float32)
    with pytest.raises(MPIUnavailableError, match="apt-get install openmpi-bin"):
        model.fit(X, np.zeros(4, np.int32), distributed=True)
    with pytest.raises(TypeError, match="distributed must be"):
        model.fit(X, np.zeros(4, np.int32), distributed="yes")
