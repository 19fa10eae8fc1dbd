"""Class prototypes in feature space (ProDA): their statistics and use.

Zhang et al., "Prototypical Pseudo Label Denoising and Target Structure
Learning for Domain Adaptive Semantic Segmentation", CVPR 2021.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: logit given to classes that have no prototype yet: their softmax weight is
#: 0 to float precision, yet every log stays finite (no 0·(−inf) = NaN)
_ABSENT = -1e4


def class_feature_sums(feature: Tensor, label: Tensor, num_classes: int,
                       valid: Tensor | None = None,
                       per_image: bool = False) -> tuple[Tensor, Tensor]:
    """Per-class sums of feature vectors and pixel counts.

    Args:
        feature: (B, F, h, w).
        label: (B, h, w) class indices.
        valid: (B, h, w) bool, pixels to count (default all).
        per_image: keep the images apart.
    Returns:
        sums (K, F) and counts (K,), or (B, K, F) and (B, K) per image, all
        float64 so that sums over many pixels and ranks add up exactly
        enough.
    """
    if feature.shape[:1] + feature.shape[2:] != label.shape:
        raise ValueError(f'class_feature_sums: features {tuple(feature.shape)} and '
                         f'labels {tuple(label.shape)} differ in batch or size')
    b, channels = feature.shape[:2]
    f = feature.detach().permute(0, 2, 3, 1).reshape(-1, channels).double()
    k = label.reshape(-1).long()
    keep = (k >= 0) & (k < num_classes)
    if valid is not None:
        keep &= valid.reshape(-1)
    groups = b * num_classes if per_image else num_classes
    if per_image:  # one group per (image, class)
        image = torch.arange(b, device=k.device).repeat_interleave(k.numel() // b)
        k = image * num_classes + k
    f, k = f[keep], k[keep]
    sums = f.new_zeros(groups, channels).index_add_(0, k, f)
    counts = f.new_zeros(groups).index_add_(0, k, torch.ones_like(k, dtype=f.dtype))
    if per_image:
        return sums.view(b, num_classes, channels), counts.view(b, num_classes)
    return sums, counts


def ema_prototypes(prototypes: Tensor, initialised: Tensor, sums: Tensor,
                   counts: Tensor, decay: float, min_count: float = 0) -> Tensor:
    """η_k ← λ·η_k + (1 − λ)·η'_k in place, η'_k = sums_k / counts_k a class
    mean, for each class with at least ``min_count`` pixels (and at least
    one); the others are left untouched, and a class seen for the first
    time takes the mean. With per-image sums (N, K, F) and counts (N, K)
    the images update one after the other (ProDA: one update per image and
    class, classes under 10 pixels skipped).

    Returns the number of updates each class received (K,), new ones
    included.
    """
    if sums.dim() == 3:
        return sum(ema_prototypes(prototypes, initialised, s, c, decay, min_count)
                   for s, c in zip(sums, counts))
    present = (counts > 0) & (counts >= min_count)
    if not present.any():
        return torch.zeros_like(counts)
    mean = (sums[present] / counts[present, None]).to(prototypes.dtype)
    fresh = present & ~initialised
    old = present & initialised
    prototypes[fresh] = mean[fresh[present]]
    prototypes[old] = decay * prototypes[old] + (1 - decay) * mean[old[present]]
    initialised |= present
    return present.to(counts.dtype)


def prototype_logits(feature: Tensor, prototypes: Tensor, initialised: Tensor,
                     temperature: float = 1.0, normalise: bool = False) -> Tensor:
    """−‖f − η_k‖ / τ for every pixel and class, (B, K, h, w); classes
    without a prototype get a large negative logit. Its softmax over k is
    ProDA's rectification weight ω and soft prototypical assignment z.

    ``normalise``: distances between the L2-normalised f and η_k instead,
    ‖f̂ − η̂_k‖ = √(2 − 2 cos(f, η_k)) ∈ [0, 2], a scale that does not grow
    with the features' norm (which on raw features makes the softmax at
    τ = 1 nearly one-hot)."""
    if feature.shape[1] != prototypes.shape[1]:
        raise ValueError(f'prototype_logits: the features have {feature.shape[1]} '
                         f'channels, the prototypes {prototypes.shape[1]}; they '
                         f'must come from the same layer of the same model')
    # at least float32, and outside autocast: the expanded squared distance
    # ‖f‖² − 2 f·η + ‖η‖² cancels, which half precision cannot afford
    f = feature.to(torch.promote_types(feature.dtype, torch.float32))
    eta = prototypes.to(f)
    if normalise:
        f = F.normalize(f, dim=1)
        eta = F.normalize(eta, dim=1)
    with torch.autocast(f.device.type, enabled=False):
        squared = ((f * f).sum(1, keepdim=True)
                   - 2 * torch.einsum('bfhw,kf->bkhw', f, eta)
                   + (eta * eta).sum(1)[None, :, None, None])
    # clamp: rounding makes tiny negatives, and sqrt has no gradient at 0
    logits = -squared.clamp_min(1e-12).sqrt() / temperature
    return logits.masked_fill(~initialised.to(f.device)[None, :, None, None], _ABSENT)


class PrototypeBank(nn.Module):
    """What ProDA keeps beside the network: the class prototypes η (K, F)
    (buffer ``prototypes``), which of them exist yet (``initialised``), and
    the momentum copy of the network whose features they average
    (``momentum_network``). A frozen child of
    :class:`~mmseg_uncert.models.segmentors.ProDASegmentor`, built with it:
    it moves with the model, gets no gradient, no optimizer state and no DDP
    synchronisation, and stays out of the model's state_dict.
    :class:`~mmseg_uncert.engine.PrototypeHook` restarts it before training,
    updates it after each step and checkpoints it.
    """

    def __init__(self, num_classes: int, channels: int,
                 momentum_network: nn.Module) -> None:
        super().__init__()
        self.register_buffer('prototypes', torch.zeros(num_classes, channels))
        self.register_buffer('initialised', torch.zeros(num_classes, dtype=torch.bool))
        self.momentum_network = momentum_network
        #: (feature, label, valid) of the latest target batch, for the hook
        self.pending: tuple[Tensor, Tensor, Tensor] | None = None
        #: set by :meth:`restart`: the momentum network is the model's copy
        self.started = False

    @property
    def num_classes(self) -> int:
        return self.prototypes.shape[0]

    def restart(self, network: nn.Module, momentum: float) -> None:
        """Forget every prototype and make the momentum network (an mmengine
        ``ExponentialMovingAverage``) a copy of ``network`` that moves
        towards it by 1 − ``momentum`` per update."""
        self.momentum_network.module.load_state_dict(network.state_dict())
        self.momentum_network.momentum = 1.0 - momentum
        self.prototypes.zero_()
        self.initialised.zero_()
        self.pending = None
        self.started = True

    def logits(self, feature: Tensor, temperature: float,
               normalise: bool = False) -> Tensor:
        return prototype_logits(feature, self.prototypes, self.initialised,
                                temperature, normalise)
