"""Heteroscedastic regression loss (learned loss attenuation)."""
from __future__ import annotations

import torch
from torch import Tensor

from mmseg.registry import MODELS

from ..precision import in_float32
from .named_loss import NamedLoss


@in_float32
def attenuated_regression(pred: Tensor, target: Tensor, log_variance: Tensor,
                          valid: Tensor | None = None) -> Tensor:
    """0.5·exp(−s)·‖y − ŷ‖² + 0.5·s per pixel, averaged over valid pixels.

    The Gaussian negative log-likelihood with a predicted log-variance s
    (constant dropped): a pixel the network calls noisy (large s) costs less
    for its residual and pays 0.5·s for the claim (Kendall & Gal, NeurIPS
    2017, eq. 8). For depth-style regression heads.

    Args:
        pred: ŷ, (B, D, H, W).
        target: y, (B, D, H, W).
        log_variance: s, (B, 1, H, W).
        valid: (B, H, W) mask of pixels with a target; all when None.
    """
    if pred.shape != target.shape:
        raise ValueError(f'pred {tuple(pred.shape)} and target '
                         f'{tuple(target.shape)} differ in shape')
    squared = (target - pred).pow(2).sum(1)
    s = log_variance[:, 0]
    per_pixel = 0.5 * torch.exp(-s) * squared + 0.5 * s
    if valid is None:
        return per_pixel.mean()
    return (per_pixel * valid).sum() / valid.sum().clamp(min=1)


@MODELS.register_module()
class AttenuatedRegressionLoss(NamedLoss):
    """See :func:`attenuated_regression`; ``loss_weight`` multiplies it."""

    def __init__(self, loss_weight: float = 1.0,
                 loss_name: str = 'loss_att_reg') -> None:
        super().__init__(loss_weight, loss_name)

    def forward(self, pred: Tensor, target: Tensor, log_variance: Tensor,
                valid: Tensor | None = None) -> Tensor:
        return self.loss_weight * attenuated_regression(pred, target,
                                                        log_variance, valid)

