"""Symmetric cross-entropy: a loss for learning from noisy (pseudo-)labels."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from mmseg.registry import MODELS

from ..precision import in_float32
from .named_loss import NamedLoss


@in_float32
def symmetric_cross_entropy(logits: Tensor, label: Tensor, alpha: float = 0.1,
                            beta: float = 1.0, ignore_index: int = 255,
                            clamp: float = 1e-4) -> Tensor:
    """α·CE(p, y) + β·RCE(p, y), averaged over the pixels whose label is not
    ``ignore_index``.

    CE = −log p_y; the reverse cross-entropy swaps the roles of prediction
    and label, RCE = −Σ_c p_c log clamp(onehot(y)_c, A, 1) with A = ``clamp``
    (log 0 is undefined), which is −log A · (1 − p_y): bounded, so a wrong
    label cannot pull as hard as under CE (Wang et al., "Symmetric Cross
    Entropy for Robust Learning with Noisy Labels", ICCV 2019; used on
    target pseudo-labels by ProDA, Zhang et al., CVPR 2021, with α = 0.1,
    β = 1).

    Args:
        logits: (B, C, H, W).
        label: (B, H, W) class indices or ``ignore_index``.
    Returns:
        the mean over valid pixels (0 with a gradient path when none is valid).
    """
    if logits.dim() != 4 or label.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f'symmetric_cross_entropy: logits (B, C, H, W) and '
                         f'labels (B, H, W) expected, got {tuple(logits.shape)} '
                         f'and {tuple(label.shape)}')
    valid = label != ignore_index
    safe = torch.where(valid, label, torch.zeros_like(label)).long()
    log_p = logits.log_softmax(1)
    log_p_y = log_p.gather(1, safe[:, None])[:, 0]
    ce = -log_p_y
    rce = -math.log(clamp) * (1.0 - log_p_y.exp())
    per_pixel = (alpha * ce + beta * rce) * valid
    return per_pixel.sum() / valid.sum().clamp(min=1)


@MODELS.register_module()
class SymmetricCrossEntropyLoss(NamedLoss):
    """See :func:`symmetric_cross_entropy`.

    Args:
        alpha: weight of the cross-entropy term.
        beta: weight of the reverse cross-entropy term.
        clamp: the lower bound A that replaces log 0 in the one-hot label.
        ignore_index: label value of pixels left out.
        loss_weight: multiplies the loss.
        loss_name: key in the loss dict.
    """

    def __init__(self, alpha: float = 0.1, beta: float = 1.0, clamp: float = 1e-4,
                 ignore_index: int = 255, loss_weight: float = 1.0,
                 loss_name: str = 'loss_sce') -> None:
        super().__init__(loss_weight, loss_name)
        if not 0.0 < clamp < 1.0:
            raise ValueError(f'SymmetricCrossEntropyLoss: clamp must lie in (0, 1), '
                             f'got {clamp}')
        self.alpha, self.beta, self.clamp = alpha, beta, clamp
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, label: Tensor) -> Tensor:
        return self.loss_weight * symmetric_cross_entropy(
            logits, label, self.alpha, self.beta, self.ignore_index, self.clamp)
