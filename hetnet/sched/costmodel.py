"""Cost model: how long each device operation takes, as a function of its size.

For every device the model holds a table per operation: times measured at a
few sizes, interpolated linearly in log-log space between the measured
points, flat below the smallest (launch and call overhead dominate there) and
proportional to size above the largest.

* Operations whose speed depends little on shape are sized in elements
  (``elementwise``: bias + activation, ``reduce``: bias gradient,
  ``update``: SGD with momentum, ``loss``: softmax + cross-entropy) or bytes,
  and measured once per device.
* Transfers are tables of latency and bandwidth in effect, each way and by path:
  ``to_device`` and ``to_host`` are the paths training takes (on a GPU, uploads through
  pinned staging buffers and reads into ordinary memory); ``to_device_pageable`` and
  ``to_host_pinned`` are the other two.  On host devices all four are the same copy.
  ``gather_rows`` is a step's batch: rows picked in shuffled order from a
  64 MB host array (a data set is larger than the caches) and brought to the
  device.
* Overheads: what a real step adds to the sum of its operations (Python
  between them, argument handling, queue submission), per layer and per
  step, from timed steps of tiny models (:func:`measure_overheads`).
* GEMM and convolution depend strongly on their shapes, so they are measured
  per *geometry* (a dense layer's (in, out); a convolution's input shape,
  filters, kernel, stride, padding and fused activation) as a function of the
  batch size: ``gemm``, ``gemm_dw``, ``gemm_dx`` (forward, weight and input
  gradients of a dense layer), ``conv2d``, ``conv2d_backward`` (with the input
  gradient), ``conv2d_backward_weights`` (without), and ``maxpool2d``,
  ``maxpool2d_backward`` per pooling geometry (input shape, window, stride,
  padding where there is any:
  a pool over small maps costs far more per element than over large ones,
  a 16x10x10 map's three times a 1x28x28 one's here).  A geometry is measured
  the first time a plan needs it, at a few batch sizes, in milliseconds.

Tables are cached per device (name, driver, threads, BLAS, hetnet version and
a hash of the kernels' build) in
the user's cache directory: ``$HETNET_CACHE_DIR``, else
``$XDG_CACHE_HOME/hetnet``, else ``~/.cache/hetnet``.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..devices import Device, get_device, gpu_device
from .._version import __version__
from ..layers import Dense, ReLU
from ..layers.geometry import as_geometry
from ..losses import get_loss
from ..runtime import POOL_BYTES, measure_chain
from .planner import plan_model

OPERATIONS = ("elementwise", "reduce", "update", "loss")
#: the paths training uses (``asarray``: pinned staging on GPUs; ``to_host``: into pageable
#: memory), the other two for comparison, and ``gather_rows``: a batch of rows
#: gathered in shuffled order from a data set larger than the CPU's caches and
#: brought to the device, as ``fit`` brings every batch
TRANSFERS = ("to_device", "to_host", "to_device_pageable", "to_host_pinned", "gather_rows")
SHAPED = ("gemm", "gemm_dw", "gemm_dx", "conv2d", "conv2d_backward", "conv2d_backward_weights",
          "maxpool2d", "maxpool2d_backward")
#: what a real step adds to the sum of its operations' table times, per layer
#: and per step, in training and in inference (see :func:`measure_overheads`)
OVERHEADS = ("layer_overhead", "step_overhead", "layer_overhead_inference",
             "step_overhead_inference")
#: batch sizes at which a geometry is measured: every power of two, as a GEMM's
#: time is far from a straight line between sparser points (a 784x120 dense
#: layer here: 10 us at batch 8, 35 at 16, 76 at 64; from 8 and 64 alone, 16
#: read as 20)
GEOMETRY_BATCHES = tuple(2 ** k for k in range(11))
#: sizes (elements) at which the shape-free operations are measured, a factor
#: of four apart (and 16M elements on a GPU)
ELEMENT_SIZES = tuple(4 ** k for k in range(4, 11)) + (2097152,)


def cache_dir():
    root = os.environ.get("HETNET_CACHE_DIR")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hetnet")
    return Path(root)


def device_key(device):
    """What a calibration depends on: device, driver, threads, BLAS, hetnet
    version, the build of its kernels (:func:`kernel_build`) and, on OpenCL,
    how kernels are launched (from C or through pyopencl: a step launched
    from C runs measurably faster, so the two need their own tables;
    docs/performance.md, "Launching from C") and whether the optimizer updates the parameters in one launch (the
    per-step overhead then holds that launch)."""
    parts = [device.name, f"hetnet={__version__}"]
    for attr in ("driver_version", "num_threads", "precision", "c_enqueue"):
        if hasattr(device, attr):
            parts.append(f"{attr}={getattr(device, attr)}")
    if device.flat_update:
        parts.append("flat_update")
    if device.name == "cpu":
        # the compiled kernels (and pyopencl, below) load only when a device
        # of theirs is costed: importing hetnet needs neither
        from ..devices.cpu import blas_description
        parts.append(f"blas={blas_description()}")
    parts.append(f"build={kernel_build(device)}")
    return "|".join(str(p) for p in parts)


_BUILDS = {}


def kernel_build(device):
    """A short hash of the kernels ``device`` runs: the OpenCL sources for an
    OpenCL device, else the compiled CPU extensions.  A rebuilt kernel runs
    at another speed, and within one hetnet version (a source checkout)
    nothing else would tell the cache that its tables are stale."""
    kind = "opencl" if hasattr(device, "cl_device") else "cpu"
    if kind not in _BUILDS:
        digest = hashlib.sha256()
        if kind == "cpu":
            from .._cpu import blas, conv, elementwise
            for module in (blas, conv, elementwise):
                digest.update(Path(module.__file__).read_bytes())
        else:
            from ..devices.opencl.platform import kernel_names, kernel_source
            for name in kernel_names():
                digest.update(kernel_source(name).encode())
        _BUILDS[kind] = digest.hexdigest()[:12]
    return _BUILDS[kind]


class CostTable:
    """Measured ``(size, seconds)`` points per operation for one device.

    Parameters
    ----------
    key : str
        :func:`device_key` of the device it describes.
    points : dict of str -> list of (size, seconds)
        Sizes ascending; one list per operation or transfer direction.
    """

    def __init__(self, key, points, device=None, path=None):
        self.key = key
        self.points = {op: _monotone((float(s), float(t)) for s, t in pts)
                       for op, pts in points.items()}
        self.device = device       # for measuring new geometries; None: a fixed table
        self.path = path

    def predict(self, op, size, geometry=None):
        """Seconds for one ``op`` of ``size`` (0 for size 0); with a
        ``geometry``, ``size`` is the batch size and the geometry's own
        points are used (measured now if the table has a device and lacks them)."""
        if size <= 0:
            return 0.0
        if geometry is not None:
            op = f"{op}@{geometry_key(geometry)}"
            if op not in self.points and self.device is not None:
                self.points.update((k, _monotone(v))
                                   for k, v in measure_geometry(self.device, geometry).items())
                self.save()
        pts = self.points.get(op)
        if not pts:
            raise KeyError(f"the cost table of {self.key!r} has no operation {op!r}")
        sizes = [p[0] for p in pts]
        if size <= sizes[0]:
            return pts[0][1]
        if size >= sizes[-1]:
            return pts[-1][1] * size / sizes[-1]
        j = bisect.bisect_right(sizes, size)
        (s0, t0), (s1, t1) = pts[j - 1], pts[j]
        f = (math.log(size) - math.log(s0)) / (math.log(s1) - math.log(s0))
        return math.exp(math.log(t0) + f * (math.log(t1) - math.log(t0)))

    def overhead(self, what, training):
        """Seconds a real step adds per ``what`` ("layer" or "step") beyond
        its operations' table times (0 for tables without overheads)."""
        pts = self.points.get(f"{what}_overhead" + ("" if training else "_inference"))
        return pts[0][1] if pts else 0.0

    def predict_terms(self, terms):
        """Total seconds of a list of ``(op, size)`` / ``(op, batch, geometry)`` terms."""
        return sum(self.predict(*t) for t in terms)

    def save(self):
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.to_json()))
        except OSError:
            pass                   # a read-only cache only costs a re-measurement next time

    def to_json(self):
        return {"key": self.key, "points": self.points}

    @classmethod
    def from_json(cls, data):
        return cls(data["key"], data["points"])


def _monotone(points):
    """``(size, seconds)`` points sorted by size, the times made
    non-decreasing in size, each point lowered to the least
    time measured at its size or above: a smaller operation can always be
    run as the larger one, so a point above a larger size's time is noise
    (a busy moment of the host) and would make the interpolation lie."""
    out, least = [], math.inf
    for size, t in reversed(sorted(points)):
        least = min(least, t)
        out.append((size, least))
    return out[::-1]


def _time(device, fn, min_time=0.002, max_reps=200):
    """Seconds per call of ``fn`` issued back to back (the device's steady
    state: launch costs overlap device work as they do in training)."""
    fn()
    device.synchronize()
    reps, best = 1, None
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        device.synchronize()
        dt = time.perf_counter() - t0
        if dt < min_time and reps < max_reps:
            reps = min(max_reps, max(reps * 2, int(reps * min_time / max(dt, 1e-7)) + 1))
            continue
        per = dt / reps
        best = per if best is None else min(best, per)
    if best is None:
        best = dt / reps
    return best


def _rand(device, rng, *shape):
    return device.asarray(rng.standard_normal(shape).astype(np.float32))


def calibrate(device, quick=True):
    """Measure ``device``'s operations, transfers and step overheads; returns a
    :class:`CostTable` that measures new geometries on ``device`` as needed."""
    rng = np.random.default_rng(0)
    points = {op: [] for op in OPERATIONS + TRANSFERS}
    big = device.kind == "gpu"
    with device.session():
        for n in ELEMENT_SIZES + ((16777216,) if big else ()):
            y = _rand(device, rng, n // 64, 64)
            b = _rand(device, rng, 64)
            points["elementwise"].append((n, _time(device, lambda: device.bias_activation(y, b, "relu"))))
            db = device.empty((64,))
            points["reduce"].append((n, _time(device, lambda: device.bias_grad(y, out=db))))
            w, g, v = _rand(device, rng, n), _rand(device, rng, n), device.zeros((n,))
            points["update"].append((n, _time(device, lambda: device.sgd_update(w, g, v, 1e-3, 0.9))))
            rows = max(1, n // 10)
            z, labels = _rand(device, rng, rows, 10), device.asarray(rng.integers(0, 10, rows), dtype=np.int32)
            gz = device.empty((rows, 10))
            points["loss"].append((rows * 10, _time(device, lambda: device.softmax_cross_entropy(z, labels, None, grad_out=gz))))
        points["gather_rows"] = measure_gather(device, rng)
        for nbytes in (4096, 65536, 1 << 20, 8 << 20):
            host = rng.standard_normal(nbytes // 4).astype(np.float32)
            arr = device.asarray(host)
            points["to_device"].append((nbytes, _time(device, lambda: device.asarray(host))))
            points["to_host"].append((nbytes, _time(device, lambda: device.to_host(arr))))
            points["to_device_pageable"].append((nbytes, _time(device, lambda: device.upload_pageable(host))))
            points["to_host_pinned"].append((nbytes, _time(device, lambda: device.download_pinned(arr))))
    table = CostTable(device_key(device), points, device=device)   # measures geometries
    table.points.update(measure_overheads(device, table))
    return table


def measure_gather(device, rng, row=784, pool_bytes=POOL_BYTES):
    """``[(bytes, seconds)]`` of ``device.gather_rows`` for batches of 1 to
    2048 rows of ``row`` floats, taken in shuffled order from a host array
    of ``pool_bytes`` (each call new rows, as in an epoch: rows the caches
    still hold would make it look free)."""
    rows = pool_bytes // (4 * row)
    pool = np.resize(rng.standard_normal((256, row)).astype(np.float32), (rows, row))
    order = rng.permutation(rows)
    out = []
    for n in (1, 16, 256, 2048):
        state = {"at": 0, "buf": None}

        def gather():
            at = state["at"]
            state["at"] = (at + n) % (rows - n)
            state["buf"] = device.gather_rows(pool, order[at:at + n], out=state["buf"])
        out.append((4 * row * n, _time(device, gather)))
    return out


def measure_overheads(device, table, deep=5):
    """What a real step costs beyond its operations' table times: the Python
    between operations, argument handling, queue submission, caches.  The
    tables time each operation alone, back to back; a step of a tiny model
    (Dense 8-wide layers at batch 1, where the operations themselves are
    table-floor cheap) is timed through the model's own step code with 1
    and with ``deep`` layers, and the excess over the planner's prediction
    is split into a per-layer and a per-step part (each at least 0)."""
    def tiny(k):
        layers = []
        for _ in range(k - 1):
            layers += [Dense(8, 8), ReLU()]
        return layers + [Dense(8, 10)]

    loss = get_loss("cross_entropy")
    out = {}
    for training in (True, False):
        excess = {}
        for k in (1, deep):
            layers = tiny(k)
            times = []
            for _ in range(3):
                steps, seconds = measure_chain(layers, device, (8,), 1, training, loss, repeats=20)
                times.append(seconds)
            plan = plan_model(steps, 1, [device], {device.name: table}, training, "fixed",
                              input_bytes=32, label_bytes=4, output_bytes=40)
            excess[k] = min(times) - plan.predicted_step_s
        per_layer = max(0.0, (excess[deep] - excess[1]) / (deep - 1))
        per_step = max(0.0, excess[1] - per_layer)
        suffix = "" if training else "_inference"
        out["layer_overhead" + suffix] = [(1.0, per_layer)]
        out["step_overhead" + suffix] = [(1.0, per_step)]
    return out


def geometry_key(geometry):
    """The text a geometry's points are filed under (records and tuples
    alike: a record is a tuple, kind first)."""
    return json.dumps(geometry, separators=(",", ":"), default=list)


def _measure_dense(device, g, rng, batches, key):
    """``gemm``, ``gemm_dw``, ``gemm_dx`` of a :class:`DenseGeometry`."""
    fin, fout = g.in_features, g.out_features
    w = _rand(device, rng, fin, fout)
    out = {f"{op}@{key}": [] for op in ("gemm", "gemm_dw", "gemm_dx")}
    for b in batches:
        x, dy = _rand(device, rng, b, fin), _rand(device, rng, b, fout)
        y, dw, dx = device.empty((b, fout)), device.empty((fin, fout)), device.empty((b, fin))
        out[f"gemm@{key}"].append((b, _time(device, lambda: device.gemm(x, w, y))))
        out[f"gemm_dw@{key}"].append((b, _time(device, lambda: device.gemm(x, dy, dw, trans_a=True))))
        out[f"gemm_dx@{key}"].append((b, _time(device, lambda: device.gemm(dy, w, dx, trans_b=True))))
    return out


def _measure_conv2d(device, g, rng, batches, key):
    """``conv2d``, ``conv2d_backward`` (with the input gradient) and
    ``conv2d_backward_weights`` (without) of a :class:`Conv2DGeometry`."""
    c, h, wd = g.in_shape
    (kh, kw), stride, pad, f, act = g.kernel, g.stride, g.pad, g.filters, g.activation
    ho = (h + 2 * pad[0] - kh) // stride[0] + 1
    wo = (wd + 2 * pad[1] - kw) // stride[1] + 1
    w, bias = _rand(device, rng, f, c, kh, kw), _rand(device, rng, f)
    dw, db = device.empty((f, c, kh, kw)), device.empty((f,))
    out = {f"{op}@{key}": [] for op in ("conv2d", "conv2d_backward", "conv2d_backward_weights")}
    for b in batches:
        x = _rand(device, rng, b, c, h, wd)
        y, dx = device.empty((b, f, ho, wo)), device.empty((b, c, h, wd))
        dy = _rand(device, rng, b, f, ho, wo)
        out[f"conv2d@{key}"].append((b, _time(device, lambda: device.conv2d(
            x, w, bias, stride, pad, act, out=y))))
        for op, need_dx in (("conv2d_backward", True), ("conv2d_backward_weights", False)):
            out[f"{op}@{key}"].append((b, _time(device, lambda: device.conv2d_backward(
                x, w, y, dy, stride, pad, act, dw, db, need_dx, dx if need_dx else None))))
    return out


def _measure_maxpool2d(device, g, rng, batches, key):
    """``maxpool2d`` and ``maxpool2d_backward`` of a :class:`MaxPool2DGeometry`
    or a :class:`PaddedMaxPool2DGeometry` (the padded pool's own operation,
    filed under the same operation names)."""
    (c, h, wd), (kh, kw), (sh, sw) = g.in_shape, g.window, g.stride
    if g.kind == "maxpool2d_padded":
        ph, pw = g.padding
        def pool(x, y=None, am=None):
            return device.maxpool2d_padded(x, kh, kw, sh, sw, ph, pw, out=y, argmax=am)
    else:
        def pool(x, y=None, am=None):
            return device.maxpool2d(x, kh, kw, sh, sw, out=y, argmax=am)
    out = {f"{op}@{key}": [] for op in ("maxpool2d", "maxpool2d_backward")}
    for b in batches:
        x = _rand(device, rng, b, c, h, wd)
        y, am = pool(x)
        dx = device.empty(x.shape)
        out[f"maxpool2d@{key}"].append((b, _time(device, lambda: pool(x, y, am))))
        out[f"maxpool2d_backward@{key}"].append((b, _time(
            device, lambda: device.maxpool2d_backward(y, am, x.shape, out=dx))))
    return out


#: geometry kind -> how its operations are measured (a new layer family adds one)
MEASURE_BY_KIND = {"dense": _measure_dense, "conv2d": _measure_conv2d,
                   "maxpool2d": _measure_maxpool2d, "maxpool2d_padded": _measure_maxpool2d}


def measure_geometry(device, geometry, batches=GEOMETRY_BATCHES):
    """Time the operations of one geometry (a record of
    :mod:`hetnet.layers.geometry`, or a tuple starting with its kind) at a
    few batch sizes: ``{op@geometry: [(batch, s)]}``."""
    measure = MEASURE_BY_KIND.get(geometry[0]) if len(geometry) else None
    if measure is None:
        raise ValueError(f"unknown geometry {geometry!r}")
    g = as_geometry(geometry)
    with device.session():
        return measure(device, g, np.random.default_rng(0), batches, geometry_key(g))


_MEMORY = {}


def cost_table(device, recalibrate=False):
    """The cost table of ``device``: from memory, the disk cache, or a new
    calibration (written to the cache)."""
    key = device_key(device)
    if not recalibrate and key in _MEMORY:
        return _MEMORY[key]
    path = cache_dir() / ("costs-" + "".join(c if c.isalnum() else "_" for c in key)[:120]
                          + "-" + hashlib.sha256(key.encode()).hexdigest()[:10] + ".json")
    table = None
    if not recalibrate and path.exists():
        try:
            data = json.loads(path.read_text())
            if data.get("key") == key and set(OPERATIONS + TRANSFERS + OVERHEADS) <= set(data["points"]):
                table = CostTable.from_json(data)
        except (ValueError, KeyError, OSError):
            table = None           # unreadable cache: measure again
    if table is None:
        table = calibrate(device)
    table.device, table.path = device, path
    table.save()
    _MEMORY[key] = table
    return table


def recalibrate(devices: str | Device | Sequence[str | Device] | None = None
                ) -> dict[str, CostTable]:
    """Re-measure the given devices (default: the CPU and any GPU found);
    returns ``{device name: CostTable}``."""
    if devices is None:
        devices = [get_device("cpu")]
        gpu, _ = gpu_device()
        if gpu is not None:
            devices.append(gpu)
    elif isinstance(devices, (str, Device)):
        devices = [devices]
    # names ("cpu", "opencl:0:0") resolve as everywhere; an unknown one raises naming it
    devices = [d if isinstance(d, Device) else get_device(d) for d in devices]
    return {d.name: cost_table(d, recalibrate=True) for d in devices}
