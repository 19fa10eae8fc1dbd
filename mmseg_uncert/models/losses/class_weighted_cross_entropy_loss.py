"""Cross-entropy with per-class weights that accepts ignored pixels."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mmseg.models.losses.utils import weight_reduce_loss
from mmseg.registry import MODELS

from ..precision import in_float32
from .named_loss import NamedLoss


@MODELS.register_module()
class ClassWeightedCrossEntropyLoss(NamedLoss):
    """L = Σ_i w_{y_i} · CE_i / Σ_i w_{y_i} over the pixels i whose label y_i
    is not ``ignore_index``: PyTorch's weighted mean cross-entropy, the loss
    of ENet-style class balancing (Paszke et al., "ENet", 2016, weights
    w_c = 1 / ln(1.02 + f_c) from the class frequencies f_c).

    Why not mmseg's ``CrossEntropyLoss(class_weight=...)``: in mmseg 1.2.2 its
    mean reduction indexes the class weights with every label, the ignored
    ones included, and stops with an IndexError on the first pixel labelled
    255 (any crop with padding, any pasted ignore region).

    Reduced with mmseg's ``weight_reduce_loss`` and ``avg_factor`` = the sum
    of the weights of the valid pixels; computed in (at least) float32.

    Args:
        class_weight: one weight per class.
        loss_weight: multiplies the loss.
        loss_name: key in the loss dict.
    """

    def __init__(self, class_weight: Sequence[float], loss_weight: float = 1.0,
                 loss_name: str = 'loss_ce') -> None:
        super().__init__(loss_weight, loss_name)
        weight = torch.as_tensor(class_weight, dtype=torch.float32)
        if weight.dim() != 1 or len(weight) == 0 or (weight < 0).any():
            raise ValueError(f'ClassWeightedCrossEntropyLoss: class_weight must be a '
                             f'non-empty list of non-negative numbers, got {class_weight}')
        self.register_buffer('class_weight', weight, persistent=False)

    @in_float32
    def forward(self, cls_score: Tensor, label: Tensor, weight: Tensor | None = None,
                ignore_index: int = 255, **kwargs) -> Tensor:
        """``cls_score`` (B, C, H, W) logits, ``label`` (B, H, W); ``weight``
        optional per-pixel weights (mmseg's sampler weights)."""
        if cls_score.shape[1] != len(self.class_weight):
            raise ValueError(f'ClassWeightedCrossEntropyLoss: {len(self.class_weight)} '
                             f'class weights for {cls_score.shape[1]} classes')
        valid = label != ignore_index
        per_class = self.class_weight.to(cls_score.device)
        pixel_weight = per_class[label.masked_fill(~valid, 0)] * valid
        if weight is not None:
            pixel_weight = pixel_weight * weight.float()
        loss = F.cross_entropy(cls_score, label, reduction='none', ignore_index=ignore_index)
        # avg_factor 0 (no valid pixel): the sum, 0, keeps a gradient path
        avg_factor = pixel_weight.sum().clamp(min=1e-12)
        return self.loss_weight * weight_reduce_loss(
            loss, weight=pixel_weight, reduction='mean', avg_factor=avg_factor)
