"""Pixel-wise knowledge distillation: KL from the teacher's softmax."""
from __future__ import annotations

from torch import Tensor

from mmseg.registry import MODELS

from ..precision import in_float32
from .named_loss import NamedLoss


@in_float32
def pixel_kd(student_logits: Tensor, teacher_prob: Tensor, temperature: float = 1.0,
             valid: Tensor | None = None) -> Tensor:
    """T²·KL(q ‖ p_s) per valid pixel, averaged.

    q: the teacher's probabilities at temperature T (for an ensemble, the
    mean of the members' softmax(z_m / T)), (B, C, H, W); p_s =
    softmax(z_s / T) of the student's logits (Hinton et al., "Distilling the
    Knowledge in a Neural Network", 2015; per pixel as in Liu et al.,
    "Structured Knowledge Distillation for Semantic Segmentation", CVPR
    2019). KL(q ‖ p) = Σ_c q_c (log q_c − log p_c), with 0·log 0 = 0; it is
    0 when the student equals the teacher. T² keeps the gradient scale
    independent of T. Computed in (at least) float32.
    """
    if student_logits.shape != teacher_prob.shape:
        raise ValueError(f'student logits {tuple(student_logits.shape)} and '
                         f'teacher probabilities {tuple(teacher_prob.shape)} differ')
    log_student = (student_logits / temperature).log_softmax(1)
    log_teacher = teacher_prob.clamp_min(1e-38).log()
    kl = (teacher_prob * (log_teacher - log_student)).sum(1)
    if valid is None:
        return temperature ** 2 * kl.mean()
    return temperature ** 2 * (kl * valid).sum() / valid.sum().clamp(min=1)


@MODELS.register_module()
class PixelKDLoss(NamedLoss):
    """See :func:`pixel_kd`.

    Args:
        temperature: T.
        loss_weight: multiplies the loss.
        loss_name: key in the loss dict.
    """

    def __init__(self, temperature: float = 1.0, loss_weight: float = 1.0,
                 loss_name: str = 'loss_kd') -> None:
        super().__init__(loss_weight, loss_name)
        if temperature <= 0:
            raise ValueError(f'temperature must be positive, got {temperature}')
        self.temperature = temperature

    def forward(self, student_logits: Tensor, teacher_prob: Tensor,
                valid: Tensor | None = None) -> Tensor:
        return self.loss_weight * pixel_kd(student_logits, teacher_prob,
                                           self.temperature, valid)
