"""Feature mimicking: MSE between adapted student and teacher features."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mmseg.registry import MODELS

from .named_loss import NamedLoss


@MODELS.register_module()
class FeatureMimicLoss(NamedLoss):
    """L = mean (A(f_s) − f_t)² (Romero et al., "FitNets", ICLR 2015), with
    A a learnt 1x1 conv when the channels differ (identity otherwise) and
    f_s resized bilinearly to f_t's size. For an ensemble, f_t is the mean of
    the members' features (which must then have equal channels).

    Args:
        student_channels: channels of f_s.
        teacher_channels: channels of f_t.
        loss_weight: multiplies the loss.
        loss_name: key in the loss dict.
    """

    def __init__(self, student_channels: int, teacher_channels: int,
                 loss_weight: float = 1.0, loss_name: str = 'loss_mimic') -> None:
        super().__init__(loss_weight, loss_name)
        self.adapter = (nn.Identity() if student_channels == teacher_channels
                        else nn.Conv2d(student_channels, teacher_channels, 1))
        self.teacher_channels = teacher_channels

    def forward(self, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        if teacher_feature.shape[1] != self.teacher_channels:
            raise ValueError(f'teacher features have {teacher_feature.shape[1]} '
                             f'channels, the loss was built for {self.teacher_channels}')
        adapted = self.adapter(student_feature)
        if adapted.shape[2:] != teacher_feature.shape[2:]:
            adapted = F.interpolate(adapted, size=teacher_feature.shape[2:],
                                    mode='bilinear', align_corners=False)
        return self.loss_weight * F.mse_loss(adapted, teacher_feature)
