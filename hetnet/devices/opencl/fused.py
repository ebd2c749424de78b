"""Fused segments on an OpenCL device: a chain of conv / pool / dense units
run as a few kernels (``clkernels/fused.cl``) instead of several per layer.

A training step is three launches, whatever the depth of the chain:

``fused_train``
    One work-group per tile of ``T`` samples: gathers the tile's rows from
    the resident data set (through the epoch's order), runs every unit's
    forward with the activations in local memory, the softmax cross-entropy
    (loss and correct count added on the device), and every unit's backward,
    writing to a global *stash* only what the weight gradients need (each
    parameter unit's input and its gradient at the pre-activation, pool
    arg-maxes).
``fused_wgrad``
    Every parameter's gradient, summed over the batch: the work-groups are
    split between the units (and, within one, between tiles of the weight
    and chunks of the batch) in proportion to their work; partial sums are
    added into the flat gradient buffer atomically (``red.global.add.f32``
    on NVIDIA, a compare-and-swap loop elsewhere).
``fused_sgd`` / ``fused_adam``
    optim.cl's update (its formulas, in fused.cl) over the flat parameter
    buffer, clearing the gradient for the next step's additions.

A unit is described by a plain dict (see :func:`conv_unit`,
:func:`pool_unit`, :func:`dense_unit`); the caller (``hetnet.runtime.fused``)
derives them from a model's layers.  Sizes become ``-D`` build options; the
chain itself is passed as the ``FORWARD`` / ``BACKWARD`` / ``WGRAD`` macro
sequences of fused.cl's templates, so the program is generated, never
written per network.  :class:`FusionUnsupported` says why a chain cannot be
fused (the caller falls back to layer-by-layer).

A chain with BatchNorms in training (:func:`bn_unit`) is built by
:class:`SegmentedProgram` as one :class:`FusedProgram` per segment between
them, with device reductions for the batch statistics and their gradient
sums in between.
"""

import math

import numpy as np

from .launch import _CODE_OF, _F32, _I32, OpenCLLaunchError, _clenqueue
from .platform import status_name

__all__ = ["FusionUnsupported", "FusedProgram", "SegmentedProgram", "bn_unit", "conv_unit",
           "pool_unit", "dense_unit"]

#: the work-group size of every fused kernel (the dense weight-gradient
#: tiles are 16 x 16 work-items)
WG = 256
#: largest tile of samples per work-group (private arrays of T floats)
MAX_TILE = 8
#: share of the device's local memory one training tile should use at most
#: when the tile is chosen for it
OCCUPANCY_SHARE = 0.6
#: local memory kept free for the kernel's own small arrays (bytes)
LOCAL_RESERVE = 512
#: largest input patch (and kernel) a convolution's forward holds in
#: registers (floats); larger ones read local memory per multiply-add
PATCH_MAX = 64
#: fewest inputs one work-item sums for a dense output it shares with others
DENSE_SLICE = 16
#: the weight-gradient work one work-item should do, in multiply-adds
WGRAD_ITEM_WORK = 4096

_ACTS = {"identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3}


def _patch(u):
    """A convolution unit's register patch, ``(input patch floats, kernel
    floats)``, when its forward reads its input through one (small kernels
    and pool windows: the patch and the filter fit the registers), else None."""
    rh = (u["QH"] - 1) * u["SH"] + u["KH"]
    rw = (u["QW"] - 1) * u["SW"] + u["KW"]
    if rh * rw > PATCH_MAX or u["KH"] * u["KW"] > PATCH_MAX:
        return None
    return rh * rw, u["KH"] * u["KW"]


class FusionUnsupported(ValueError):
    """A chain (or one of its layers) cannot run as a fused segment; the
    message says why."""


def _act(name):
    try:
        return _ACTS[name]
    except KeyError:
        raise FusionUnsupported(f"activation {name!r} has no fused template "
                                f"(supported: {sorted(_ACTS)})") from None


def conv_unit(C, H, W, F, kernel, stride, pad, activation, bias, pool=None):
    """A Conv2D (+ activation, + an optional max pool right after it).

    ``pool`` is ``((qh, qw), (qsh, qsw))`` or None.  Shapes as
    :class:`hetnet.layers.Conv2D`: input ``(C, H, W)``, output
    ``(F, HO, WO)`` after the pool."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    ch, cw = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    (qh, qw), (qsh, qsw) = pool if pool is not None else ((1, 1), (1, 1))
    ho, wo = (ch - qh) // qsh + 1, (cw - qw) // qsw + 1
    return {"kind": "conv", "C": C, "H": H, "W": W, "F": F, "KH": kh, "KW": kw, "SH": sh,
            "SW": sw, "PH": ph, "PW": pw, "CH": ch, "CW": cw, "QH": qh, "QW": qw,
            "QSH": qsh, "QSW": qsw, "HO": ho, "WO": wo, "ACT": _act(activation),
            "bias": bool(bias), "pooled": pool is not None,
            "in": C * H * W, "out": F * ho * wo,
            "params": [(F, C, kh, kw)] + ([(F,)] if bias else [])}


def pool_unit(C, H, W, size, stride, average=False):
    """A max pool with no convolution before it, or (``average``) an
    average pool (no padding: every window's divisor is its size):
    ``(C, H, W) -> (C, HO, WO)``."""
    (qh, qw), (qsh, qsw) = size, stride
    ho, wo = (H - qh) // qsh + 1, (W - qw) // qsw + 1
    return {"kind": "pool", "C": C, "H": H, "W": W, "QH": qh, "QW": qw, "QSH": qsh,
            "QSW": qsw, "HO": ho, "WO": wo, "in": C * H * W, "out": C * ho * wo,
            "ACT": 0, "AVG": int(bool(average)), "params": []}


def dense_unit(I, O, activation, bias):
    """A Dense (+ activation): ``(I,) -> (O,)``, W ``(I, O)``."""
    return {"kind": "dense", "I": I, "O": O, "ACT": _act(activation), "bias": bool(bias),
            "in": I, "out": O, "params": [(I, O)] + ([(O,)] if bias else [])}


def bn_unit(C, size, activation, momentum, eps):
    """A BatchNorm in training over ``C`` channels of a ``size``-float
    sample (``size / C`` values a channel), its activation after it: where
    :class:`SegmentedProgram` ends one segment and starts the next."""
    if size % C:
        raise FusionUnsupported(f"a BatchNorm of {C} channels over {size} values a sample")
    return {"kind": "bn", "C": C, "S": size // C, "ACT": _act(activation),
            "momentum": float(momentum), "eps": float(eps), "in": size, "out": size,
            "params": [(C,), (C,)]}


def _macro(name, *args):
    return f"{name}({','.join(str(a) for a in args)})"


class FusedProgram:
    """The fused kernels of one chain on one OpenCL device, for batches of up
    to ``nmax`` samples.

    Parameters
    ----------
    device : OpenCLDevice
    units : list of dict
        The chain, from :func:`conv_unit`, :func:`pool_unit`, :func:`dense_unit`.
    offsets : list of int
        Where each parameter (units' ``params`` in order) starts in the flat
        parameter buffer.
    input_size, n_classes : int
        Floats of one input sample; logits per sample.
    nmax : int
        The largest batch (the stash holds this many samples).
    tile : int, optional
        Samples per work-group of ``fused_train``; default from local memory
        and ``nmax``.
    train_wg : {256, 512, 1024}, optional
        Work-group size of ``fused_train`` / ``fused_eval``; default 1024
        (where the device allows it) when the batch makes fewer tiles than
        twice the device's compute units and a layer's per-sample loops are
        long enough to use it, else 256.
    eval_tile : int, optional
        Samples per work-group of ``fused_eval``; default from local memory
        and ``nmax`` (about one tile per two compute units).
    eval_wg : {256, 512, 1024}, optional
        Work-group size of ``fused_eval``; default chosen as ``train_wg``'s.
    inference_only : bool
        Build ``fused_eval`` alone (no stash, no training kernels): a chain
        whose parameters are not the model's (BatchNorm folded into them)
        is never trained.

    Attributes
    ----------
    tile, eval_tile : int
        Samples per work-group in training and in inference (which keeps no
        gradient buffer, so more samples fit).
    train_wg, eval_wg : int
    local_bytes : int
        Local memory of one ``fused_train`` work-group.
    stash_floats : int
    wgrad_groups : int
    plan : list of str
        One line per unit: its buffers and stash regions (for ``explain``).

    Raises
    ------
    FusionUnsupported
        The chain does not fit (local memory, offsets past 2**31) or does not
        end in ``n_classes`` logits.
    """

    def __init__(self, device, units, offsets, input_size, n_classes, nmax, tile=None,
                 train_wg=None, inference_only=False, eval_tile=None, eval_wg=None,
                 segment=None):
        self.device = dev = device
        self.inference_only = inference_only = bool(inference_only)
        self.units = units
        # one segment of a chain with BatchNorms in training (SegmentedProgram):
        # its stash regions from seg["base"], the BatchNorm before it
        # (seg["bn_in"]) applied on load, the one after it (seg["bn_out"])
        # ending it, and the weight gradients of seg["wgrad"] (the last segment:
        # every unit of the chain; the others: none)
        self.segment = seg = segment
        bn_in = seg["bn_in"] if seg else None
        bn_out = seg["bn_out"] if seg else None
        self.nmax = nmax = int(nmax)
        self.n_classes = int(n_classes)
        self.input_size = int(input_size)
        if not units:
            raise FusionUnsupported("the chain has no layers to fuse")
        if bn_out is None and units[-1]["out"] != n_classes:
            raise FusionUnsupported(f"the chain ends in {units[-1]['out']} values per sample, "
                                    f"not {n_classes} logits")
        if units[0]["in"] != input_size:
            raise FusionUnsupported(f"the first layer takes {units[0]['in']} values per "
                                    f"sample, the input has {input_size}")
        if dev.cl_device.max_work_group_size < WG:
            raise FusionUnsupported(f"the device's work-groups hold at most "
                                    f"{dev.cl_device.max_work_group_size} work-items; the "
                                    f"fused kernels need {WG}")
        k = 0
        for u in units:
            u["offsets"] = offsets[k:k + len(u["params"])]
            k += len(u["params"])
        sizes = [units[0]["in"]] + [u["out"] for u in units]     # tensor i feeds unit i
        buf_a = max([s for i, s in enumerate(sizes) if i % 2 == 0] or [1])
        buf_b = max([s for i, s in enumerate(sizes) if i % 2 == 1] or [1])
        first_param = next((i for i, u in enumerate(units) if u["params"]), len(units))
        # after a BatchNorm every unit passes its gradient back to it
        need_dx = [i > first_param or bn_in is not None for i in range(len(units))]
        buf_c = max([u["F"] * u["CH"] * u["CW"] for u, nd in zip(units, need_dx)
                     if u["kind"] == "conv" and u["pooled"] and nd] or [1])
        per_sample = 4 * (buf_a + buf_b + (1 if inference_only else buf_c)) + 8
        local = int(dev.cl_device.local_mem_size)
        fit = (local - LOCAL_RESERVE) // per_sample
        if fit < 1:
            worst = max(range(len(units)), key=lambda i: sizes[i] + sizes[i + 1])
            raise FusionUnsupported(
                f"one sample's activations need {per_sample / 1024:.1f} KiB of local memory "
                f"(largest at layer unit {worst}: {sizes[worst]} -> {sizes[worst + 1]} "
                f"values), the device has {local / 1024:.1f} KiB")
        cus = max(1, int(dev.cl_device.max_compute_units))
        if tile is None:
            # about one tile per compute unit, but a tile's local memory kept
            # to OCCUPANCY_SHARE of the device's so that several work-groups
            # share a compute unit: the tile and work-group sweeps in
            # docs/performance.md ("Fused step") found that faster than one
            # sample a tile with the compute units full
            occupancy = max(1, int(OCCUPANCY_SHARE * local) // per_sample)
            tile = min(fit, MAX_TILE // 2, occupancy, max(1, -(-nmax // cus)))
        tile = int(tile)
        if not 1 <= tile <= min(fit, MAX_TILE):
            raise FusionUnsupported(f"tile {tile} is outside 1..{min(fit, MAX_TILE)} (local "
                                    f"memory holds {fit} samples)")
        self.tile = tile
        self.local_bytes = tile * per_sample
        eval_fit = (local - LOCAL_RESERVE) // (4 * (buf_a + buf_b + 1) + 8)
        if eval_tile is None:
            eval_tile = min(eval_fit, MAX_TILE, max(1, -(-nmax // (2 * cus))))
        eval_tile = int(eval_tile)
        if not 1 <= eval_tile <= min(eval_fit, MAX_TILE):
            raise FusionUnsupported(f"eval_tile {eval_tile} is outside "
                                    f"1..{min(eval_fit, MAX_TILE)} (local memory holds "
                                    f"{eval_fit} samples)")
        self.eval_tile = eval_tile
        # the per-sample loops' longest extent: wider groups shorten the
        # chain of passes one tile's work-group runs when tiles are few
        extent = max([u["out"] for u in units] + [u["in"] for u, nd in zip(units, need_dx) if nd])
        max_wg = int(dev.cl_device.max_work_group_size)

        def group_size(groups, few):
            size = WG
            while size < 1024 and size * 2 <= max_wg and size < extent // 2 \
                    and groups < few:
                size *= 2
            return size
        self.train_wg = int(train_wg) if train_wg else group_size(-(-nmax // tile), 2 * cus)
        # inference widens its groups only when the tiles do not fill the
        # compute units: LeNet-5 at batch 1000 on the H200 (250 tiles of 4,
        # 132 units) ran 12.3M images/s at 256 work-items, 10.6M at 1024
        # (benchmarks/bench_fused_gpu.py --eval-tiles/--eval-wgs)
        self.eval_wg = int(eval_wg) if eval_wg else group_size(-(-nmax // self.eval_tile), cus)
        for name, size, given in (("train_wg", self.train_wg, train_wg),
                                  ("eval_wg", self.eval_wg, eval_wg)):
            if size not in (256, 512, 1024) or size > max_wg:
                raise FusionUnsupported(f"{name} must be 256, 512 or 1024 and at most the "
                                        f"device's {max_wg}, got {given}")

        # ---- the stash: what the backward pass and the weight gradients read
        regions, self._stash_end = [], seg["base"] if seg else 0

        def region(size):
            base = self._stash_end
            self._stash_end += nmax * size
            regions.append(size)
            return base

        # activation producing tensor i (tensor 0 after a BatchNorm: its own)
        acts = [bn_in["ACT"] if bn_in else 0] + [u["ACT"] for u in units]
        tstash = []
        for i, s in enumerate(sizes):
            consumer = units[i] if i < len(units) else None
            needed = (consumer is not None and consumer["params"]) or acts[i] != 0
            tstash.append(region(s) if needed and i <= len(units) else -1)
        for i, u in enumerate(units):
            # an average pool's backward needs no record of the forward
            u["ast"] = region(u["out"]) if ((u["kind"] == "pool" and not u["AVG"])
                                            or u.get("pooled")) else -1
            u["est"] = region(u["out"]) if u["params"] else -1
        self.stash_floats = 1 if inference_only else max(self._stash_end, 1)
        if seg and bn_in is not None and bn_in["ACT"] != 0:
            assert tstash[0] >= 0     # bn_in_grad reads the activation's output
        if self.stash_floats >= 2 ** 31:
            raise FusionUnsupported(f"the stash for batch {nmax} needs {self.stash_floats} "
                                    "floats, past 32-bit offsets; use a smaller batch")

        # ---- the chain as macro sequences
        bufs = ["bufA", "bufB"]
        fwd, bwd, self.plan = [], [], []
        for i, u in enumerate(units):
            src, dst = bufs[i % 2], bufs[(i + 1) % 2]
            xst, ost = tstash[i], tstash[i + 1]
            woff, boff = (u["offsets"] + [-1, -1])[:2] if u["params"] else (-1, -1)
            if u["kind"] == "conv":
                geo = [u[key] for key in ("C", "H", "W", "F", "KH", "KW", "SH", "SW", "PH",
                                          "PW", "CH", "CW", "QH", "QW", "QSH", "QSW", "HO",
                                          "WO", "ACT")]
                boff = u["offsets"][1] if u["bias"] else -1
                fwd.append(_macro("FWD_CONV", src, dst, *geo, woff, boff, ost, u["ast"],
                                  int(_patch(u) is not None)))
                bwd.append(_macro("BWD_CONV", dst, src, *geo, woff, ost, u["ast"], u["est"],
                                  int(need_dx[i])))
            elif u["kind"] == "pool":
                geo = [u[key] for key in ("C", "H", "W", "QH", "QW", "QSH", "QSW", "HO", "WO")]
                fwd.append(_macro("FWD_POOL", src, dst, *geo, u["AVG"], ost, u["ast"]))
                if need_dx[i]:
                    bwd.append(_macro("BWD_POOL", dst, src, *geo, u["ast"]))
            else:
                boff = u["offsets"][1] if u["bias"] else -1
                # work-items that may share an output: room for their partial
                # sums past the tile's outputs in dst, and a slice of at
                # least DENSE_SLICE inputs each
                room = (buf_a, buf_b)[(i + 1) % 2] // u["O"] - 1
                ksmax = max(1, min(room, u["I"] // DENSE_SLICE))
                fwd.append(_macro("FWD_DENSE", src, dst, u["I"], u["O"], u["ACT"], woff, boff,
                                  ost, ksmax))
                if u["params"] or need_dx[i]:
                    bwd.append(_macro("BWD_DENSE", dst, src, u["I"], u["O"], u["ACT"], woff,
                                      ost, u["est"], int(need_dx[i])))
            u["xst"] = xst
            kind = "avgpool" if u.get("AVG") else u["kind"]
            self.plan.append(f"{kind} {u['in']} -> {u['out']} values ({src} -> {dst})"
                             + (" (BatchNorm folded in)" if u.get("bn") is not None else ""))
        logits = bufs[len(units) % 2]

        # ---- weight gradients: work-groups in proportion to each unit's work
        work = []
        for u in (seg["wgrad"] if seg else units):
            if not u["params"] or inference_only or u["kind"] == "bn":
                continue
            if u["kind"] == "dense":
                tiles = -(-(u["I"] + u["bias"]) // 64) * -(-u["O"] // 64)
                item = 16                         # multiply-adds per work-item per sample
            else:
                # a work-item per (weight row, slice of the windows)
                rows = u["F"] * u["C"] * u["KH"]
                u["QS"] = max(1, WG // rows)
                tiles = -(-(rows + u["bias"] * u["F"]) * u["QS"] // WG)
                item = -(-u["HO"] * u["WO"] // u["QS"]) * u["KW"]
            work.append((u, tiles, item))
        target = max(8, 4 * cus)
        total = sum(t * item for _, t, item in work) or 1
        wg_macros, g0 = [], 0
        for u, tiles, item in work:
            splits = max(1, round(target * tiles * item / total / tiles),
                         -(-nmax * item // WGRAD_ITEM_WORK))
            splits = min(splits, nmax)
            if u["kind"] == "dense":
                chunk = -(-(-(-nmax // splits)) // 16) * 16
                splits = -(-nmax // chunk)
                ng = tiles * splits
                wg_macros.append(_macro("WG_DENSE", g0, ng, u["I"], u["O"], int(u["bias"]),
                                        -(-u["O"] // 64), splits, chunk, u["xst"], u["est"],
                                        u["offsets"][0],
                                        u["offsets"][1] if u["bias"] else -1))
            else:
                chunk = -(-nmax // splits)
                splits = -(-nmax // chunk)
                ng = tiles * splits
                geo = [u[key] for key in ("C", "H", "W", "F", "KH", "KW", "SH", "SW", "PH",
                                          "PW", "CW", "HO", "WO")]
                wg_macros.append(_macro("WG_CONV", g0, ng, *geo, int(u["bias"]), u["QS"],
                                        splits, chunk,
                                        u["xst"], u["ast"], u["est"], u["offsets"][0],
                                        u["offsets"][1] if u["bias"] else -1))
            note = f", weight gradient {ng} groups ({splits} splits)"
            if seg:
                u["wgrad_note"] = note
            else:
                self.plan[units.index(u)] += note
            g0 += ng
        self.wgrad_groups = g0

        convs = [u for u in units if u["kind"] == "conv"]
        wgrad_convs = convs + [u for u, _, _ in work if u["kind"] == "conv"]
        common = (f"-DWG={WG}", f"-DBUF_A={buf_a}", f"-DBUF_B={buf_b}",
                  f"-DIN_SIZE={self.input_size}", f"-DNCLS={self.n_classes}",
                  f"-DLOGITS={logits}", f"-DIN_STASH={tstash[0]}",
                  f"-DQMAX={max([u['QH'] * u['QW'] for u in convs] or [1])}",
                  # the weight gradients' accumulators: every conv they cover
                  f"-DKWMAX={max([u['KW'] for u in wgrad_convs] or [1])}",
                  f"-DRHWMAX={max([p[0] for p in map(_patch, convs) if p] or [1])}",
                  f"-DKKMAX={max([p[1] for p in map(_patch, convs) if p] or [1])}",
                  "-DFORWARD=" + "".join(fwd))
        self._train_opts = common + (f"-DT={tile}", f"-DTWG={self.train_wg}",
                                     f"-DBUF_C={buf_c}", "-DTRAINING=1",
                                     "-DBACKWARD=" + "".join(reversed(bwd)),
                                     "-DWGRAD=" + "".join(wg_macros))
        self._eval_opts = common + (f"-DT={self.eval_tile}", f"-DTWG={self.eval_wg}",
                                    "-DBUF_C=1", "-DTRAINING=0")
        if bn_in is not None:
            self._train_opts += (
                "-DBN_IN=1", f"-DBN_IN_C={bn_in['C']}", f"-DBN_IN_S={bn_in['S']}",
                f"-DBN_IN_ACT={bn_in['ACT']}", f"-DBN_IN_G={bn_in['offsets'][0]}",
                f"-DBN_IN_B={bn_in['offsets'][1]}", f"-DBN_IN_STAT={bn_in['stat']}",
                f"-DZIN={bn_in['z']}", f"-DDYIN={bn_in['dy']}")
        if bn_out is not None:
            self._train_opts += (
                "-DSEG_OUT=1", f"-DOUT_SIZE={units[-1]['out']}", f"-DBN_OUT_C={bn_out['C']}",
                f"-DBN_OUT_S={bn_out['S']}", f"-DBN_OUT_G={bn_out['offsets'][0]}",
                f"-DBN_OUT_B={bn_out['offsets'][1]}", f"-DBN_OUT_STAT={bn_out['stat']}",
                f"-DZOUT={bn_out['z']}", f"-DDYOUT={bn_out['dy']}",
                f"-DBN_OUT_RUN={bn_out['run']}", f"-DBN_OUT_SPLIT={bn_out['split']}",
                f"-DBN_OUT_PART={bn_out['part']}", f"-DBN_OUT_CNT={bn_out['cnt']}")
        self.atomics = "cmpxchg"
        if "nvidia" in dev.cl_device.platform.name.lower():
            try:
                self._build(True)
                self.atomics = "ptx red.global.add.f32"
            except Exception as exc:   # noqa: BLE001 - a driver without inline PTX
                self.atomics = f"cmpxchg (inline PTX failed to build: {str(exc)[:200]})"
        if self.atomics.startswith("cmpxchg"):
            self._build(False)
        # a segment's stash is its SegmentedProgram's, made once for all
        self.stash = None if seg else dev.empty((self.stash_floats,))
        self._bound = {}

    def _build(self, ptx):
        dev, files = self.device, ("hash.cl", "fused.cl")
        red = (f"-DUSE_PTX_RED={int(ptx)}",)
        b, i, f = None, _I32, _F32
        train, evl = self._train_opts + red, self._eval_opts + red
        if self.segment:
            self.k_eval = None
            self.k_fwd = self.k_bwd = self.k_stats = self.k_reduce = None
            if self.segment["bn_out"] is not None:
                # a segment before a BatchNorm: no loss, its own backward
                self.k_fwd = dev.kernel(files, "fused_fwd", [i, i, i, i, i, b, b, b, b, b, b],
                                        train)
                self.k_bwd = dev.kernel(files, "fused_bwd", [i, b, b, b], train)
                self.k_stats = dev.kernel(files, "fused_bn_stats", [i, b, b, f, f, b], train)
                self.k_reduce = dev.kernel(files, "fused_bn_reduce", [i, b, b, b], train)
                self.k_train = self.k_wgrad = self.k_sgd = self.k_adam = self.k_rmsprop = None
                return
        if not self.segment:     # a segment's chain trains; inference folds its BatchNorms
            self.k_eval = dev.kernel(files, "fused_eval",
                                     [i, i, i, i, i, b, b, b, b, b, b, b, i], evl)
        if self.inference_only:
            self.k_train = self.k_wgrad = self.k_sgd = self.k_adam = self.k_rmsprop = None
            return
        self.k_train = dev.kernel(files, "fused_train", [i, i, i, i, i, b, b, b, b, b, b],
                                   train)
        self.k_wgrad = dev.kernel(files, "fused_wgrad", [i, b, b], train)
        self.k_sgd = dev.kernel(files, "fused_sgd", [f, f, i, b, b, b, f, i], train)
        self.k_adam = dev.kernel(files, "fused_adam", [f, f, f, f, i, b, b, b, b, f, f, f],
                                 train)
        self.k_rmsprop = dev.kernel(files, "fused_rmsprop", [f, f, i, b, b, b, b, f, f, f],
                                    train)

    # ------------------------------------------------------------ launches
    def bind(self, knl, *args):
        """Set every argument of ``knl`` (no launch); :meth:`launch` then
        re-sets only the leading per-step ones."""
        knl.set_args(*args)
        self._bound[knl.int_ptr] = True

    def launch(self, knl, groups, head=(), full=None, wg=WG):
        """Enqueue ``knl`` on ``groups`` work-groups of ``wg`` work-items.

        ``full``: every argument, set for this launch.  Otherwise only
        ``head``, the leading (per-step) arguments, are set again and the
        rest keep what :meth:`bind` set (one C call with
        :mod:`hetnet.devices.opencl._clenqueue`)."""
        dev = self.device
        gsize, lsize = (max(groups, 1) * wg,), (wg,)
        if full is not None:
            return dev.launch(knl, gsize, lsize, *full)
        if not self._bound.get(knl.int_ptr):
            raise RuntimeError(f"{knl.function_name}: bind() its arguments first")
        if dev.c_enqueue:
            status = _clenqueue.launch(dev._queue_ptr, knl.int_ptr,
                                       knl.hetnet_codes[:len(head)], tuple(head), gsize, lsize)
            if status:
                raise OpenCLLaunchError(f"{knl.function_name}: enqueue failed: "
                                        f"{status_name(status)} ({status})")
            return
        import pyopencl as cl
        for j, (a, code) in enumerate(zip(head, knl.hetnet_codes)):
            knl.set_arg(j, np.int32(a) if code == _CODE_OF[_I32] else np.float32(a))
        return cl.enqueue_nd_range_kernel(dev.queue, knl, gsize, lsize)

    def train_groups(self, n):
        """Work-groups of ``fused_train`` for a batch of ``n``."""
        return -(-int(n) // self.tile)

    def eval_groups(self, n):
        """Work-groups of ``fused_eval`` for a batch of ``n``."""
        return -(-int(n) // self.eval_tile)


#: About how many values of a channel one work-group of ``fused_bn_stats`` and
#: ``fused_bn_reduce`` reduces (16 a work-item): a channel of a wide batch is
#: spread over several work-groups, at most :data:`BN_MAX_SPLIT`.
BN_GROUP_VALUES = 16 * WG
BN_MAX_SPLIT = 128


def bn_split(values):
    """Work-groups a channel of ``values`` (batch x spatial) is reduced over."""
    return int(min(BN_MAX_SPLIT, max(1, -(-int(values) // BN_GROUP_VALUES))))


class SegmentedProgram:
    """The fused training kernels of a chain with BatchNorms in training:
    one :class:`FusedProgram` per segment, the chain split at each
    BatchNorm unit (:func:`bn_unit`), all sharing one stash.

    A step on a chain of K segments launches, in order: for each segment
    but the last its ``fused_fwd`` (output z to the stash) and its
    BatchNorm's ``fused_bn_stats`` (batch mean and invstd, the running
    statistics moved); the last segment's ``fused_train`` (forward, loss,
    backward, the gradient at its BatchNorm's output); back down, each
    BatchNorm's ``fused_bn_reduce`` (dbeta, dgamma into the gradient
    buffer) and the segment before it's ``fused_bwd``; then one
    ``fused_wgrad`` for every unit's weights and the update: ``4 (K - 1) +
    3`` kernels.  The BatchNorm's statistics are the whole batch's, so a
    segment's tiles are independent again.

    Parameters
    ----------
    As :class:`FusedProgram` (training only), ``units`` holding BatchNorm
    units; ``offsets`` cover their gamma and beta too.  The same ``tile``
    and ``train_wg`` (when given) serve every segment.

    Attributes
    ----------
    segments : list of FusedProgram
    bns : list of dict
        The BatchNorm units, with their stash regions (``z``, ``dy``,
        ``stat``) and ``run``, where their running mean (then variance)
        lie in the running-statistics buffer.
    running_floats : int
    kernels_per_step : int
    stash : device array
    k_train, k_wgrad, k_sgd, k_adam, k_rmsprop
        The last segment's (the update covers the whole flat buffer).
    """

    inference_only = False

    def __init__(self, device, units, offsets, input_size, n_classes, nmax, tile=None,
                 train_wg=None):
        self.device = dev = device
        self.units, self.nmax, self.n_classes = units, int(nmax), int(n_classes)
        k = 0
        for u in units:
            u["offsets"] = offsets[k:k + len(u["params"])]
            k += len(u["params"])
        groups, self.bns = [[]], []
        for u in units:
            if u["kind"] == "bn":
                if not groups[-1]:
                    raise FusionUnsupported("a BatchNorm in training needs a Conv2D, Dense "
                                            "or pool before it in its segment")
                self.bns.append(u)
                groups.append([])
            else:
                groups[-1].append(u)
        if not self.bns:
            raise FusionUnsupported("a segmented chain needs a BatchNorm")
        if not groups[-1]:
            raise FusionUnsupported("a BatchNorm in training ends the chain; the fused step "
                                    "needs a Conv2D, Dense or pool after the last one")
        # the regions between segments first: z and dy of each BatchNorm (n
        # samples), its mean and invstd (2 C)
        end = 0
        for j, (bn, before) in enumerate(zip(self.bns, groups)):
            if before[-1]["out"] != bn["in"]:
                raise FusionUnsupported(f"BatchNorm unit {j} takes {bn['in']} values a "
                                        f"sample, the layer before it gives {before[-1]['out']}")
            bn["z"], bn["dy"] = end, end + nmax * bn["in"]
            bn["stat"] = end + 2 * nmax * bn["in"]
            bn["run"] = 2 * sum(b["C"] for b in self.bns[:j])
            end += 2 * nmax * bn["in"] + 2 * bn["C"]
            # its statistics' and gradients' work-groups: each channel's
            # n x S values in parts of about BN_GROUP_VALUES, the partials
            # (3 floats a part) after its mean and invstd
            bn["split"] = bn_split(nmax * bn["S"])
            bn["part"], bn["cnt"] = end, j
            end += 3 * bn["C"] * bn["split"] if bn["split"] > 1 else 0
        self.running_floats = 2 * sum(b["C"] for b in self.bns)
        self.segments, self._bound = [], {}
        for j, seg_units in enumerate(groups):
            last = j == len(groups) - 1
            seg = {"base": end, "bn_in": self.bns[j - 1] if j else None,
                   "bn_out": None if last else self.bns[j],
                   "wgrad": [u for u in units if u["kind"] != "bn"] if last else []}
            p = FusedProgram(dev, seg_units, [o for u in seg_units for o in u["offsets"]],
                             input_size if j == 0 else self.bns[j - 1]["out"], n_classes,
                             nmax, tile, train_wg, segment=seg)
            p._bound = self._bound          # one record of bound kernels
            end = p._stash_end
            self.segments.append(p)
        self.stash_floats = max(end, 1)
        if self.stash_floats >= 2 ** 31:
            raise FusionUnsupported(f"the stash for batch {nmax} needs {self.stash_floats} "
                                    "floats, past 32-bit offsets; use a smaller batch")
        last = self.segments[-1]
        self.k_train, self.k_wgrad = last.k_train, last.k_wgrad
        self.k_sgd, self.k_adam, self.k_rmsprop = last.k_sgd, last.k_adam, last.k_rmsprop
        self.wgrad_groups, self.atomics = last.wgrad_groups, last.atomics
        self.tile, self.train_wg = last.tile, last.train_wg
        self.kernels_per_step = 4 * len(self.bns) + 3
        self.local_bytes = max(p.local_bytes for p in self.segments)
        self.plan = []
        for j, p in enumerate(self.segments):
            for line, u in zip(p.plan, p.units):
                self.plan.append(f"segment {j}: {line}{u.pop('wgrad_note', '')}")
            if j < len(self.bns):
                bn = self.bns[j]
                self.plan.append(f"segment {j}: BatchNorm {bn['C']} channels x {bn['S']} "
                                 "(batch statistics, applied on the next segment's load)")
        self.stash = dev.empty((self.stash_floats,))
        # one count a BatchNorm: its launch's finished work-groups (0 between launches)
        self.counts = dev.zeros((len(self.bns),), dtype=_I32)

    def bn_groups(self, j):
        """Work-groups of BatchNorm ``j``'s ``fused_bn_stats`` and ``fused_bn_reduce``."""
        return self.bns[j]["C"] * self.bns[j]["split"]

    def bind(self, knl, *args):
        """As :meth:`FusedProgram.bind`."""
        self.segments[-1].bind(knl, *args)

    def launch(self, knl, groups, head=(), full=None, wg=WG):
        """As :meth:`FusedProgram.launch`."""
        return self.segments[-1].launch(knl, groups, head, full, wg)

    def train_groups(self, n):
        """Work-groups of the last segment's ``fused_train`` for a batch of ``n``."""
        return self.segments[-1].train_groups(n)
