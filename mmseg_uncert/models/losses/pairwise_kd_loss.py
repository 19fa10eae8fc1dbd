"""Pair-wise (structured) distillation of feature affinities."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmseg.registry import MODELS

from ..precision import in_float32
from .named_loss import NamedLoss


@in_float32
def affinity(feature: Tensor, grid: tuple[int, int]) -> Tensor:
    """Cosine-similarity matrix (B, N, N) of the nodes of a feature map
    max-pooled to ``grid`` (N = grid[0]·grid[1] nodes), in (at least)
    float32."""
    nodes = F.adaptive_max_pool2d(feature, grid).flatten(2)  # (B, F, N)
    nodes = F.normalize(nodes, dim=1)
    return nodes.transpose(1, 2) @ nodes


@MODELS.register_module()
class PairwiseKDLoss(NamedLoss):
    """Liu et al., "Structured Knowledge Distillation for Semantic
    Segmentation", CVPR 2019 (pair-wise term).

    Both feature maps are max-pooled to the same grid of N nodes, each
    node's feature vector is L2-normalised, and the node-by-node
    cosine-similarity matrices are compared:

        L = (1/N²) Σ_ij (a^s_ij − a^t_ij)²,

    averaged over the batch. Normalising makes it invariant to the scale of
    either feature map; student and teacher may have different channels.
    For an ensemble the teacher's matrix is the mean of the members'.

    Args:
        pool_ratio: the grid is the student's feature size times this
            (at least 1x1); Liu et al. pool to about 1/2 of the feature map.
        loss_weight: multiplies the loss.
        loss_name: key in the loss dict.
    """

    def __init__(self, pool_ratio: float = 0.5, loss_weight: float = 1.0,
                 loss_name: str = 'loss_pairwise') -> None:
        super().__init__(loss_weight, loss_name)
        if not 0 < pool_ratio <= 1:
            raise ValueError(f'pool_ratio must be in (0, 1], got {pool_ratio}')
        self.pool_ratio = pool_ratio

    def grid(self, student_feature: Tensor) -> tuple[int, int]:
        h, w = student_feature.shape[2:]
        return (max(1, round(h * self.pool_ratio)), max(1, round(w * self.pool_ratio)))

    def forward(self, student_feature: Tensor, teacher_affinity: Tensor) -> Tensor:
        """``teacher_affinity``: (B, N, N), from :func:`affinity` on the
        teacher's features with ``grid(student_feature)``."""
        student = affinity(student_feature, self.grid(student_feature))
        if student.shape != teacher_affinity.shape:
            raise ValueError(f'student affinity {tuple(student.shape)} and teacher '
                             f'affinity {tuple(teacher_affinity.shape)} differ')
        n = student.shape[-1]
        return self.loss_weight * ((student - teacher_affinity) ** 2).sum((1, 2)).mean() / n ** 2
