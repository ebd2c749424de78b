"""How fast the host's cores run right now: a fixed, single-threaded probe.

A shared host (a virtual machine) does not run at one speed: this probe,
which no hetnet kernel shares a thread with, can run half again as slow
for seconds at a time, and every CPU-bound step moves with it
(docs/performance.md, "Host speed").  A plan's predictions are taken at the speed of the moment it was
made; :func:`probe` is how hetnet records that speed (``Plan.host_probe_s``
while planning, ``Plan.explain_host_probe_s`` while explaining), so that a
prediction missed because the host changed speed says so.

The probe sees one core's compute speed, not everything that moves a step
(memory bandwidth, other tenants' caches): a step's time can move while the
probe stays put.  It explains a miss when it moved; when it did not, the
host may still have.
"""

import time

import numpy as np

#: the probe's unit of work: one float32 product of (SIZE x SIZE) matrices
SIZE = 96

_STATE = {}


def _setup():
    if not _STATE:
        from ..devices.cpu import CPUDevice   # the compiled kernels, on first probe only
        rng = np.random.default_rng(0)
        _STATE["device"] = CPUDevice(num_threads=1)
        _STATE["a"] = rng.standard_normal((SIZE, SIZE)).astype(np.float32)
        _STATE["c"] = np.empty((SIZE, SIZE), dtype=np.float32)
    return _STATE


def probe(reps=16, groups=5):
    """Seconds per unit of work (one SIZE^3 matrix product on one thread,
    through the BLAS the CPU device uses), the median of ``groups`` groups
    of ``reps`` back to back: about a millisecond in all.  Larger means a
    slower host at this moment."""
    s = _setup()
    device, a, c = s["device"], s["a"], s["c"]
    times = []
    with device.session():
        device.gemm(a, a, c)                      # the first call sets the BLAS up
        for _ in range(groups):
            t0 = time.perf_counter()
            for _ in range(reps):
                device.gemm(a, a, c)
            times.append((time.perf_counter() - t0) / reps)
    return float(np.median(times))


def speed_note(planned_s, now_s, tolerance=0.15):
    """A line saying how the host's speed now (``now_s``, a :func:`probe`)
    compares with its speed when the plan was made (``planned_s``), or ""
    when either is missing or they agree within ``tolerance``."""
    if not planned_s or not now_s:
        return ""
    ratio = now_s / planned_s
    if abs(ratio - 1) <= tolerance:
        return ""
    how = f"{ratio:.2f}x slower" if ratio > 1 else f"{1 / ratio:.2f}x faster"
    return (f"the host runs {how} than when this plan was made (probe {now_s * 1e6:.1f} µs, "
            f"{planned_s * 1e6:.1f} µs then): predictions of CPU-bound steps can be off by as much")


__all__ = ["probe", "speed_note", "SIZE"]
