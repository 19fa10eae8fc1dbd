"""Ensemble Distribution Distillation (EnD²): a Dirichlet fitted to the members."""
from __future__ import annotations

import torch
from torch import Tensor

from mmseg.models.losses.utils import weight_reduce_loss
from mmseg.registry import MODELS

from ..precision import in_float32
from .named_loss import NamedLoss


@in_float32
def dirichlet_nll(student_logits: Tensor, mean_log_prob: Tensor,
                  valid: Tensor | None = None) -> Tensor:
    """Negative log-likelihood of the members' predictions under the
    student's Dirichlet, per valid pixel, averaged.

    The student's logits z give the concentrations α_c = exp(z_c), α₀ = Σ_c α_c.
    For member predictions π_1..π_M (Malinin, Mlodozeniec & Gales, "Ensemble
    Distribution Distillation", ICLR 2020, eq. 9):

        L = −(1/M) Σ_m ln Dir(π_m | α)
          = −ln Γ(α₀) + Σ_c ln Γ(α_c) − Σ_c (α_c − 1) · (1/M) Σ_m ln π_m,c,

    so the members enter only through their mean log-probabilities
    ``mean_log_prob`` (B, C, H, W), which a streaming teacher can accumulate.
    ``valid`` (B, H, W) selects the pixels averaged over (all when None).
    """
    if student_logits.shape != mean_log_prob.shape:
        raise ValueError(f'student logits {tuple(student_logits.shape)} and the '
                         f"members' mean log-probabilities "
                         f'{tuple(mean_log_prob.shape)} differ')
    # α = exp(z) overflows float32 above z ≈ 88 (see dirichlet_uncertainty)
    log_alpha = student_logits.clamp(max=80.0)
    alpha = log_alpha.exp()
    nll = (torch.lgamma(alpha).sum(1) - torch.lgamma(alpha.sum(1))
           - ((alpha - 1) * mean_log_prob).sum(1))
    if valid is None:
        return nll.mean()
    weight = valid.to(nll.dtype)
    return weight_reduce_loss(nll, weight, reduction='mean',
                              avg_factor=weight.sum().clamp(min=1))


@MODELS.register_module()
class EnsembleDistributionDistillationLoss(NamedLoss):
    """See :func:`dirichlet_nll`: the loss of a
    :class:`~mmseg_uncert.models.decode_heads.DirichletHead` student.

    The members' probabilities are smoothed towards uniform before their
    logarithm, π̃ = (1 − ε)·π + ε/C (EnD²'s "central smoothing"): a member's
    probability of 1e-30 would otherwise weigh as ln 1e-30 = −69 and make
    the fitted concentrations, and the gradients, explode.

    Args:
        smoothing: ε, in [0, 1).
        loss_weight: multiplies the loss.
        loss_name: key in the loss dict.
    """

    def __init__(self, smoothing: float = 1e-4, loss_weight: float = 1.0,
                 loss_name: str = 'loss_end2') -> None:
        super().__init__(loss_weight, loss_name)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f'EnsembleDistributionDistillationLoss: smoothing must '
                             f'lie in [0, 1), got {smoothing}')
        self.smoothing = smoothing

    def log_prob(self, prob: Tensor) -> Tensor:
        """ln π̃ of one member's probabilities (B, C, H, W)."""
        classes = prob.shape[1]
        return ((1.0 - self.smoothing) * prob + self.smoothing / classes).clamp_min(
            1e-38).log()

    def forward(self, student_logits: Tensor, mean_log_prob: Tensor,
                valid: Tensor | None = None) -> Tensor:
        return self.loss_weight * dirichlet_nll(student_logits, mean_log_prob, valid)
