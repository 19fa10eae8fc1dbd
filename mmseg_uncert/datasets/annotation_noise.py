"""Known annotation noise and the exact per-pixel label distribution it implies.

The synthetic benchmark's labels are drawn, not given: this module holds the
model they are drawn from, so the true aleatoric uncertainty of every pixel is
known exactly.

Two sources of label noise, both with known parameters:

* **Indistinguishable classes.** A region rendered with one appearance that
  both classes share carries class ``a`` with probability ``q`` and ``b``
  otherwise: its pixels have the prior ``P0(a) = q, P0(b) = 1 - q``. Every
  other pixel has a one-hot prior on its rendered class.
* **Boundary jitter.** Each pixel's annotation is copied from a neighbour at
  an offset ``d`` drawn uniformly from ``{-J..J}²`` (coordinates clamped at the
  image border), so the annotation distribution is the prior averaged over
  the ``(2J+1)²`` window::

      P(c | x) = 1/(2J+1)² · Σ_d P0(c | clamp(x + d))

The true aleatoric uncertainty is the entropy of that distribution,
``H(x) = -Σ_c P(c | x) log P(c | x)`` (nats). It is stored as a 16-bit PNG,
``value = round(10000 · H)`` (so 6931 is ln 2, a fair two-class coin).
"""
from __future__ import annotations

import cv2
import numpy as np

#: Scale of the stored entropy: PNG value = round(ENTROPY_SCALE * nats).
ENTROPY_SCALE = 10000.0


def label_distribution(prior: np.ndarray, jitter: int) -> np.ndarray:
    """Annotation distribution under boundary jitter.

    Args:
        prior: (K, H, W) float prior ``P0`` over K categories (sums to 1).
        jitter: J, the largest offset in pixels (0 means no jitter).

    Returns:
        (K, H, W) float64 ``P(c | x)``: the prior box-filtered over the
        (2J+1)² window with replicated borders (the clamped offsets).
    """
    if jitter < 0:
        raise ValueError(f'jitter must be >= 0, got {jitter}')
    if jitter == 0:
        return prior.astype(np.float64)
    k = 2 * jitter + 1
    out = np.empty(prior.shape, np.float64)
    for c, channel in enumerate(prior):
        out[c] = cv2.blur(channel.astype(np.float64), (k, k),
                          borderType=cv2.BORDER_REPLICATE)
    return out


def entropy(prob: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats over axis 0, with 0 log 0 = 0.

    Only pixels whose distribution is not one-hot are computed: on this data
    most pixels are certain, and their entropy is exactly 0.
    """
    out = np.zeros(prob.shape[1:], np.float64)
    mixed = prob.max(axis=0) < 1.0
    p = prob[:, mixed]
    out[mixed] = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=0)
    return out


def jitter_labels(label: np.ndarray, jitter: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Copy every pixel's label from a uniform random offset in {-J..J}²."""
    if jitter == 0:
        return label.copy()
    h, w = label.shape
    dy = rng.integers(-jitter, jitter + 1, size=(h, w), dtype=np.int32)
    dx = rng.integers(-jitter, jitter + 1, size=(h, w), dtype=np.int32)
    ys = np.clip(np.arange(h)[:, None] + dy, 0, h - 1)
    xs = np.clip(np.arange(w)[None, :] + dx, 0, w - 1)
    return label[ys, xs]


def encode_entropy(h: np.ndarray) -> np.ndarray:
    """Entropy (nats) to the uint16 PNG encoding."""
    return np.round(h * ENTROPY_SCALE).astype(np.uint16)


def decode_entropy(png: np.ndarray) -> np.ndarray:
    """The uint16 PNG encoding back to entropy in nats (float32)."""
    return png.astype(np.float32) / ENTROPY_SCALE
