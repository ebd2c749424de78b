"""GEMM dispatch for :class:`hetnet.devices.opencl.OpenCLDevice`.

Chooses the kernel configuration (block tile BM x BN x BK, TM x TN outputs per
work-item) per problem, splits batch-summed products over several groups when
the output alone would leave the GPU idle, and tunes the large configuration
once per device (a few configurations timed at n = 2048, the winner cached in
``~/.cache/hetnet/opencl_gemm.json`` keyed by device and driver).
"""

import json
import os
import time
from collections import namedtuple
from pathlib import Path

import numpy as np

from .platform import build_program, cl

_I32, _F32 = np.int32, np.float32


class GemmConfig(namedtuple("GemmConfig", "bm bn bk tm tn")):
    """Tile shape of ``gemm_main``: block tile ``bm x bn``, ``bk`` deep,
    ``tm x tn`` outputs per work-item; work-group ``(bn/tn, bm/tm)``."""

    __slots__ = ()

    @property
    def local_size(self):
        return (self.bn // self.tn, self.bm // self.tm, 1)

    @property
    def options(self):
        return (f"-DBM={self.bm}", f"-DBN={self.bn}", f"-DBK={self.bk}",
                f"-DTM={self.tm}", f"-DTN={self.tn}")

    def valid_for(self, max_wg, local_mem):
        nt = (self.bm // self.tm) * (self.bn // self.tn)
        lmem = 2 * 4 * self.bk * (self.bm + 4 + self.bn + 4)
        return (nt <= max_wg and lmem <= local_mem and self.tm % 4 == 0
                and self.tn % 4 == 0 and self.bk % 4 == 0
                and (self.bm * self.bk) % (4 * nt) == 0
                and (self.bn * self.bk) % (4 * nt) == 0)


#: Configurations tried by the autotuner (large problems), best first by prior.
CANDIDATES = (GemmConfig(128, 128, 16, 8, 8), GemmConfig(128, 128, 8, 8, 8),
              GemmConfig(128, 64, 16, 8, 8), GemmConfig(64, 128, 16, 8, 8),
              GemmConfig(64, 64, 16, 4, 4))
LARGE_DEFAULT = CANDIDATES[0]
SMALL_DEFAULT = GemmConfig(64, 64, 16, 4, 4)
CPU_DEFAULT = GemmConfig(64, 64, 16, 4, 4)

#: Signature of gemm_main for set_scalar_arg_dtypes (None = buffer).
MAIN_ARGS = [_I32, _I32, _I32,
             None, _I32, _I32, _I32, _I32, _I32,
             None, _I32, _I32, _I32, _I32, _I32,
             None, _I32, _I32, _I32, _I32,
             _F32, _F32, _I32, _I32]
TEACH_ARGS = [_I32, _I32, _I32,
              None, _I32, _I32, _I32,
              None, _I32, _I32, _I32,
              None, _I32, _I32,
              _F32, _F32]
PARTIALS_ARGS = [_I32, _I32, _I32, None, None, _I32, _I32, _F32, _F32]

TEACH_TS = 16
TEACH_OPTIONS = ("-DV1_WG=256", f"-DV2_TS={TEACH_TS}", f"-DV3_TS={TEACH_TS}",
                 f"-DV4_TS={TEACH_TS}")


def _cache_path():
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(root) / "hetnet" / "opencl_gemm.json"


def _elem_offset(a):
    return a.offset // a.dtype.itemsize


def _vec(ld, off, stride):
    """1 if rows, offset and batch stride allow float4 accesses."""
    return int(ld % 4 == 0 and off % 4 == 0 and stride % 4 == 0)


_EMPTY = object()       # plan of a product with no output elements


class Gemm:
    """GEMM engine bound to one :class:`OpenCLDevice`.

    Parameters
    ----------
    dev : OpenCLDevice
        Supplies context, queue, memory pool and the kernel cache.
    autotune : bool
        Time a few configurations the first time a large product is needed
        (GPUs only) and cache the winner on disk.
    """

    def __init__(self, dev, autotune=True):
        self.dev = dev
        self.autotune = autotune
        self._large = None
        self._small = SMALL_DEFAULT if dev.kind == "gpu" else CPU_DEFAULT
        self._cus = dev.cl_device.max_compute_units
        self.tuning = None      # what the autotuner measured, for reports
        # tensor cores through inline PTX: NVIDIA only, and only when asked for
        self.tf32 = (dev.precision == "tf32"
                     and "nvidia" in dev.cl_device.platform.name.lower())
        self._extra = ("-DUSE_TF32_MMA",) if self.tf32 else ()
        self._plans = {}

    # ----------------------------------------------------------- kernels
    def _main_kernel(self, cfg):
        return self.dev.kernel("gemm.cl", "gemm_main", MAIN_ARGS, cfg.options + self._extra)

    def _teach_kernel(self, version):
        return self.dev.kernel("gemm.cl", f"gemm_v{version}", TEACH_ARGS, TEACH_OPTIONS)

    # ------------------------------------------------------------ config
    @property
    def large(self):
        if self._large is None:
            self._large = self._pick_large()
        return self._large

    def _pick_large(self):
        dev = self.dev
        if dev.kind != "gpu":
            return CPU_DEFAULT
        key = (f"{dev.name}|{dev.cl_device.driver_version}|{dev.cl_device.version}"
               f"|{'tf32' if self.tf32 else 'fp32'}")
        path = _cache_path()
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
        hit = table.get(key)
        if hit is not None:
            try:
                self.tuning = hit
                return GemmConfig(*hit["best"])
            except (KeyError, TypeError):
                pass
        if not self.autotune:
            return LARGE_DEFAULT
        best, results = self._tune()
        self.tuning = {"best": list(best), "gflops": results, "n": 2048}
        table[key] = self.tuning
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(table, indent=1))
            tmp.replace(path)
        except OSError:
            pass
        return best

    def _tune(self, n=2048, reps=5):
        """Time each candidate on an n x n x n product; returns (best, table)."""
        dev = self.dev
        rng = np.random.default_rng(0)
        a = dev.asarray(rng.standard_normal((n, n), dtype=np.float32))
        b = dev.asarray(rng.standard_normal((n, n), dtype=np.float32))
        c = dev.empty((n, n))
        results = {}
        cl_dev = dev.cl_device
        for cfg in CANDIDATES:
            if not cfg.valid_for(cl_dev.max_work_group_size, cl_dev.local_mem_size):
                continue
            try:
                self.run(a, b, c, False, False, 1.0, 0.0, cfg=cfg)   # build + warm up
                dev.synchronize()
                times = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    self.run(a, b, c, False, False, 1.0, 0.0, cfg=cfg)
                    dev.synchronize()
                    times.append(time.perf_counter() - t0)
            except cl.Error:
                continue
            results["x".join(map(str, cfg))] = 2.0 * n ** 3 / np.median(times) / 1e9
        if not results:
            return LARGE_DEFAULT, results
        best = max(results, key=results.get)
        return GemmConfig(*map(int, best.split("x"))), results

    def _choose(self, m, n, groups_z):
        """Large tiles unless they would leave compute units idle."""
        big = self.large
        blocks = -(-m // big.bm) * -(-n // big.bn) * groups_z
        return big if blocks >= self._cus else self._small

    # --------------------------------------------------------------- run
    def run(self, a, b, c, trans_a, trans_b, alpha, beta, cfg=None):
        """``c = alpha * op(a) @ op(b) + beta * c`` with the shapes and the
        batch rules of :meth:`Device.gemm`; ``c`` must be allocated.

        Everything but the buffers and alpha/beta is planned once per
        combination of shapes, offsets, transposes and configuration."""
        key = (a.shape, b.shape, c.shape, a.offset, b.offset, c.offset,
               bool(trans_a), bool(trans_b), cfg)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) > 4096:
                self._plans.clear()
            plan = self._plans[key] = self._plan(a, b, c, bool(trans_a), bool(trans_b), cfg)
        if plan is None or plan is _EMPTY:
            return c
        launch = self.dev.launch
        knl, gsize, lsize, mnk, pa, pb, pc, tail, split = plan
        if split is None:
            launch(knl, gsize, lsize, *mnk, a.base_data, *pa, b.base_data, *pb,
                   c.base_data, *pc, alpha, beta, *tail)
            return c
        part_shape, knl2, gsize2, lsize2, head2, pc2 = split
        part = self.dev.empty(part_shape)
        launch(knl, gsize, lsize, *mnk, a.base_data, *pa, b.base_data, *pb,
               part.base_data, *pc, 1.0, 0.0, *tail)
        launch(knl2, gsize2, lsize2, *head2, part.base_data, c.base_data, *pc2, alpha, beta)
        return c

    def _plan(self, a, b, c, ta, tb, cfg):
        dev = self.dev
        m = a.shape[-1] if ta else a.shape[-2]
        k = a.shape[-2] if ta else a.shape[-1]
        n = b.shape[-2] if tb else b.shape[-1]
        nb = max(a.shape[0] if a.ndim == 3 else 1, b.shape[0] if b.ndim == 3 else 1)
        summed = c.ndim == 2 and (a.ndim == 3 or b.ndim == 3)
        if m == 0 or n == 0:
            return _EMPTY
        lda, ldb, ldc = a.shape[-1], b.shape[-1], c.shape[-1]
        stride_a = a.shape[-1] * a.shape[-2] if a.ndim == 3 else 0
        stride_b = b.shape[-1] * b.shape[-2] if b.ndim == 3 else 0
        off_a, off_b, off_c = _elem_offset(a), _elem_offset(b), _elem_offset(c)
        vec_a = int(lda % 4 == 0 and off_a % 4 == 0 and stride_a % 4 == 0)
        vec_b = int(ldb % 4 == 0 and off_b % 4 == 0 and stride_b % 4 == 0)
        pa = (off_a, lda, int(ta), stride_a, vec_a)
        pb = (off_b, ldb, int(tb), stride_b, vec_b)
        split = None
        if summed:
            cfg = cfg or self._choose(m, n, 1)
            blocks = -(-m // cfg.bm) * -(-n // cfg.bn)
            splits = 1
            if nb > 1 and blocks < 2 * self._cus:
                splits = min(nb, -(-2 * self._cus // blocks))
            nsum = -(-nb // splits)
            groups_z = -(-nb // nsum)
            if groups_z == 1:
                pc = (off_c, ldc, 0, _vec(ldc, off_c, 0))
            else:
                pc = (0, n, m * n, _vec(n, 0, m * n))
                knl2 = dev.kernel("gemm.cl", "gemm_sum_partials", PARTIALS_ARGS, cfg.options)
                split = ((groups_z, m, n), knl2, (dev.round_up(m * n),), (dev.wg,),
                         (m, n, groups_z), (off_c, ldc))
        else:
            cfg = cfg or self._choose(m, n, nb)
            nsum, groups_z = 1, nb
            stride_c = m * n if c.ndim == 3 else 0
            pc = (off_c, ldc, stride_c, _vec(ldc, off_c, stride_c))
        lx, ly, _ = cfg.local_size
        gsize = (-(-n // cfg.bn) * lx, -(-m // cfg.bm) * ly, groups_z)
        return (self._main_kernel(cfg), gsize, (lx, ly, 1), (m, n, k), pa, pb, pc,
                (nsum, nb), split)

    def run_teaching(self, version, a, b, c, trans_a, trans_b, alpha, beta):
        """One of the four teaching kernels (2-D operands only)."""
        ta, tb = bool(trans_a), bool(trans_b)
        m = a.shape[1] if ta else a.shape[0]
        k = a.shape[0] if ta else a.shape[1]
        n = b.shape[0] if tb else b.shape[1]
        ts = TEACH_TS
        if version == 1:
            gsize = lsize = (256,)
        elif version == 2:
            gsize = lsize = (ts, ts)
        else:
            gsize, lsize = (-(-n // ts) * ts, -(-m // ts) * ts), (ts, ts)
        self.dev.launch(self._teach_kernel(version), gsize, lsize,
                         m, n, k,
                         a.base_data, _elem_offset(a), a.shape[1], int(ta),
                         b.base_data, _elem_offset(b), b.shape[1], int(tb),
                         c.base_data, _elem_offset(c), c.shape[1],
                         alpha, beta)
        return c
