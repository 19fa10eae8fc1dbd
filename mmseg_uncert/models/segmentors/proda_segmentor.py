"""ProDA: self-training on an unlabelled target domain with prototype-rectified
pseudo-labels and target structure learning."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from mmengine import dist
from mmengine.logging import MessageHub
from mmengine.model import ExponentialMovingAverage
from torch import Tensor, nn

from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptConfigType, SampleList

from ..data_preprocessors import image_mask
from ..decode_heads.head_taps import ClassifierTap
from ..frozen import FrozenChildren
from ..precision import at_least_float32
from ..prototypes import PrototypeBank
from .members import build_member, mmseg_scope
from .slide_inference import model_inference
from .pseudo_labels import pseudo_labels
from .deployment import TrainingWrapper


def strong_view(inputs: Tensor, mean: Tensor, std: Tensor, strength: float = 1.0,
                generator: torch.Generator | None = None) -> Tensor:
    """A photometrically perturbed copy of normalised images, pixel-aligned
    with them: per image a random brightness shift, contrast and saturation
    scale, grey-scale with probability 0.2, Gaussian blur with probability
    0.5 and Gaussian noise (ProDA's strong view is such a colour/blur
    augmentation of the weak one; geometry is left alone so that pseudo-labels
    and prototype assignments of the weak view apply pixel for pixel)."""
    b = inputs.shape[0]
    x = inputs * std + mean  # back to 0..255
    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator, device=x.device, dtype=x.dtype)

    x = x + (rand(b, 1, 1, 1) - 0.5) * 2 * 0.3 * 255 * strength
    grey = x.mean(1, keepdim=True)
    img_mean = grey.mean((2, 3), keepdim=True)
    x = (x - img_mean) * (1 + (rand(b, 1, 1, 1) - 0.5) * 2 * 0.4 * strength) + img_mean
    x = grey + (x - grey) * (1 + (rand(b, 1, 1, 1) - 0.5) * 2 * 0.4 * strength)
    to_grey = rand(b, 1, 1, 1) < 0.2
    x = torch.where(to_grey, x.mean(1, keepdim=True).expand_as(x), x)
    sigma = 0.1 + rand(b) * 1.9
    blur = rand(b) < 0.5
    if blur.any():
        radius = 4
        t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-t[None] ** 2 / (2 * sigma[:, None] ** 2))
        kernel = kernel / kernel.sum(1, keepdim=True)
        c = x.shape[1]
        blurred = []
        for i in range(b):
            k = kernel[i]
            y = F.conv2d(F.pad(x[i:i + 1], (radius, radius, 0, 0), mode='replicate'),
                         k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
            y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode='replicate'),
                         k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
            blurred.append(y)
        x = torch.where(blur[:, None, None, None], torch.cat(blurred), x)
    x = x + torch.randn(x.shape, generator=generator, device=x.device,
                        dtype=x.dtype) * 8.0 * strength
    return (x.clamp(0, 255) - mean) / std


@MODELS.register_module()
class ProDASegmentor(TrainingWrapper, FrozenChildren, EncoderDecoder):
    """Unsupervised domain adaptation by ProDA's stage 1 (Zhang et al.,
    "Prototypical Pseudo Label Denoising and Target Structure Learning for
    Domain Adaptive Semantic Segmentation", CVPR 2021).

    Trained on :class:`~mmseg_uncert.datasets.SourceTargetDataset` batches
    (labelled source, unlabelled target); validated and tested as a plain
    EncoderDecoder, whose keys its checkpoints share. Per iteration:

    * source: the decode head's loss against the labels;
    * target pseudo-labels: the soft prediction p₀ of the frozen warm-up
      model (``pseudo_labeller``: ProDA's fixed soft pseudo-labels, computed
      on the fly for the same crop) on the weak (unaugmented) view, rectified
      by the prototype weights ω_k = softmax_k(−‖f̃ − η_k‖/τ) of the momentum
      network's features f̃: ŷ = argmax_k ω_k·p₀,k (``rectify=False``:
      ŷ = argmax_k p₀,k, plain self-training), optionally only where their
      confidence reaches ``confidence_threshold``, or, with
      ``class_balanced_portion`` (CBST, Zou et al., ECCV 2018; plain
      self-training only), ŷ = argmax_k p₀,k/λ_k kept where that maximum is
      ≥ 1, λ_k the class-balanced thresholds that
      :class:`~mmseg_uncert.engine.ClassBalancedThresholdHook` computes;
    * target: ``target_loss`` (symmetric cross-entropy, α = 0.1, β = 1) of
      the student on the strong view against ŷ; structure learning
      γ₁·KL(z_weak ‖ z_strong) between the prototype assignments
      z = softmax_k(−d(f, η_k)/τ_s) of the momentum network on the weak view
      and of the student on the strong view (γ₁ = 10 in ProDA), with
      d Euclidean on the raw features (ProDA) or on L2-normalised ones
      (``structure_distance='cosine'``), optionally only on pixels whose
      pseudo-label confidence reaches ``structure_confidence`` and with γ₁
      ramped up linearly over ``structure_warmup_iters`` iterations; the
      regulariser γ₂·(−mean_{pixels, k} log p_k) (γ₂ = 0.1), which keeps
      every class alive.

    The warm-up model and, when rectification or structure learning is on,
    the prototypes with the momentum network (a
    :class:`~mmseg_uncert.models.PrototypeBank`, which
    :class:`~mmseg_uncert.engine.PrototypeHook` fills and updates) are frozen
    children (:mod:`~mmseg_uncert.models.frozen`), never saved with the
    model. Target annotations are never read; batch padding is ignored
    everywhere. Every argument: docs/components/proda_segmentor.md.

    Args:
        pseudo_labeller: the warm-up (source-only) model,
            ``dict(config=PATH, checkpoint=PATH)``.
        target_loss: loss of the student against the pseudo-labels.
        rectify: rectify pseudo-labels with the prototypes.
        temperature, structure_temperature: τ and τ_s (default τ).
        structure_weight, regulariser_weight: γ₁ (0: no structure learning), γ₂.
        structure_distance: ``'euclidean'`` (ProDA) or ``'cosine'``.
        structure_confidence: the KL counts where the pseudo-label's
            confidence reaches it (0: everywhere).
        structure_warmup_iters: γ₁ ramps up linearly over N iterations.
        strong_strength, view_seed: the strong view's scale and seed.
        confidence_threshold: pseudo-labels below it are ignored (0 keeps all).
        class_balanced_portion: CBST's p, or None (plain self-training only,
            with ``ClassBalancedThresholdHook``).
        backbone, decode_head, data_preprocessor, **network (neck,
            auxiliary_head, test_cfg, pretrained, init_cfg): as for
            EncoderDecoder (the preprocessor becomes a
            SourceTargetDataPreProcessor).
        train_cfg: as for EncoderDecoder; ``None`` (``mmseg.apis.init_model``)
            builds the network alone, for inference.
    """

    training_only_parts = ('pseudo_labeller', 'prototype_bank', 'target_loss')

    def __init__(self,
                 pseudo_labeller: dict[str, Any],
                 backbone: ConfigType,
                 decode_head: ConfigType,
                 target_loss: ConfigType = dict(type='SymmetricCrossEntropyLoss',
                                                alpha=0.1, beta=1.0),
                 rectify: bool = True,
                 temperature: float = 1.0,
                 structure_weight: float = 10.0,
                 regulariser_weight: float = 0.1,
                 strong_strength: float = 1.0,
                 view_seed: int = 0,
                 confidence_threshold: float = 0.0,
                 structure_temperature: float | None = None,
                 structure_distance: str = 'euclidean',
                 structure_confidence: float = 0.0,
                 structure_warmup_iters: int = 0,
                 class_balanced_portion: float | None = None,
                 train_cfg: OptConfigType = {},
                 data_preprocessor: OptConfigType = None,
                 **network: Any) -> None:
        self._init_network(train_cfg, data_preprocessor, backbone=backbone,
                           decode_head=decode_head, **network)
        with mmseg_scope():
            self.target_loss = MODELS.build(target_loss)
        structure_temperature = (temperature if structure_temperature is None
                                 else structure_temperature)
        _check_arguments(temperature, structure_temperature, structure_distance,
                         structure_confidence, structure_warmup_iters,
                         class_balanced_portion, rectify, confidence_threshold,
                         structure_weight)
        if self.for_inference:
            self.register_module('pseudo_labeller', None)
        else:
            labeller, info = build_member(pseudo_labeller,
                                          'ProDASegmentor pseudo_labeller')
            if info['num_classes'] != self.num_classes:
                raise ValueError(f"ProDASegmentor: the pseudo_labeller ({info['source']}) "
                                 f"predicts {info['num_classes']} classes, the model "
                                 f'{self.num_classes}')
            self.add_frozen('pseudo_labeller', labeller)
        # the features prototypes are made of: before dropout, as the momentum
        # copy (in eval) sees them
        self.feature_tap = ClassifierTap(self.decode_head, 'ProDASegmentor',
                                         before_dropout=True)
        self.rectify = rectify
        self.temperature = temperature
        self.structure_weight = structure_weight
        self.structure_temperature = structure_temperature
        self.structure_distance = structure_distance
        self.structure_confidence = structure_confidence
        self.structure_warmup_iters = int(structure_warmup_iters)
        self.class_balanced_portion = class_balanced_portion
        # λ_k, filled by ClassBalancedThresholdHook (NaN: not yet); moves with
        # the model, stays out of its checkpoints (the hook saves it)
        self.register_buffer(
            'class_thresholds',
            torch.full((self.num_classes,), float('nan')) if class_balanced_portion
            else None, persistent=False)
        self.regulariser_weight = regulariser_weight
        self.strong_strength = strong_strength
        self.view_seed = view_seed
        self.confidence_threshold = confidence_threshold
        if self.needs_prototypes and not self.for_inference:
            # a child from the start, before any move or DDP wrap; filled by
            # PrototypeHook before training
            momentum = ExponentialMovingAverage(self.network(), momentum=0.001)
            momentum.steps.fill_(1)  # every update averages (mmengine's first copies)
            self.add_frozen('prototype_bank', PrototypeBank(
                self.num_classes, self.decode_head.conv_seg.in_channels, momentum))
        else:
            self.register_module('prototype_bank', None)

    @property
    def needs_prototypes(self) -> bool:
        return self.rectify or self.structure_weight > 0

    def network(self) -> nn.ModuleDict:
        """The parts a momentum copy averages (its keys are this model's)."""
        parts = dict(backbone=self.backbone, decode_head=self.decode_head)
        if self.with_neck:
            parts['neck'] = self.neck
        return nn.ModuleDict(parts)

    @staticmethod
    def network_features(network: nn.ModuleDict, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and classifier features of a :meth:`network` copy."""
        x = network['backbone'](inputs)
        if 'neck' in network:
            x = network['neck'](x)
        # the copy's own tap: a deep copy of the head carries none
        with ClassifierTap(network['decode_head'], 'ProDASegmentor',
                           before_dropout=True) as tap:
            logits = network['decode_head'](x)
            feature, _ = tap.take()
        return logits, feature

    def loss(self, inputs: Tensor | dict, data_samples: SampleList | dict) -> dict:
        if not isinstance(inputs, dict):
            # a plain labelled batch: source-only training
            return super().loss(inputs, data_samples)
        self._check_trainable('pseudo-labeller for the target batch')
        losses = super().loss(inputs['source'], data_samples['source'])
        losses.update(self.target_losses(inputs['target'], data_samples['target']))
        return losses

    @staticmethod
    def _iteration() -> int:
        return MessageHub.get_current_instance().get_info('iter', 0)

    @torch.no_grad()
    def pseudo_label_probabilities(self, weak: Tensor, metas: list[dict]) -> Tensor:
        """p₀: the frozen warm-up model's softmax on the weak view, at the
        input's size, (B, K, H, W)."""
        prob0 = model_inference(self.pseudo_labeller, weak, metas).softmax(1)
        size = weak.shape[2:]
        return prob0 if prob0.shape[2:] == size else resize(
            prob0, size, mode='bilinear', align_corners=self.align_corners)

    def _view_generator(self, device: torch.device) -> torch.Generator:
        """The strong view's random numbers, seeded by (seed, iteration,
        rank): a resumed run draws the same views as an uninterrupted one,
        and ranks draw different ones."""
        iteration = self._iteration()
        seed = (self.view_seed * 1_000_003 + iteration) * 7919 + dist.get_rank()
        return torch.Generator(device=device).manual_seed(seed % 2**63)

    def target_losses(self, weak: Tensor, data_samples: SampleList) -> dict[str, Tensor]:
        """The unlabelled-target terms (see the class docstring)."""
        bank = self.prototype_bank
        if bank is not None and not bank.started:
            raise RuntimeError(
                "ProDASegmentor: rectify=True or structure_weight > 0 needs "
                "custom_hooks=[dict(type='PrototypeHook')] in the config")
        cbst = self.class_balanced_portion is not None
        if cbst and torch.isnan(self.class_thresholds).any():
            raise RuntimeError(
                "ProDASegmentor: class_balanced_portion needs "
                "custom_hooks=[dict(type='ClassBalancedThresholdHook')] in the config")
        metas = [s.metainfo for s in data_samples]
        size = weak.shape[2:]
        with torch.no_grad():
            prob0 = self.pseudo_label_probabilities(weak, metas)
            if bank is not None:
                momentum = bank.momentum_network.module
                m_logits, m_feature = self.network_features(momentum, weak)
                z_weak = bank.logits(m_feature, self.temperature).softmax(1)
                feat_valid = image_mask(metas, m_feature.shape[2:], weak.device, size)
                bank.pending = (m_feature.detach(), m_logits.argmax(1), feat_valid)
            if self.rectify:
                weight = resize(z_weak, size, mode='bilinear',
                                align_corners=self.align_corners)
                score = weight * prob0
            elif cbst:
                # CBST: each class against its own threshold
                score = prob0 / self.class_thresholds[None, :, None, None]
            else:
                score = prob0
            valid = image_mask(metas, size, weak.device)
            # CBST keeps each class above its own threshold (score ≥ 1); else
            # the confidence of the rectified, renormalised pseudo-label
            pseudo, _, confidence = pseudo_labels(
                score, valid, self.target_loss.ignore_index,
                threshold=1.0 if cbst else self.confidence_threshold,
                renormalise=not cbst)
            if self.rectify:
                # before the threshold: a pixel it drops is not a rectified one
                changed = (score.argmax(1) != prob0.argmax(1)) & valid
                rectified = changed.float().sum() / valid.sum().clamp(min=1)

        strong = strong_view(weak, self.data_preprocessor.mean,
                             self.data_preprocessor.std, self.strong_strength,
                             self._view_generator(weak.device))
        x = self.extract_feat(strong)
        with self.feature_tap:
            logits = self.decode_head(x)
            feature, _ = self.feature_tap.take()
        logits_full = logits if logits.shape[2:] == size else resize(
            logits, size, mode='bilinear', align_corners=self.align_corners)
        losses = {f'target.{self.target_loss.loss_name}':
                  self.target_loss(logits_full, pseudo)}
        if self.structure_weight > 0:
            losses.update(self.structure_losses(
                feature, m_feature, z_weak, feat_valid, confidence))
        if self.regulariser_weight > 0:
            neg_log_p = -at_least_float32(logits_full).log_softmax(1).mean(1)
            v = valid.float()
            losses['target.loss_regulariser'] = (self.regulariser_weight
                                                 * (neg_log_p * v).sum()
                                                 / v.sum().clamp(min=1))
        if self.rectify:
            losses['target.rectified'] = rectified
        return losses

    def structure_losses(self, feature: Tensor, m_feature: Tensor, z_weak: Tensor,
                         feat_valid: Tensor, confidence: Tensor) -> dict[str, Tensor]:
        """γ₁·KL(z_weak ‖ z_strong) over the counted feature pixels, and the
        mean max_k z_weak there (how close to one-hot the assignments are)."""
        bank = self.prototype_bank
        normalise = self.structure_distance == 'cosine'
        if normalise or self.structure_temperature != self.temperature:
            with torch.no_grad():
                z_weak = bank.logits(m_feature, self.structure_temperature,
                                     normalise).softmax(1)
        log_z_strong = bank.logits(feature, self.structure_temperature,
                                   normalise).log_softmax(1)
        kl = (z_weak * (z_weak.clamp_min(1e-38).log() - log_z_strong)).sum(1)
        counted = feat_valid
        if self.structure_confidence > 0:
            # the pseudo-label's confidence, brought to the features' size
            small = resize(confidence[:, None], kl.shape[1:], mode='bilinear',
                           align_corners=self.align_corners)[:, 0]
            counted = counted & (small >= self.structure_confidence)
        v = counted.float()
        n = v.sum().clamp(min=1)
        weight = self.structure_weight
        if self.structure_warmup_iters > 0:
            weight *= min(1.0, (self._iteration() + 1) / self.structure_warmup_iters)
        return {'target.loss_structure': weight * (kl * v).sum() / n,
                'target.assignment_max': (z_weak.amax(1) * v).sum().detach() / n}


def _check_arguments(temperature: float, structure_temperature: float,
                     structure_distance: str, structure_confidence: float,
                     structure_warmup_iters: int, class_balanced_portion: float | None,
                     rectify: bool, confidence_threshold: float,
                     structure_weight: float) -> None:
    """A clear error naming the config key, for each argument out of range."""
    for key, value in (('temperature', temperature),
                       ('structure_temperature', structure_temperature)):
        if not value > 0:
            raise ValueError(
                f'ProDASegmentor: model.{key} (τ of the prototype softmax) must '
                f'be > 0, got {value}; ProDA uses 1 on raw features')
    if structure_distance not in ('euclidean', 'cosine'):
        raise ValueError(f"ProDASegmentor: model.structure_distance must be "
                         f"'euclidean' or 'cosine', got {structure_distance!r}")
    if not 0.0 <= structure_confidence < 1.0:
        raise ValueError(f'ProDASegmentor: model.structure_confidence must lie in '
                         f'[0, 1), got {structure_confidence}')
    if int(structure_warmup_iters) != structure_warmup_iters or structure_warmup_iters < 0:
        raise ValueError(f'ProDASegmentor: model.structure_warmup_iters must be a '
                         f'whole number >= 0, got {structure_warmup_iters}')
    if class_balanced_portion is not None:
        if not 0.0 < class_balanced_portion <= 1.0:
            raise ValueError(f'ProDASegmentor: model.class_balanced_portion must lie '
                             f'in (0, 1], got {class_balanced_portion}')
        if rectify or confidence_threshold > 0 or structure_weight > 0:
            raise ValueError(
                'ProDASegmentor: model.class_balanced_portion (CBST thresholds) is '
                'plain self-training: set rectify=False and structure_weight=0, '
                'and leave confidence_threshold at 0')
    if not 0.0 <= confidence_threshold < 1.0:
        raise ValueError(f'ProDASegmentor: confidence_threshold must lie in '
                         f'[0, 1), got {confidence_threshold}')
