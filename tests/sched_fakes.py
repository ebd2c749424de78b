"""Synthetic devices and cost tables shared by the scheduler's tests."""

import numpy as np  # noqa: F401

import hetnet as hn
from hetnet.devices.reference import NumpyDevice
from hetnet.sched.costmodel import CostTable, OPERATIONS, SHAPED, TRANSFERS


# --------------------------------------------------- synthetic cost tables
class FakeGPU(NumpyDevice):
    """A second device for planning tests: numpy arrays, GPU-like costs."""
    kind = "gpu"

    def __init__(self):
        super().__init__()
        self.name = "fakegpu"


def synthetic_table(name, latency, per_unit, transfer_latency, per_byte, slow=()):
    """Time = latency + size * per_unit for every operation (sizes: elements,
    or batch for the shaped ones, taken as 1e3 units per sample); the
    operations in ``slow`` cost 1000 times more."""
    # a point at every power of ten: tables interpolate between points on
    # log scales, which bends a straight line drawn from two far-apart points
    pts = {op: [(10.0 ** k, latency + 10.0 ** k * per_unit) for k in range(10)]
           for op in OPERATIONS}
    pts.update({op: [(10.0 ** k, transfer_latency + 10.0 ** k * per_byte) for k in range(11)]
                for op in TRANSFERS})
    table = CostTable(name, pts)
    table.per_sample = {op: (latency, per_unit * 1e3) for op in SHAPED}
    for op in slow:
        if op in SHAPED:
            table.per_sample[op] = tuple(1000 * v for v in table.per_sample[op])
        else:
            table.points[op] = [(s, 1000 * t) for s, t in table.points[op]]
    real_predict = table.predict

    def predict(op, size, geometry=None):
        if geometry is not None:
            lat, per = table.per_sample[op]
            return lat + size * per
        return real_predict(op, size)

    table.predict = predict
    return table


CPU_TABLE = synthetic_table("cpu", latency=2e-6, per_unit=2e-9, transfer_latency=1e-7, per_byte=1e-10)
GPU_TABLE = synthetic_table("fakegpu", latency=40e-6, per_unit=2e-11, transfer_latency=20e-6, per_byte=1e-10)


def lenet(device):
    return hn.models.lenet5(seed=0, device=device, input_shape=(1, 28, 28))


class SlowGPU(FakeGPU):
    """A (fake) GPU whose convolutions are secretly slow: the cost tables say
    it is fast, a run says otherwise."""

    def conv2d(self, *args, **kwargs):
        import time
        time.sleep(0.02)
        return super().conv2d(*args, **kwargs)
