"""The fit loop's end-of-epoch check: finite weights and loss, or an error
that names the likely cause (a hyper-parameter, a schedule, the data).

The check costs no read from a device: :func:`fold_weights` adds ``0 *
sum(w^2)`` over every parameter to the epoch's loss sum on each device
before the fit loop reads it.  That adds exactly zero while every weight
is finite and its square representable, and turns the sum into NaN when a
weight is NaN or infinite or has exploded past ~1.8e19 (its square
overflows float32); :func:`check_epoch` then reads the weights for the
message.
"""

import math

import numpy as np

from .._validation import all_finite


def _params(model):
    def tree(layers):
        for layer in layers:
            yield layer
            yield from tree(getattr(layer, "sublayers", ()))
    for layer in tree(model.layers):
        for group in (layer.params, layer.state):
            for a in group.values():
                yield layer.device, a


def fold_weights(model, totals):
    """Add ``0 * sum(w^2)`` of every parameter and state array to the
    ``(1,)`` device sums ``totals`` (device -> array) of the epoch's loss."""
    scratch = {}
    with np.errstate(over="ignore"):       # an overflowing square is the signal
        _fold(model, totals, scratch)


def _fold(model, totals, scratch):
    for dev, a in _params(model):
        if dev not in totals:
            continue          # a device without the loss: its weights show in the next epoch's loss
        first = dev not in scratch
        if first:
            scratch[dev] = dev.zeros((1,))
        dev.sum_squares(a, out=scratch[dev], accumulate=not first)
    for dev, s in scratch.items():
        dev.axpy(0.0, s, totals[dev])


def check_epoch(model, epoch, epoch_loss, X=None):
    """Raise :class:`FloatingPointError` when the loss of epoch ``epoch``
    (0-based; folded with the weights by :func:`fold_weights`) is NaN or
    infinite, saying what went wrong and why it probably happened."""
    if math.isfinite(epoch_loss):
        return
    weights = model.get_weights()
    bad = [i for i, w in enumerate(weights) if not all_finite(np.asarray(w))]
    peak = max((float(np.max(np.abs(w))) for w in weights if w.size and all_finite(w)),
               default=0.0)
    if bad:
        what = f"{len(bad)} of the {len(weights)} weight arrays hold NaN or infinity"
    elif peak > 1e18:
        what = f"a weight reached |w| = {peak:.3g}"
    else:
        what = "the loss is not finite"
    raise FloatingPointError(f"training diverged in epoch {epoch + 1}: {what}; "
                             f"{_likely_cause(model, X)}")


def _likely_cause(model, X):
    opt = model.optimizer
    lr = getattr(opt, "lr", None)
    if lr is not None and lr > 10:
        return (f"the learning rate is {lr:g} (optimizer {opt!r}); lower it, or check the "
                "lr_schedule")
    if X is not None and X.size:
        peak = float(np.max(np.abs(X)))
        if peak > 1e4:
            return (f"the inputs reach |x| = {peak:.3g}; scale them (e.g. standardise, or divide "
                    "images by 255)")
    return f"lower the learning rate or set clip_norm (optimizer {opt!r})"


__all__ = ["fold_weights", "check_epoch"]
