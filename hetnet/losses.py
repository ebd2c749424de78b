"""Losses: each is fused with the output non-linearity it implies."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Loss:
    name: str
    op: str           # device operation computing (loss, dlogits)
    output: str       # activation turning logits into predictions
    classification: bool


LOSSES = {
    "cross_entropy": Loss("cross_entropy", "softmax_cross_entropy", "softmax", True),
    "binary_cross_entropy": Loss("binary_cross_entropy", "sigmoid_binary_cross_entropy",
                                 "sigmoid", True),
    "mse": Loss("mse", "mse", "identity", False),
    "mae": Loss("mae", "mae", "identity", False),
}


def get_loss(name: str) -> Loss:
    """The :class:`Loss` called ``name`` (a key of ``LOSSES``)."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}") from None
