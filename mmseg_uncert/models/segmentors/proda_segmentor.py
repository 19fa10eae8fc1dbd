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

from ..data_preprocessors import image_mask, source_target_preprocessor
from ..decode_heads.classifier_tap import pop_tapped, pre_dropout_module, take_tapped
from ..frozen import FrozenChildren
from ..precision import at_least_float32
from ..prototypes import PrototypeBank
from .members import build_member, mmseg_scope
from .predictive_segmentor import fresh_metas


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
class ProDASegmentor(FrozenChildren, EncoderDecoder):
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
      confidence reaches ``confidence_threshold``;
    * target: ``target_loss`` (symmetric cross-entropy, α = 0.1, β = 1) of
      the student on the strong view against ŷ; structure learning
      γ₁·KL(z_weak ‖ z_strong) between the prototype assignments of the
      momentum network on the weak view and of the student on the strong
      view (γ₁ = 10); the regulariser γ₂·(−mean_{pixels, k} log p_k)
      (γ₂ = 0.1), which keeps every class alive.

    The warm-up model (``pseudo_labeller``) and, when rectification or
    structure learning is on, the prototypes with the momentum network (a
    :class:`~mmseg_uncert.models.PrototypeBank`, ``prototype_bank``) are
    frozen children (see :mod:`~mmseg_uncert.models.frozen`): they move with
    the model, never train, stay in eval and are not saved in the model's
    checkpoints. :class:`~mmseg_uncert.engine.PrototypeHook` fills the bank
    before training, updates it after each optimizer step and checkpoints
    it; training without the hook is an error that says so.

    Target samples' annotations are never read (the dataset also strips
    them). Pixels outside an image (batch padding) are ignored everywhere.

    Args:
        pseudo_labeller: the warm-up (source-only) model,
            ``dict(config=PATH, checkpoint=PATH)``; see
            :func:`~mmseg_uncert.models.segmentors.build_member`.
        target_loss: loss of the student against the pseudo-labels.
        rectify: rectify pseudo-labels with the prototypes.
        temperature: τ of the prototype softmax.
        structure_weight: γ₁ (0 turns structure learning off).
        regulariser_weight: γ₂.
        strong_strength: scale of the strong view's perturbations.
        view_seed: seed of the strong views (with the iteration and rank).
        confidence_threshold: pseudo-labels whose confidence (max over k of
            the renormalised ω_k·p₀,k, or of p₀,k without rectification) is
            below it are ignored; 0 keeps all (classic self-training keeps
            the confident ones, e.g. 0.9).
        backbone, decode_head, neck, auxiliary_head, test_cfg,
            data_preprocessor, pretrained, init_cfg: as for EncoderDecoder;
            mmseg's SegDataPreProcessor is switched to
            :class:`~mmseg_uncert.models.SourceTargetDataPreProcessor`.
        train_cfg: as for EncoderDecoder. ``None`` builds the model for
            inference, as ``mmseg.apis.init_model`` does (it sets
            ``model.train_cfg = None``): neither the pseudo-labeller nor the
            prototypes are built, so the warm-up checkpoint need not exist,
            and ``loss`` raises. A training config leaves it out (``{}``).
    """

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
                 neck: OptConfigType = None,
                 auxiliary_head: OptConfigType = None,
                 train_cfg: OptConfigType = {},
                 test_cfg: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 pretrained: str | None = None,
                 init_cfg: OptConfigType = None) -> None:
        # a copy: the default is shared between instances
        train_cfg = None if train_cfg is None else dict(train_cfg)
        with mmseg_scope():
            super().__init__(backbone=backbone, decode_head=decode_head, neck=neck,
                             auxiliary_head=auxiliary_head, train_cfg=train_cfg,
                             test_cfg=test_cfg,
                             data_preprocessor=source_target_preprocessor(data_preprocessor),
                             pretrained=pretrained, init_cfg=init_cfg)
            self.target_loss = MODELS.build(target_loss)
        if temperature <= 0:
            raise ValueError(f'ProDASegmentor: temperature must be positive, got '
                             f'{temperature}')
        self.for_inference = train_cfg is None
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
        self.__dict__['feature_tap'] = pre_dropout_module(self.decode_head, 'ProDASegmentor')
        self.rectify = rectify
        self.temperature = temperature
        self.structure_weight = structure_weight
        self.regulariser_weight = regulariser_weight
        self.strong_strength = strong_strength
        self.view_seed = view_seed
        if not 0.0 <= confidence_threshold < 1.0:
            raise ValueError(f'ProDASegmentor: confidence_threshold must lie in '
                             f'[0, 1), got {confidence_threshold}')
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
        head = network['decode_head']
        logits = head(x)
        tap = head.dropout if isinstance(getattr(head, 'dropout', None), nn.Module) \
            else head.conv_seg
        feature = take_tapped(tap, 'ProDASegmentor')
        pop_tapped(head.conv_seg)
        return logits, feature

    def loss(self, inputs: Tensor | dict, data_samples: SampleList | dict) -> dict:
        if not isinstance(inputs, dict):
            # a plain labelled batch: source-only training
            return super().loss(inputs, data_samples)
        if self.for_inference:
            raise RuntimeError(
                'ProDASegmentor was built for inference (model.train_cfg=None, as '
                'mmseg.apis.init_model builds it): it has no pseudo-labeller for '
                'the target batch; train with the config\'s own model (train_cfg '
                'left out)')
        losses = super().loss(inputs['source'], data_samples['source'])
        pop_tapped(self.feature_tap)  # the source pass's features
        pop_tapped(self.decode_head.conv_seg)
        losses.update(self.target_losses(inputs['target'], data_samples['target']))
        return losses

    def _view_generator(self, device: torch.device) -> torch.Generator:
        """The strong view's random numbers, seeded by (seed, iteration,
        rank): a resumed run draws the same views as an uninterrupted one,
        and ranks draw different ones."""
        iteration = MessageHub.get_current_instance().get_info('iter', 0)
        seed = (self.view_seed * 1_000_003 + iteration) * 7919 + dist.get_rank()
        return torch.Generator(device=device).manual_seed(seed % 2**63)

    def target_losses(self, weak: Tensor, data_samples: SampleList) -> dict[str, Tensor]:
        """The unlabelled-target terms (see the class docstring)."""
        bank = self.prototype_bank
        if bank is not None and not bank.started:
            raise RuntimeError(
                "ProDASegmentor: rectify=True or structure_weight > 0 needs "
                "custom_hooks=[dict(type='PrototypeHook')] in the config")
        metas = [s.metainfo for s in data_samples]
        size = weak.shape[2:]
        with torch.no_grad():
            prob0 = self.pseudo_labeller.inference(weak, fresh_metas(metas)).softmax(1)
            prob0 = prob0 if prob0.shape[2:] == size else resize(
                prob0, size, mode='bilinear', align_corners=self.align_corners)
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
            else:
                score = prob0
            pseudo = score.argmax(1)
            valid = image_mask(metas, size, weak.device)
            keep = valid
            if self.confidence_threshold > 0:
                # confidence of the (rectified, renormalised) pseudo-label
                confidence = score.amax(1) / score.sum(1).clamp_min(1e-12)
                keep = valid & (confidence >= self.confidence_threshold)
            pseudo = pseudo.masked_fill(~keep, self.target_loss.ignore_index)
            if self.rectify:
                changed = (pseudo != prob0.argmax(1)) & valid
                rectified = changed.float().sum() / valid.sum().clamp(min=1)

        strong = strong_view(weak, self.data_preprocessor.mean,
                             self.data_preprocessor.std, self.strong_strength,
                             self._view_generator(weak.device))
        x = self.extract_feat(strong)
        logits = self.decode_head(x)
        feature = take_tapped(self.feature_tap, 'ProDASegmentor')
        pop_tapped(self.decode_head.conv_seg)
        logits_full = logits if logits.shape[2:] == size else resize(
            logits, size, mode='bilinear', align_corners=self.align_corners)
        losses = {f'target.{self.target_loss.loss_name}':
                  self.target_loss(logits_full, pseudo)}
        if self.structure_weight > 0:
            log_z_strong = bank.logits(feature, self.temperature).log_softmax(1)
            kl = (z_weak * (z_weak.clamp_min(1e-38).log() - log_z_strong)).sum(1)
            v = feat_valid.float()
            losses['target.loss_structure'] = (self.structure_weight * (kl * v).sum()
                                               / v.sum().clamp(min=1))
        if self.regulariser_weight > 0:
            neg_log_p = -at_least_float32(logits_full).log_softmax(1).mean(1)
            v = valid.float()
            losses['target.loss_regulariser'] = (self.regulariser_weight
                                                 * (neg_log_p * v).sum()
                                                 / v.sum().clamp(min=1))
        if self.rectify:
            losses['target.rectified'] = rectified
        return losses
