"""How a global mini-batch is split across ranks of unequal speed.

Pure functions of their arguments: every rank calls them on the same
(all-gathered) figures and so computes the same split without another
message.  A rank's gradient is then weighted by its share of the batch
(:func:`share_weights`), so the weighted sum over ranks is the mean over the
whole batch whatever the split.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def split_batch(total: int, weights: ArrayLike, minimum: int = 1) -> NDArray[np.int64]:
    """Integer shares of ``total`` samples proportional to ``weights``.

    Parameters
    ----------
    total : int
        Samples to share out (the global batch), at least 0.
    weights : sequence of float, (k,)
        Relative speed of each rank (samples per second, or any positive
        multiple); finite and positive.
    minimum : int
        Every rank gets at least this many samples when ``total`` allows it
        (``total >= minimum * k``); otherwise the ``total`` ranks with the
        largest weights get one each (ties to the lower rank) and the rest
        none.

    Returns
    -------
    numpy.ndarray of int64, (k,)
        Shares summing to exactly ``total``: each the floor of its quota
        ``total * w_r / sum(w)``, the leftover samples given one each by the
        largest fractional parts (ties to the lower rank), ranks whose quota
        falls below ``minimum`` raised to it and the rest shared again among
        the others.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"weights must be a non-empty 1-D sequence, got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"weights must be finite and positive, got {w.tolist()}")
    total = int(total)
    minimum = int(minimum)
    if total < 0:
        raise ValueError(f"total must be at least 0, got {total}")
    if minimum < 0:
        raise ValueError(f"minimum must be at least 0, got {minimum}")
    k = w.size
    shares = np.zeros(k, dtype=np.int64)
    if total < minimum * k:
        # too few samples for everyone: one each to the fastest
        order = np.lexsort((np.arange(k), -w))
        shares[order[:total]] = 1
        return shares
    fixed = np.zeros(k, dtype=bool)
    while True:
        free = ~fixed
        quota = (total - minimum * fixed.sum()) * w / w[free].sum()
        low = free & (quota < minimum)
        if not low.any():
            break
        fixed |= low
    shares[fixed] = minimum
    shares[~fixed] = _largest_remainder(total - minimum * int(fixed.sum()), w[~fixed])
    return shares


def _largest_remainder(total, w):
    quota = total * w / w.sum()
    shares = np.floor(quota).astype(np.int64)
    left = total - int(shares.sum())
    if left:
        # fractional parts, largest first, ties to the lower index
        order = np.lexsort((np.arange(w.size), -(quota - shares)))
        shares[order[:left]] += 1
    return shares


def measured_speeds(shares: ArrayLike, compute_s: ArrayLike) -> NDArray[np.float64]:
    """Samples per second of each rank: ``shares / compute_s``, ``(k,)``
    float64.  A rank with no share or no measured time is given the median
    speed of the others (all 1.0 when none was measured).

    Parameters
    ----------
    shares : sequence of int, (k,)
        Samples each rank computed (per step, or in all over a window).
    compute_s : sequence of float, (k,)
        Seconds each rank spent computing them (forward and backward, not
        waiting for the others).
    """
    n = np.asarray(shares, dtype=np.float64)
    t = np.asarray(compute_s, dtype=np.float64)
    if n.shape != t.shape or n.ndim != 1:
        raise ValueError(f"shares and compute_s must be 1-D of one length, got shapes "
                         f"{n.shape} and {t.shape}")
    if np.any(n < 0):
        raise ValueError(f"shares must be at least 0, got {n.tolist()}")
    ok = (n > 0) & np.isfinite(t) & (t > 0)
    speed = np.ones_like(n)
    if ok.any():
        speed[ok] = n[ok] / t[ok]
        speed[~ok] = np.median(speed[ok])
    return speed


def rebalance(shares: ArrayLike, compute_s: ArrayLike, total: int | None = None,
              minimum: int = 1) -> NDArray[np.int64]:
    """New shares from how fast each rank got through its old one:
    :func:`split_batch` of ``total`` (default ``sum(shares)``) by
    :func:`measured_speeds`.  ``(k,)`` int64."""
    speed = measured_speeds(shares, compute_s)
    total = int(np.sum(shares)) if total is None else int(total)
    return split_batch(total, speed, minimum)


def share_weights(shares: ArrayLike) -> NDArray[np.float64]:
    """Each rank's weight ``share_r / sum(shares)``: a rank's batch-mean
    gradient times its weight, summed over ranks, is the mean gradient of the
    whole batch.  ``(k,)`` float64."""
    n = np.asarray(shares, dtype=np.float64)
    total = n.sum()
    if total <= 0:
        raise ValueError(f"shares must sum to more than 0, got {n.tolist()}")
    return n / total


def offsets(shares: ArrayLike) -> NDArray[np.int64]:
    """Where each rank's rows start in the global batch: ``(k + 1,)`` int64,
    rank ``r`` taking rows ``offsets[r]:offsets[r + 1]``."""
    return np.concatenate([[0], np.cumsum(np.asarray(shares, dtype=np.int64))])


__all__ = ["split_batch", "measured_speeds", "rebalance", "share_weights", "offsets"]
