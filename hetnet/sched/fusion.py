"""Fusion as one more placement: whether a model's step runs as the fused
kernels of :mod:`hetnet.runtime.fused` on an OpenCL GPU (or, for a model
on the CPU device, the per-tile kernel of :mod:`hetnet.runtime.fused_cpu`)
or layer by layer, decided per batch size and mode
(``Sequential(fuse=...)``)."""

import time

import numpy as np

from ..optim import SGD
from ..runtime import timing
from ..runtime.fused import FusedTrainer, FusionUnsupported, describe_chain
from ..runtime.fused_cpu import (CPU_DECISIONS, CPUFusedTrainer, chain_signature, cpu_units,
                                 is_cpu_device)

FUSE_MODES = ("auto", "always", "never")


class FusionPolicy:
    """A model's ``fuse`` setting and what it decided, per batch size and mode.

    ``"never"``: layer by layer.  ``"always"``: the fused step on the
    model's OpenCL device (a GPU, else any OpenCL device among its
    placement's devices); a chain or a call it cannot run raises
    :class:`FusionUnsupported` with the reason.  ``"auto"`` (default): on an
    OpenCL GPU, a few fused steps are timed against a few steps of the
    layer-by-layer plan (:meth:`Sequential._step_time`, as ``fit`` runs
    them) and the faster is used; any reason fusion does not apply makes
    it layer by layer, the reason kept for :meth:`Sequential.explain`.

    A model whose steps all run on the CPU device (no OpenCL GPU among its
    devices) trains fused with :class:`~hetnet.runtime.fused_cpu.CPUFusedTrainer`
    and predicts fused with it by the same rules (``"auto"`` times it
    against the layer-by-layer step, training and inference apart; the choice
    is kept for every model of the same chain, batch size and thread count
    in the process, :data:`CPU_DECISIONS`, so that two models alike train
    and predict alike).

    Attributes
    ----------
    decisions : dict
        ``(batch, training) -> (use_fused, reason)``.
    """

    def __init__(self, mode):
        if not isinstance(mode, str) or mode not in FUSE_MODES:
            raise ValueError(f"fuse must be one of {FUSE_MODES}, got {mode!r}")
        self.mode = mode
        self.decisions = {}
        self._measured = {}         # (batch, training) -> the choice timed steps made
        self._trainers = {}         # (batch, device name, training) -> FusedTrainer

    def device(self, model):
        """The OpenCL device a fused step would run on, or ``(None, reason)``."""
        candidates = list(model.placement.candidates) + [s.device for s in model._steps]
        opencl = [d for d in dict.fromkeys(candidates) if hasattr(d, "cl_device")]
        gpus = [d for d in opencl if d.kind == "gpu"]
        if gpus:
            return gpus[0], ""
        # the CPU kernel when the model can only run on one CPU device: with any
        # other device among its placement's candidates, a plan may move steps there
        devices = list(dict.fromkeys(candidates))
        if len(devices) == 1 and is_cpu_device(devices[0]):
            return devices[0], ""
        if opencl and self.mode == "always":
            return opencl[0], ""
        return None, ("no OpenCL GPU among the model's devices" + (
            " (an OpenCL CPU device is fused only with fuse='always')" if opencl else ""))

    def usable_device(self, model, unsupported="", data_bytes=0):
        """The OpenCL device a fused call would run on, checked: raises
        :class:`FusionUnsupported` when ``unsupported`` names a feature the
        fused path lacks, when there is no device for it, or when the data
        set it keeps resident (``data_bytes``) is more than half the
        device's memory."""
        if unsupported:
            raise FusionUnsupported(unsupported)
        dev, why = self.device(model)
        if dev is None:
            raise FusionUnsupported(why)
        if is_cpu_device(dev):
            return dev
        if data_bytes > dev.cl_device.global_mem_size // 2:
            raise FusionUnsupported(
                f"the data set ({data_bytes / 2**20:.0f} MiB) is more than half the "
                f"device's memory ({dev.cl_device.global_mem_size / 2**20:.0f} MiB)")
        return dev

    def trainer(self, model, batch, optimizer=None, training=True):
        """The cached :class:`FusedTrainer` for ``batch`` holding the model's
        current weights (loaded again each call).  For inference
        (``training=False``) a training trainer of that batch serves when
        there is one (and has no BatchNorm segments), else an inference
        trainer (BatchNorm folded in)."""
        dev = self.usable_device(model)
        key = (batch, dev.name, training)
        tr = self._trainers.get(key)
        if is_cpu_device(dev):
            if tr is None and not training:
                # the training trainer of that batch predicts as well (the same forward)
                tr = self._trainers.get((batch, dev.name, True))
            if tr is None:
                # an inference trainer's optimizer never runs
                tr = self._trainers[key] = CPUFusedTrainer(
                    model, device=dev, batch_size=batch,
                    optimizer=optimizer if training else SGD(lr=0.01))
                return tr
            tr.load_weights()
            if training and optimizer is not None and optimizer is not tr.optimizer:
                tr.set_optimizer(optimizer)
            return tr
        if tr is None and not training:
            tr = self._trainers.get((batch, dev.name, True))
            if tr is not None and tr.segmented:
                tr = None   # BatchNorms in training: inference folds them (its own trainer)
        if tr is None:
            tr = self._trainers[key] = FusedTrainer(model, device=dev, batch_size=batch,
                                                    optimizer=optimizer, training=training)
        else:
            tr.load_weights()
            if training and optimizer is not None and optimizer is not tr.optimizer:
                tr.set_optimizer(optimizer)
        return tr

    def decide(self, model, batch, training, unsupported="", data_bytes=0):
        """Whether this call runs fused: ``(use, reason)``; ``unsupported``
        names a feature of the call that the fused path lacks;
        ``data_bytes``, the data set the call puts on the device.  Under
        ``"always"`` raises :class:`FusionUnsupported` when it cannot.  The
        measured choice of ``"auto"`` is kept per batch size and mode; the
        last reason is :attr:`decisions` ``[(batch, training)]``."""
        key = (batch, training)
        if self.mode == "never":
            return False, "fuse='never'"
        try:
            if unsupported:
                raise FusionUnsupported(unsupported)
            # the chain first: its limits hold on every machine, so explain()
            # names them even where there is no GPU
            describe_chain(model, training)
            dev = self.usable_device(model, "", data_bytes)
            if is_cpu_device(dev):
                cpu_units(model)
        except FusionUnsupported as exc:
            if self.mode == "always":
                raise FusionUnsupported(
                    f"fuse='always', but the fused step cannot run: {exc}") from None
            decision = self.decisions[key] = (False, f"layer by layer: {exc}")
            return decision
        measured = self._measured.get(key)
        shared = None
        if measured is None and is_cpu_device(dev) and self.mode == "auto":
            # one measured choice per chain, batch and thread count in a process:
            # two models alike train alike (the two paths round differently)
            shared = ("step" if training else "inference", chain_signature(model), batch,
                      dev.num_threads)
            measured = CPU_DECISIONS.get(shared)
        if measured is None:
            if self.mode == "always":
                measured = (True, f"fused on {dev.name} (fuse='always')")
            else:
                try:
                    fused_s = time_fused_step(model, dev, batch, training)
                except FusionUnsupported as exc:
                    measured = (False, f"layer by layer: {exc}")
                else:
                    model._use_plan(batch, training)
                    layered_s = model._step_time(batch, training)
                    model.runtime.release_pool()     # the timing's stand-in data set
                    use = fused_s < layered_s
                    measured = (use, f"measured per step: fused on {dev.name} "
                                     f"{fused_s * 1e3:.3f} ms, layer by layer "
                                     f"{layered_s * 1e3:.3f} ms; chose "
                                     + ("fused" if use else "layer by layer"))
            if shared is not None:
                CPU_DECISIONS[shared] = measured
        self._measured[key] = measured
        self.decisions[key] = measured
        return measured


def time_fused_step(model, dev, batch, training, steps=20):
    """Seconds per fused step (training: forward, backward, update; else the
    forward) on random resident data, on a trainer of its own (the model's
    weights are not changed)."""
    if is_cpu_device(dev):
        tr = CPUFusedTrainer(model, device=dev, batch_size=batch,
                             optimizer=SGD(lr=1e-3, momentum=0.9))
        x, y = timing.random_batch(model.runtime, batch)
        X = np.ascontiguousarray(x.reshape(batch, -1), dtype=np.float32)
        if not training:
            return tr.time_inference(X, batch, steps)
        labels = np.asarray(y, dtype=np.int32).reshape(-1)
        if labels.shape[0] != batch:          # one-hot rows
            labels = np.asarray(y).reshape(batch, -1).argmax(axis=1).astype(np.int32)
        return tr.time_step(X, labels, batch, steps)
    tr = FusedTrainer(model, device=dev, batch_size=batch, training=training,
                      optimizer=SGD(lr=1e-3, momentum=0.9) if training else None)
    x, y = timing.random_batch(model.runtime, batch)
    # whole batches (a BatchNorm1D cannot train on a last batch of one)
    rows = batch * max(2, -(-256 // batch))
    X = np.resize(x, (rows,) + x.shape[1:])
    Y = np.resize(y, rows)
    if not training:
        Xd = dev.asarray(X[:batch].reshape(batch, -1))
        out = dev.empty((batch, model.n_outputs))
        tr.predict_logits(Xd, out=out)
        dev.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            tr.predict_logits(Xd, out=out)
        dev.synchronize()
        return (time.perf_counter() - t0) / steps
    tr.set_data(X, Y)
    tr.fit(epochs=1, shuffle=False)
    Xd, yd, order, n = tr._data
    tr._bind(Xd, yd, order)
    dev.synchronize()
    t0 = time.perf_counter()
    for s in range(steps):
        tr._step((s * batch) % (n - batch + 1), batch, 1e-3)
    dev.synchronize()
    return (time.perf_counter() - t0) / steps


__all__ = ["FUSE_MODES", "FusionPolicy", "time_fused_step"]
