"""The population pass: the loss of P weight vectors over one batch in one device pass.

A metaheuristic's cost is the loss of P candidate weight vectors on the
same data.  Instead of loading each candidate and running the network P
times, :func:`population_loss` runs every step once over all P candidates:

* the first step with parameters sees the same input for every candidate:
  a convolution there is one convolution with the P filter banks stacked
  (``P * F`` filters: the input's im2col is shared, one GEMM), a dense layer
  there one GEMM of the shared ``(n, in)`` input with the P weight matrices
  side by side ``(in, P * out)``; their outputs hold the candidates'
  channels side by side in each image, ``(n, P * F, ...)``, and the pooling,
  activations and BatchNorm after them run on that as on any batch (one
  call each; BatchNorm with the P parameter sets stacked, its per-channel
  statistics being each candidate's own), until the next layer with
  parameters swaps the two leading axes (``Device.swap_leading_axes``) into
  candidate-major blocks, ``(P, n, *shape)``, each candidate's contiguous;
* a dense layer further on is one batched GEMM ``(P, n, in) x (P, in, out)``;
  a convolution further on runs each candidate's filter bank over its own
  input (the inputs differ, so no columns are shared);
* pooling, activations and flattening there run once over the
  ``(P * n, ...)`` view: they do not depend on the weights;
* Dropout (training mode) draws each candidate's own mask, the one P single
  training passes in a row would draw (its key from the layer's pass count),
  so the pass equals the generic one bit for bit in the masks;
* BatchNorm (training mode, as the generic path evaluates) normalises each
  candidate's block with its own batch statistics, into scratch running
  statistics: the layers' running statistics are never touched;
* a Residual block takes its input as candidate-major blocks (a copy per
  candidate when no layer with parameters came before it), runs its
  branch's and its shortcut's steps as the chain's own, and adds the two
  with its fused activation in one call;
* each candidate's loss is reduced on the device and summed into a ``(P,)``
  device array, read back once.

The batch is cut into chunks of images so that ``P x chunk`` activations fit
:data:`CHUNK_BYTES` (:data:`GPU_CHUNK_BYTES` on a GPU); with BatchNorm the
batch is not cut (its statistics couple the images; so with Dropout, whose masks
are drawn over the whole batch), only P is.  Every
operation is one of the device's own (:mod:`hetnet.devices.base`), so the
pass runs on every device.
"""

import numpy as np

from ..devices.base import dropout_key
from ..layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,
                      GlobalAvgPool2D, MaxPool2D, Residual)
from ..layers.activations import Activation, walk

#: bound on the bytes of one chunk's activations (all P candidates, one layer's
#: output) on a CPU device, where a chunk should stay near the caches
CHUNK_BYTES = 128 << 20
#: the same on a GPU, where every chunk costs its kernels' launches
GPU_CHUNK_BYTES = 1 << 30


def _chunk_bytes(steps):
    return GPU_CHUNK_BYTES if steps[0].device.kind == "gpu" else CHUNK_BYTES

_SUPPORTED = (Dense, Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Flatten, Activation,
              BatchNorm1D, BatchNorm2D, Residual, Dropout)


def unsupported_reason(steps):
    """None when :func:`population_loss` can run these steps, else why not (a sentence)."""
    devices = {id(s.device) for s in steps}
    if len(devices) != 1:
        return "the steps are placed on more than one device"
    for s in walk(steps):
        if not isinstance(s, _SUPPORTED):
            inside = "" if any(s is t for t in steps) else " (inside a Residual block)"
            return f"{type(s).__name__}{inside} has no population pass"
    return None


def _has_batchnorm(steps):
    """Whether the batch cannot be cut into image chunks: BatchNorm couples the
    images, and Dropout's masks are drawn over the whole batch's element indices
    (as one forward pass over it draws them)."""
    return any(isinstance(s, (BatchNorm1D, BatchNorm2D, Dropout)) for s in walk(steps))


def _largest_output(steps):
    """Floats of the largest per-sample output of the steps and of the blocks' sub-layers."""
    return max(int(np.prod(s.output_shape)) for s in walk(steps))


def chunk_images(steps, n, n_candidates):
    """Images per chunk: as many as keep the largest step output of all
    candidates within :data:`CHUNK_BYTES` (at least one); all ``n`` with BatchNorm."""
    if _has_batchnorm(steps):
        return n
    per_image = _largest_output(steps) * 4 * n_candidates
    return max(1, min(n, _chunk_bytes(steps) // max(per_image, 1)))


def chunk_candidates(steps, n, n_candidates):
    """Candidates per pass with BatchNorm (the whole batch in each pass); all otherwise."""
    if not _has_batchnorm(steps):
        return n_candidates
    per_candidate = _largest_output(steps) * 4 * n
    return max(1, min(n_candidates, _chunk_bytes(steps) // max(per_candidate, 1)))


class _Scratch:
    """Device buffers of a pass, kept by name and shape across chunks and
    calls (a generation after another: no fresh memory to fault in)."""

    #: buffers kept at the most; past it the set starts afresh (shapes that
    #: came and went: a short last chunk, a short last generation)
    max_buffers = 256

    def __init__(self, dev):
        self.dev = dev
        self._bufs = {}

    @classmethod
    def of(cls, rt, dev):
        """The runtime's scratch for ``dev``, made on first use."""
        scratch = getattr(rt, "_population_scratch", None)
        if scratch is None or scratch.dev is not dev or len(scratch._bufs) > cls.max_buffers:
            scratch = rt._population_scratch = cls(dev)
        return scratch

    def get(self, name, shape, dtype=np.float32, zeros=False):
        key = (name, tuple(shape), np.dtype(dtype).str)
        buf = self._bufs.get(key)
        if buf is None:
            make = self.dev.zeros if zeros else self.dev.empty
            buf = self._bufs[key] = make(tuple(shape), dtype=dtype)
        return buf


def _row(dev, a, p):
    """Candidate ``p``'s block of a candidate-major array ``(P, ...)``, shape ``a.shape[1:]``."""
    return dev.reshape(dev.batch_slice(a, p, p + 1), tuple(a.shape[1:]))


def _stacked_params(rt, W, dev):
    """Each step's parameters for every candidate: ``{id(step): {name: (P, *shape) device}}``."""
    offsets = np.concatenate([[0], np.cumsum(rt.param_sizes())]).astype(np.int64)
    out = {}
    for step in rt.steps:
        if not step.params:
            continue
        slots = rt.param_slots(step)
        arrays = {}
        for index, name in slots:
            a, b = offsets[index], offsets[index + 1]
            shape = (W.shape[0],) + tuple(step.params[name].shape)
            arrays[name] = dev.asarray(np.ascontiguousarray(W[:, a:b]).reshape(shape))
        out[id(step)] = arrays
    first = next((s for s in rt.steps if s.params), None)
    if isinstance(first, Dense):
        # the first dense layer's P matrices side by side, (in, P * out), for one GEMM
        a, b = offsets[rt.param_slots(first)[0][0]], offsets[rt.param_slots(first)[0][0] + 1]
        w = W[:, a:b].reshape(W.shape[0], first.in_features, first.out_features)
        out[id(first)]["W_side"] = dev.asarray(np.ascontiguousarray(
            w.transpose(1, 0, 2).reshape(first.in_features, -1)))
    return out


# Layouts of a pass's activations: SHARED (n, *shape), one for every candidate
# (before the first step with parameters); NMAJOR (n, P * C, ...): the P
# candidates' channels side by side in each image, what a layer of P stacked
# filter banks writes, on which pooling, activations and BatchNorm (stacked
# per-channel parameters) run as on any batch; PMAJOR (P, n, *shape): each
# candidate's block contiguous, what per-candidate GEMMs read.
SHARED, NMAJOR, PMAJOR = "shared", "nmajor", "pmajor"


def _to_pmajor(dev, x, layout, scratch, P, n, shape, name="swap"):
    if layout == PMAJOR:
        return x
    size = int(np.prod(shape))
    y = scratch.get(name, (P, n, size))
    if layout == SHARED:
        # every candidate's block a copy of the one input: act(x + 0) into each row
        zero = scratch.get("zero", (n, size), zeros=True)
        x2 = dev.reshape(x, (n, size))
        for p in range(P):
            dev.add_activation(x2, zero, "identity", out=_row(dev, y, p))
    else:
        dev.swap_leading_axes(dev.reshape(x, (n, P, size)), out=y)
    return dev.reshape(y, (P, n) + tuple(shape))


def _stacked(dev, a, P):
    """``(P, F, ...)`` as ``(P * F, ...)``: the P candidates' channels side by side."""
    return dev.reshape(a, (P * a.shape[1],) + tuple(a.shape[2:]))


def _dense(dev, step, x, layout, params, scratch, P, n):
    w, b = params["W"], params.get("b")
    out = step.out_features
    if layout == SHARED:
        # one GEMM against the P weight matrices side by side: (n, in) x (in, P * out)
        y = scratch.get(f"y{id(step)}", (n, P * out))
        dev.gemm(x, params["W_side"], y)
        dev.bias_activation(y, None if b is None else _stacked(dev, b, P), step.activation)
        return y, NMAJOR
    x = _to_pmajor(dev, x, layout, scratch, P, n, step.input_shape)
    y = scratch.get(f"y{id(step)}", (P, n, out))
    dev.gemm(x, w, y)      # (P, n, in) x (P, in, out)
    for p in range(P):
        dev.bias_activation(_row(dev, y, p), None if b is None else _row(dev, b, p),
                            step.activation)
    return y, PMAJOR


def _conv(dev, step, x, layout, params, scratch, P, n):
    out_shape = tuple(step.output_shape)
    w, b = params["W"], params.get("b")
    if layout == SHARED:
        # one convolution with the P filter banks stacked: the input's im2col is shared
        f = out_shape[0]
        y = scratch.get(f"y{id(step)}", (n, P * f) + out_shape[1:])
        dev.conv2d(x, _stacked(dev, w, P), None if b is None else _stacked(dev, b, P),
                   step.stride, step.pad, step.activation, out=y)
        return y, NMAJOR
    x = _to_pmajor(dev, x, layout, scratch, P, n, step.input_shape)
    y = scratch.get(f"y{id(step)}", (P, n) + out_shape)
    for p in range(P):
        dev.conv2d(_row(dev, x, p), _row(dev, w, p), None if b is None else _row(dev, b, p),
                   step.stride, step.pad, step.activation, out=_row(dev, y, p))
    return y, PMAJOR


def _batchnorm(dev, step, x, layout, params, scratch, P, n):
    f = step.num_features
    if layout == NMAJOR:
        # per-channel statistics over the batch are each candidate's own: one call
        stats = [scratch.get(f"bn{k}", (P * f,), zeros=True) for k in range(4)]
        y = scratch.get(f"y{id(step)}", tuple(x.shape))
        dev.batchnorm_forward(x, _stacked(dev, params["gamma"], P),
                              _stacked(dev, params["beta"], P), *stats, step.momentum,
                              step.eps, True, step.activation, out=y)
        return y, NMAJOR
    stats = [scratch.get(f"bn{k}", (f,), zeros=True) for k in range(4)]
    y = scratch.get(f"y{id(step)}", (P, n) + tuple(step.output_shape))
    for p in range(P):
        xp = x if layout == SHARED else _row(dev, x, p)
        dev.batchnorm_forward(xp, _row(dev, params["gamma"], p), _row(dev, params["beta"], p),
                              *stats, step.momentum, step.eps, True, step.activation,
                              out=_row(dev, y, p))
    return y, PMAJOR


def _weightless(dev, step, x, layout, scratch, P, n):
    """A step without parameters, on any layout: one call over the batch."""
    per = {SHARED: 1, NMAJOR: P, PMAJOR: 1}[layout]
    rows = P * n if layout == PMAJOR else n
    in_shape, out_shape = tuple(step.input_shape), tuple(step.output_shape)
    lead = (P, n) if layout == PMAJOR else (n,)

    def fold(shape):   # per-sample shape with the candidates folded into the channels
        return (per * shape[0],) + shape[1:]

    if isinstance(step, Flatten):
        if layout == NMAJOR:
            return dev.reshape(x, (n, P * int(np.prod(out_shape)))), layout
        return dev.reshape(x, lead + out_shape), layout
    xv = dev.reshape(x, (rows,) + fold(in_shape))
    y = scratch.get(f"y{id(step)}", (rows,) + fold(out_shape))
    if isinstance(step, MaxPool2D):
        kh, kw, sh, sw, ph, pw = step._args()
        am = scratch.get(f"am{id(step)}", tuple(y.shape), np.int32)
        if ph or pw:
            dev.maxpool2d_padded(xv, kh, kw, sh, sw, ph, pw, out=y, argmax=am)
        else:
            dev.maxpool2d(xv, kh, kw, sh, sw, out=y, argmax=am)
    elif isinstance(step, AvgPool2D):
        dev.avgpool2d(xv, *step._args(), out=y)
    elif isinstance(step, GlobalAvgPool2D):
        _, c, h, w = xv.shape
        dev.avgpool2d(xv, h, w, 1, 1, 0, 0, out=dev.reshape(y, (rows, c, 1, 1)))
    elif step.kind == "softmax" and layout == NMAJOR:
        # softmax couples the features: over each candidate's own k
        k = out_shape[0]
        y = dev.activation("softmax", dev.reshape(x, (n * P, k)),
                           out=dev.reshape(y, (n * P, k)))
    else:   # an activation layer that no step absorbed
        dev.activation(step.kind, xv, out=y)
    if layout == PMAJOR:
        return dev.reshape(y, lead + out_shape), layout
    return dev.reshape(y, (n,) + fold(out_shape)), layout


def _dropout(dev, step, x, layout, scratch, P, n, p0):
    """Dropout in training mode, each candidate its own mask: candidate ``p0 + p``
    draws the key of the layer's ``passes + p0 + p``-th pass, the mask P single
    forward passes in a row would draw (the caller advances ``passes`` by P)."""
    if step.p == 0.0:
        return x, layout
    x = _to_pmajor(dev, x, layout, scratch, P, n, step.input_shape, name=f"in{id(step)}")
    y = scratch.get(f"y{id(step)}", (P, n) + tuple(step.output_shape))
    for p in range(P):
        dev.dropout(_row(dev, x, p), step.p, dropout_key(step.seed, step.passes + p0 + p),
                    out=_row(dev, y, p))
    return y, PMAJOR


def _residual(dev, step, x, layout, params, scratch, P, n, p0):
    """A residual block on candidate-major blocks: its input made ``(P, n, ...)``
    (the branch and the shortcut both read it), the branch's and the shortcut's
    steps run as the chain's own, then ``act(branch + shortcut)`` in one call."""
    x = _to_pmajor(dev, x, layout, scratch, P, n, step.input_shape, name=f"in{id(step)}")
    prefix = {id(layer): pre for pre, layer in step._named}

    def run(steps, h):
        lay = PMAJOR
        for sub in steps:
            pre = prefix[id(sub)] + "."
            sub_params = {k[len(pre):]: v for k, v in params.items() if k.startswith(pre)}
            h, lay = _run_step(dev, sub, h, lay, sub_params, scratch, P, n, p0)
        return _to_pmajor(dev, h, lay, scratch, P, n, step.output_shape, name=f"out{id(steps)}")

    h = run(step._branch_steps, x)
    s = run(step._shortcut_steps, x) if step._shortcut_steps else x
    y = scratch.get(f"y{id(step)}", (P, n) + tuple(step.output_shape))
    dev.add_activation(h, s, step.activation, out=y)
    return y, PMAJOR


def _run_step(dev, step, x, layout, params, scratch, P, n, p0):
    """One step over candidates ``p0 .. p0 + P`` of the call: ``(output, its layout)``."""
    if isinstance(step, Residual):
        return _residual(dev, step, x, layout, params, scratch, P, n, p0)
    if isinstance(step, Dropout):
        return _dropout(dev, step, x, layout, scratch, P, n, p0)
    if step.params:
        fn = _dense if isinstance(step, Dense) else (
            _conv if isinstance(step, Conv2D) else _batchnorm)
        return fn(dev, step, x, layout, params, scratch, P, n)
    return _weightless(dev, step, x, layout, scratch, P, n)


def _forward(rt, dev, xb, params, scratch, P, n, p0=0):
    """The logits of every candidate, ``(P, n, k)``, or ``(n, k)`` for a network without
    parameters (every candidate the same)."""
    x, layout = xb, SHARED
    for step in rt.steps:
        x, layout = _run_step(dev, step, x, layout, params.get(id(step)), scratch, P, n, p0)
    if layout == SHARED:
        return x
    return _to_pmajor(dev, x, layout, scratch, P, n, (rt.n_outputs,))


def population_loss(rt, W, X, y, sample_weight=None):
    """The training-mode loss on all of host ``X`` of each row of ``W``.

    Parameters
    ----------
    rt : Runtime
        Its steps all on one device and of the kinds :func:`unsupported_reason` accepts.
    W : ndarray (P, n_params) float32
        Flat weight vectors laid out as :meth:`Runtime.flat_weights`.
    X : host array (n, *input_shape)
    y : host targets as the loss takes them
    sample_weight : host array (n,) or None

    Returns
    -------
    losses : ndarray (P,) float64
        Each the loss of one batch holding all of ``X`` (mean over the
        samples, weighted as the loss weighs them).
    """
    dev = rt.steps[0].device
    n_total, P_total = X.shape[0], W.shape[0]
    p_step = chunk_candidates(rt.steps, n_total, P_total)
    out = np.empty(P_total, dtype=np.float64)
    for p0 in range(0, P_total, p_step):
        p1 = min(P_total, p0 + p_step)
        out[p0:p1] = _pass(rt, dev, W[p0:p1], X, y, sample_weight, p0)
    for step in walk(rt.steps):
        if isinstance(step, Dropout) and step.p > 0.0:
            step.passes += P_total      # as P single training passes would have
    return out


def _pass(rt, dev, W, X, y, sample_weight, p0):
    P, n_total = W.shape[0], X.shape[0]
    params = _stacked_params(rt, W, dev)
    scratch = _Scratch.of(rt, dev)
    totals = dev.zeros((P,))
    step_n = chunk_images(rt.steps, n_total, P)
    loss_fn = getattr(dev, rt.loss.op)
    for i0 in range(0, n_total, step_n):
        i1 = min(n_total, i0 + step_n)
        n = i1 - i0
        idx = slice(i0, i1)
        xb = dev.gather_rows(X, idx)
        yb = dev.asarray(y[idx], dtype=y.dtype)
        wb = None if sample_weight is None else dev.asarray(sample_weight[idx])
        logits = _forward(rt, dev, xb, params, scratch, P, n, p0)
        grad = scratch.get("dlogits", (n, rt.n_outputs))
        for p in range(P):
            lp = logits if len(logits.shape) == 2 else _row(dev, logits, p)
            loss, _ = loss_fn(lp, yb, wb, grad_out=grad)
            # the loss is a mean over the chunk: weigh it by the chunk's share
            dev.axpy(n / n_total, loss, dev.batch_slice(totals, p, p + 1))
    return dev.to_host(totals).astype(np.float64)


__all__ = ["population_loss", "unsupported_reason", "chunk_images", "chunk_candidates",
           "CHUNK_BYTES"]
