"""Pair-wise (structured) distillation of feature affinities."""
from __future__ import annotations

import math

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

    Both feature maps are max-pooled into the same grid of N nodes, each
    node's feature vector is L2-normalised, and the node-by-node
    cosine-similarity matrices are compared:

        L = (1/N²) Σ_ij (a^s_ij − a^t_ij)²,

    averaged over the batch. A node covers ``node_scale`` of a feature map
    in height and width (a patch of ⌊s·h⌋ × ⌊s·w⌋ cells, at least one), so
    the grid is ⌈h / ⌊s·h⌋⌉ × ⌈w / ⌊s·w⌋⌉ (:meth:`grid`; the distiller takes
    it from its teacher's first member, whose features exist before the
    student runs, and pools the student's map to the same grid): the official
    code's ``pool_scale`` (its max-pool kernel is that fraction of the
    feature map; 0.5, its default, gives 2 × 2 nodes). Smaller values give
    finer nodes; memory and time grow with N² (every cell a node at 1/8 of a
    512x1024 crop: N = 8192, 256 MiB per image and matrix). Normalising makes
    it invariant to the scale of either feature map; student and teacher may
    have different channels. For an ensemble the teacher's matrix is the
    mean of the members'.

    Args:
        node_scale: the fraction of the feature map's height and width a
            node covers, in (0, 1].
        loss_weight: multiplies the loss.
        loss_name: key in the loss dict.
    """

    def __init__(self, node_scale: float = 0.5, loss_weight: float = 1.0,
                 loss_name: str = 'loss_pairwise') -> None:
        super().__init__(loss_weight, loss_name)
        if not 0 < node_scale <= 1:
            raise ValueError(f'PairwiseKDLoss: node_scale must be in (0, 1], got {node_scale}')
        self.node_scale = node_scale

    def grid(self, feature: Tensor) -> tuple[int, int]:
        """Rows and columns of nodes on a (B, F, h, w) feature map."""
        return tuple(math.ceil(n / max(1, int(n * self.node_scale)))
                     for n in feature.shape[2:])

    def forward(self, student_feature: Tensor, teacher_affinity: Tensor,
                grid: tuple[int, int] | None = None) -> Tensor:
        """``teacher_affinity``: (B, N, N), from :func:`affinity` on the
        teacher's features with ``grid`` (by default ``grid(student_feature)``)."""
        student = affinity(student_feature, grid or self.grid(student_feature))
        if student.shape != teacher_affinity.shape:
            raise ValueError(f'student affinity {tuple(student.shape)} and teacher '
                             f'affinity {tuple(teacher_affinity.shape)} differ')
        n = student.shape[-1]
        return self.loss_weight * ((student - teacher_affinity) ** 2).sum((1, 2)).mean() / n ** 2
