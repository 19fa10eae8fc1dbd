"""ProDA: self-training on an unlabelled target domain with prototype-rectified
pseudo-labels and target structure learning."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
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
from ..strong_view import StrongView, strong_view, view_generator
from .members import build_member, mmseg_scope
from .slide_inference import model_inference
from .pseudo_labels import pseudo_labels
from .deployment import TrainingWrapper


def _iteration() -> int:
    return MessageHub.get_current_instance().get_info('iter', 0)


def network_features(network: nn.ModuleDict, inputs: Tensor) -> tuple[Tensor, Tensor]:
    """Logits and classifier features (before dropout) of a copy of
    :meth:`ProDASegmentor.network`, such as the momentum network."""
    x = network['backbone'](inputs)
    if 'neck' in network:
        x = network['neck'](x)
    # the copy's own tap: a deep copy of the head carries none
    with ClassifierTap(network['decode_head'], 'ProDASegmentor',
                       before_dropout=True) as tap:
        logits = network['decode_head'](x)
        feature, _ = tap.take()
    return logits, feature


@MODELS.register_module()
class ProDASegmentor(TrainingWrapper, FrozenChildren, EncoderDecoder):
    """Unsupervised domain adaptation by ProDA's stage 1 (Zhang et al.,
    "Prototypical Pseudo Label Denoising and Target Structure Learning for
    Domain Adaptive Semantic Segmentation", CVPR 2021), on
    :class:`~mmseg_uncert.datasets.SourceTargetDataset` batches; validated,
    tested and saved as a plain EncoderDecoder. Per iteration:

    * source: the decode head's loss against the labels;
    * pseudo-labels on the weak view: ŷ = argmax_k ω_k·p₀,k, with p₀ the
      frozen warm-up model's softmax (``pseudo_labeller``) and
      ω_k = softmax_k(−‖f̃ − η_k‖/τ) the prototype weights of the momentum
      network's features f̃ (``rectify=False``: ŷ = argmax_k p₀,k); kept
      where their confidence reaches ``confidence_threshold``, or with
      ``class_balanced_portion`` (CBST, Zou et al., ECCV 2018) ŷ =
      argmax_k p₀,k/λ_k kept where that is ≥ 1;
    * target: ``target_loss`` (SCE, α = 0.1, β = 1) against ŷ and the
      regulariser γ₂·(−mean_{pixels, k} log p_k), on the weak view (ProDA;
      ``pseudo_label_view='strong'``: on the strong view, ŷ carried there);
    * structure learning: γ₁·mean_{pixels, k} z_weak,k (log z_weak,k −
      log z_strong,k), z = softmax_k(−d(f, η_k)/τ_s) the prototype
      assignments of the momentum network on the weak view (carried to the
      strong view's geometry) and of the student on the strong view, over
      the strong view's pixels with a source and outside the cut-out (the
      mean over classes too is ProDA's scale; γ₁ = 10 there).

    The strong view (:mod:`~mmseg_uncert.models.strong_view`) changes
    colours and blurs and, with ``strong_geometric`` (ProDA's RandAugment),
    flips, rotates, shears, translates and cuts out a square. The momentum
    network runs in training mode, as ProDA's. The warm-up model and the
    :class:`~mmseg_uncert.models.PrototypeBank` (prototypes and momentum
    network, kept by :class:`~mmseg_uncert.engine.PrototypeHook`) are frozen
    children, never saved with the model. Target annotations are never
    read; batch padding is ignored. The maths, every argument and the
    benchmark: docs/components/proda_segmentor.md.

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
        strong_geometric: the strong view's geometric operations and cut-out.
        pseudo_label_view: ``'weak'`` (ProDA) or ``'strong'``: the view the
            target loss and the regulariser train on.
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
                 strong_geometric: bool = True,
                 pseudo_label_view: str = 'weak',
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
                         structure_weight, pseudo_label_view)
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
        self.strong_geometric = strong_geometric
        self.pseudo_label_view = pseudo_label_view
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

    def loss(self, inputs: Tensor | dict, data_samples: SampleList | dict) -> dict:
        if not isinstance(inputs, dict):
            # a plain labelled batch: source-only training
            return super().loss(inputs, data_samples)
        self._check_trainable('pseudo-labeller for the target batch')
        losses = super().loss(inputs['source'], data_samples['source'])
        losses.update(self.target_losses(inputs['target'], data_samples['target']))
        return losses

    @torch.no_grad()
    def pseudo_label_probabilities(self, weak: Tensor, metas: list[dict]) -> Tensor:
        """p₀: the frozen warm-up model's softmax on the weak view, at the
        input's size, (B, K, H, W)."""
        prob0 = model_inference(self.pseudo_labeller, weak, metas).softmax(1)
        size = weak.shape[2:]
        return prob0 if prob0.shape[2:] == size else resize(
            prob0, size, mode='bilinear', align_corners=self.align_corners)

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
        valid = image_mask(metas, size, weak.device)
        with torch.no_grad():
            prob0 = self.pseudo_label_probabilities(weak, metas)
            if bank is not None:
                m_logits, m_feature = self.momentum_features(weak)
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

        view = None
        if self.pseudo_label_view == 'strong' or self.structure_weight > 0:
            generator = view_generator(self.view_seed, weak.device)
            view = strong_view(weak, self.data_preprocessor.mean,
                               self.data_preprocessor.std, self.strong_strength,
                               generator, self.strong_geometric)
        if self.pseudo_label_view == 'strong':
            valid = view.carry_mask(valid)
            pseudo = view.carry_labels(pseudo, self.target_loss.ignore_index)
            logits_full, feature = self._target_forward(view.image)
        else:
            logits_full, feature = self._target_forward(weak)
        losses = {f'target.{self.target_loss.loss_name}':
                  self.target_loss(logits_full, pseudo)}
        if self.regulariser_weight > 0:
            neg_log_p = -at_least_float32(logits_full).log_softmax(1).mean(1)
            losses['target.loss_regulariser'] = (self.regulariser_weight
                                                 * neg_log_p[valid].sum()
                                                 / valid.sum().clamp(min=1))
        if self.structure_weight > 0:
            if self.pseudo_label_view == 'weak':
                # a second pass of the student, on the strong view
                feature = self._target_forward(view.image)[1]
            losses.update(self.structure_losses(
                feature, m_feature, z_weak, feat_valid, confidence, view))
        if self.rectify:
            losses['target.rectified'] = rectified
        return losses

    def _target_forward(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """The student's logits at the input's size and its classifier
        features (before dropout)."""
        x = self.extract_feat(inputs)
        with self.feature_tap:
            logits = self.decode_head(x)
            feature, _ = self.feature_tap.take()
        if logits.shape[2:] != inputs.shape[2:]:
            logits = resize(logits, inputs.shape[2:], mode='bilinear',
                            align_corners=self.align_corners)
        return logits, feature

    @torch.no_grad()
    def momentum_features(self, weak: Tensor) -> tuple[Tensor, Tensor]:
        """The momentum network's logits and features on the weak view, in
        training mode as ProDA's: target batch statistics (the running ones
        it writes are overwritten by the next update's copy of the model's)."""
        network = self.prototype_bank.momentum_network.module
        network.train()
        try:
            return network_features(network, weak)
        finally:
            network.eval()  # a frozen child stays in eval mode otherwise

    def structure_losses(self, feature: Tensor, m_feature: Tensor, z_weak: Tensor,
                         feat_valid: Tensor, confidence: Tensor,
                         view: StrongView | None = None) -> dict[str, Tensor]:
        """γ₁·KL(z_weak ‖ z_strong) averaged over the counted feature pixels
        and the K classes (ProDA's scale), and the mean max_k z_weak there
        (how close to one-hot the assignments are). ``feature``: the
        student's on ``view`` (None: a view pixel-aligned with the weak one);
        ``m_feature``, ``z_weak``, ``feat_valid``, ``confidence``: of the weak
        view, carried to the strong view's geometry here."""
        bank = self.prototype_bank
        normalise = self.structure_distance == 'cosine'
        with torch.no_grad():
            if normalise or self.structure_temperature != self.temperature:
                z_weak = bank.logits(m_feature, self.structure_temperature,
                                     normalise).softmax(1)
            counted = feat_valid
            if self.structure_confidence > 0:
                # the pseudo-label's confidence, brought to the features' size
                small = resize(confidence[:, None], z_weak.shape[2:], mode='bilinear',
                               align_corners=self.align_corners)[:, 0]
                counted = counted & (small >= self.structure_confidence)
            if view is not None:
                z_weak = view.follow(z_weak)
                counted = view.carry_mask(counted)
        log_z_strong = bank.logits(feature, self.structure_temperature,
                                   normalise).log_softmax(1)
        kl = (z_weak * (z_weak.clamp_min(1e-38).log() - log_z_strong)).sum(1)
        v = counted.float()
        n = v.sum().clamp(min=1)
        weight = self.structure_weight
        if self.structure_warmup_iters > 0:
            weight *= min(1.0, (_iteration() + 1) / self.structure_warmup_iters)
        classes = z_weak.shape[1]
        return {'target.loss_structure': weight * (kl * v).sum() / (n * classes),
                'target.assignment_max': (z_weak.amax(1) * v).sum() / n}


def _check_arguments(temperature: float, structure_temperature: float,
                     structure_distance: str, structure_confidence: float,
                     structure_warmup_iters: int, class_balanced_portion: float | None,
                     rectify: bool, confidence_threshold: float,
                     structure_weight: float, pseudo_label_view: str) -> None:
    """A clear error naming the config key, for each argument out of range."""
    for key, value in (('temperature', temperature),
                       ('structure_temperature', structure_temperature)):
        if not value > 0:
            raise ValueError(
                f'ProDASegmentor: model.{key} (τ of the prototype softmax) must '
                f'be > 0, got {value}; ProDA uses 1 on raw features')
    if pseudo_label_view not in ('weak', 'strong'):
        raise ValueError(f"ProDASegmentor: model.pseudo_label_view must be 'weak' "
                         f"(ProDA) or 'strong', got {pseudo_label_view!r}")
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
