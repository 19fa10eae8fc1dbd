"""Heteroscedastic (attenuated) cross-entropy of Kendall & Gal (2017)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from mmseg.registry import MODELS

from ..precision import in_float32
from .named_loss import NamedLoss


@in_float32
def attenuated_cross_entropy(logits: Tensor,
                             log_variance: Tensor,
                             label: Tensor,
                             num_samples: int = 10,
                             ignore_index: int = 255,
                             noise: Tensor | None = None) -> Tensor:
    """MC-sampled softmax likelihood under Gaussian logit noise, per valid pixel.

    x_t = f + exp(s/2)·ε_t with ε_t ~ N(0, I), t = 1..T, and

        L = −log (1/T) Σ_t softmax(x_t)_y
          = −(logsumexp_t log_softmax(x_t)_y − log T),

    averaged over the pixels whose label is not ``ignore_index`` (Kendall &
    Gal, "What Uncertainties Do We Need in Bayesian Deep Learning for
    Computer Vision?", NeurIPS 2017, eq. 12). Computed with log-softmax and
    logsumexp, so it is finite for any logits. As s → −∞ it is the
    cross-entropy of f. Computed in (at least) float32 under mixed
    precision.

    Args:
        logits: f, (B, C, H, W).
        log_variance: s, (B, 1, H, W) (one variance per pixel) or (B, C, H, W).
        label: (B, H, W) class indices.
        num_samples: T.
        ignore_index: label left out.
        noise: ε, (T, B, C, H, W); drawn from the global RNG when None.

    Returns:
        The mean over valid pixels (0 with no valid pixel, still attached to
        the graph).
    """
    if log_variance.shape[1] not in (1, logits.shape[1]) or \
            log_variance.shape[2:] != logits.shape[2:]:
        raise ValueError(f'log_variance of shape {tuple(log_variance.shape)} '
                         f'does not fit logits of shape {tuple(logits.shape)}')
    if noise is not None and noise.shape[0] != num_samples:
        raise ValueError(f'noise has {noise.shape[0]} samples, num_samples is '
                         f'{num_samples}')
    valid = label != ignore_index
    target = torch.where(valid, label, 0).long().unsqueeze(1)
    std = torch.exp(0.5 * log_variance)
    log_likelihoods = []
    for t in range(num_samples):
        eps = noise[t] if noise is not None else torch.randn_like(logits)
        sample = logits + std * eps
        log_likelihoods.append(sample.log_softmax(1).gather(1, target)[:, 0])
    per_pixel = -(torch.logsumexp(torch.stack(log_likelihoods), 0)
                  - math.log(num_samples))
    return (per_pixel * valid).sum() / valid.sum().clamp(min=1)


@MODELS.register_module()
class AttenuatedCrossEntropyLoss(NamedLoss):
    """Loss of :class:`~mmseg_uncert.models.decode_heads.HeteroscedasticHead`
    (see :func:`attenuated_cross_entropy`).

    Args:
        num_samples: T, noise samples per pixel.
        loss_weight: multiplies the loss.
        loss_name: key in the loss dict (must start with ``loss_``).
    """

    def __init__(self, num_samples: int = 10, loss_weight: float = 1.0,
                 loss_name: str = 'loss_att_ce') -> None:
        super().__init__(loss_weight, loss_name)
        if num_samples < 1:
            raise ValueError(f'AttenuatedCrossEntropyLoss: num_samples must be '
                             f'>= 1, got {num_samples}')
        self.num_samples = num_samples

    def forward(self, logits: Tensor, label: Tensor, log_variance: Tensor,
                ignore_index: int = 255) -> Tensor:
        return self.loss_weight * attenuated_cross_entropy(
            logits, log_variance, label, self.num_samples, ignore_index)

