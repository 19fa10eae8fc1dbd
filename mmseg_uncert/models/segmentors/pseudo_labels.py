"""Hard pseudo-labels of an unlabelled target batch, for self-training (ProDA)
and for distillation on target images."""
from __future__ import annotations

from typing import NamedTuple

from mmengine.structures import PixelData
from torch import Tensor

from mmseg.structures import SegDataSample
from mmseg.utils import SampleList


class PseudoLabels(NamedTuple):
    """label: (B, H, W), ``ignore_index`` where not kept; keep: (B, H, W) the
    pixels that carry a label; confidence: (B, H, W) the label's score."""

    label: Tensor
    keep: Tensor
    confidence: Tensor


def pseudo_labels(score: Tensor, valid: Tensor, ignore_index: int,
                  threshold: float = 0.0, renormalise: bool = False) -> PseudoLabels:
    """ŷ = argmax_k score_k, kept on the ``valid`` pixels (the image, not the
    batch padding) whose confidence reaches ``threshold`` (0 keeps them all).

    The confidence is max_k score_k, or max_k score_k / Σ_k score_k with
    ``renormalise`` (scores that are not probabilities: ProDA's rectified
    ω_k·p_k). Ties go to the first class, as ``argmax``.
    """
    top, label = score.max(1)
    confidence = top / score.sum(1).clamp_min(1e-12) if renormalise else top
    keep = valid & (confidence >= threshold) if threshold > 0 else valid
    return PseudoLabels(label.masked_fill(~keep, ignore_index), keep, confidence)


def pseudo_labelled_samples(label: Tensor, metas: list[dict]) -> SampleList:
    """Data samples carrying ``label`` (B, H, W) as their ``gt_sem_seg``, for
    a head's own ``loss_by_feat``."""
    return [SegDataSample(metainfo=m, gt_sem_seg=PixelData(data=one[None]))
            for m, one in zip(metas, label)]
