"""A decode head with a second, uncertainty branch: the student's head."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule, DepthwiseSeparableConvModule
from torch import Tensor, nn

from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import ConfigType

from ..precision import at_least_float32
from .head_taps import ClassifierTap, HeadTap, MaskQueryTap, tap_head
from .uncertainty_head import UncertaintyHead

#: the branch's hidden 3x3 layer
BRANCH_CONVS = {'conv': ConvModule, 'depthwise_separable': DepthwiseSeparableConvModule}
#: maps a DualHead can compute instead of regressing, and the map each needs
DERIVABLE = {'aleatoric': 'epistemic'}


@MODELS.register_module()
class DualHead(UncertaintyHead):
    """Any mmseg decode head plus an uncertainty branch.

    The branch (3x3 conv-BN-ReLU, then 1x1 conv) reads the very per-pixel
    features the wrapped head's prediction is made from, and outputs K
    channels named by ``uncertainty_names`` (e.g. ``('std',)`` or
    ``('epistemic', 'aleatoric')``), decoded by ``loss_uncertainty``'s form
    (see :class:`~mmseg_uncert.models.losses.UncertaintyRegressionLoss`).
    Where those features are is found from what the head has and does, not
    from its type name (:func:`~.head_taps.tap_head`): the input of a
    ``conv_seg`` classifier, K-Net's kernel features, MaskFormer's mask
    embeddings, Segmenter's patch tokens. A head none of these fits is
    refused with :class:`~.head_taps.UnsupportedHeadError` naming it and why.

    The segmentation is the wrapped head's, unchanged: ``loss`` is the head's
    own ``loss`` (auxiliary outputs and their losses included) and
    ``predict`` its own ``predict``, with the K decoded maps, resized the way
    the head resizes its logits, appended: C + K channels, which
    :class:`~mmseg_uncert.models.segmentors.UncertaintyEncoderDecoder` turns
    into ``seg_logits`` and ``pred_uncertainty``; one network, one pass. In a
    cascade (OCRNet) the DualHead is the last stage, and takes the previous
    stage's output as that stage would.

    Trained on its own (``loss``) only the segmentation loss applies; the
    uncertainty branch learns from a teacher in
    :class:`~mmseg_uncert.models.segmentors.EnsembleDistiller`.

    Two switches decide what the branch sees and what it may change:

    * ``read_probabilities`` also feeds the branch the head's class
      probabilities (detached). An ensemble's spread is largely a function of
      where its mean prediction is unsure, and the student's own prediction
      is distilled from that mean, so handing it to the branch spares the
      branch re-deriving it from the features.
    * ``feature_grad_scale`` is the share of the uncertainty loss's gradient
      that reaches the shared features (1 = all, 0 = stop-gradient): the
      branch's loss must not pull the features away from segmentation.

    ``derived_names`` are maps computed, not regressed. ``'aleatoric'`` is
    the decomposition's identity applied to the student (Depeweg et al.,
    ICML 2018): aleatoric = H[softmax(scores)] − epistemic, clamped at 0,
    with the regressed ``epistemic`` and the entropy of the head's own
    (KD-trained) prediction, so that total = aleatoric + epistemic holds as
    it does for the teacher. The entropy is taken at the resolution of the
    returned logits (the image's in ``predict``), so the map is as sharp as
    the prediction, where a regressed map is the branch's 1/8-resolution
    output upsampled; and the branch regresses one map fewer.

    Args:
        head: the wrapped decode head config.
        uncertainty_names: names of the K uncertainty channels (distinct).
        derived_names: those of ``uncertainty_names`` computed from the others
            and the prediction instead of regressed: ``('aleatoric',)``
            (needs ``'epistemic'``) or none.
        regress_derived: also regress the derived maps from the teacher, as
            auxiliary targets whose loss shapes the shared features; the
            outputs stay the derived maps.
        branch_channels: width of the branch's hidden layer.
        branch_conv: the hidden layer's 3x3 convolution, ``'conv'`` (dense)
            or ``'depthwise_separable'`` (depthwise 3x3 then pointwise 1x1,
            as in MobileNets: fewer multiply-adds). For light networks: on a
            Fast-SCNN at 256x512 (one thread) the DualHead took 21 ms with
            the dense branch and 18 ms with this one, against 8 ms for the
            bare head and about 57 ms for the backbone.
        loss_uncertainty: the uncertainty loss; its form sets the outputs.
        read_probabilities: also feed the branch the (detached) probabilities.
        feature_grad_scale: share of the branch's gradient that reaches the
            shared features, in [0, 1].
    """

    def __init__(self,
                 head: ConfigType,
                 uncertainty_names: Sequence[str] = ('std', ),
                 derived_names: Sequence[str] = (),
                 regress_derived: bool = False,
                 branch_channels: int = 64,
                 branch_conv: str = 'conv',
                 loss_uncertainty: ConfigType = dict(type='UncertaintyRegressionLoss'),
                 read_probabilities: bool = True,
                 feature_grad_scale: float = 1.0,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if isinstance(uncertainty_names, str) or not uncertainty_names:
            raise ValueError(f'DualHead: uncertainty_names must be a non-empty '
                             f'list of map names, got {uncertainty_names!r}')
        duplicated = sorted({n for n in uncertainty_names
                             if list(uncertainty_names).count(n) > 1})
        if duplicated:
            raise ValueError(f'DualHead: uncertainty_names names {duplicated} more '
                             f'than once; each channel needs its own name')
        if not 0.0 <= feature_grad_scale <= 1.0:
            raise ValueError(f'DualHead: feature_grad_scale must lie in [0, 1], '
                             f'got {feature_grad_scale}')
        if branch_conv not in BRANCH_CONVS:
            raise ValueError(f'DualHead: branch_conv must be one of {tuple(BRANCH_CONVS)}, '
                             f'got {branch_conv!r}')
        self.read_probabilities = read_probabilities
        self.feature_grad_scale = float(feature_grad_scale)
        self.head = MODELS.build(head)
        _check_decode_head(self.head, head)
        self.tap: HeadTap = tap_head(self.head, 'DualHead')
        self.loss_uncertainty = MODELS.build(loss_uncertainty)
        self.uncertainty_names = tuple(uncertainty_names)
        self.derived_names = _check_derived(tuple(derived_names), self.uncertainty_names)
        if regress_derived and not self.derived_names:
            raise ValueError('DualHead: regress_derived=True regresses the derived maps '
                             'as auxiliary targets, and derived_names is empty')
        self.regress_derived = regress_derived
        if self.derived_names and isinstance(self.tap, MaskQueryTap):
            raise ValueError(f'DualHead: derived_names={list(self.derived_names)} take '
                             f'the entropy of softmax(logits), and '
                             f'{type(self.head).__name__} gives mask-weighted class '
                             f'scores, not logits; regress every map (derived_names=())')
        ranges = getattr(self.loss_uncertainty, 'ranges', None)
        if ranges is not None and ranges.shape[0] not in (1, len(self.regressed_names)):
            raise ValueError(
                f'DualHead: loss_uncertainty.value_range has {ranges.shape[0]} entries '
                f'for the {len(self.regressed_names)} regressed maps '
                f'{list(self.regressed_names)}' + (
                    f' (derived, not regressed: {list(self.derived_names)})'
                    if self.derived_names else '') + '; give one range for all or one per map')
        outputs = len(self.regressed_names) * self.loss_uncertainty.outputs_per_channel
        in_channels = self.tap.feature_channels + (self.head.num_classes
                                                   if read_probabilities else 0)
        self.uncertainty_branch = nn.Sequential(
            BRANCH_CONVS[branch_conv](
                in_channels, branch_channels, 3, padding=1,
                norm_cfg=getattr(self.head, 'norm_cfg', None) or dict(type='BN'),
                act_cfg=dict(type='ReLU')),
            nn.Conv2d(branch_channels, outputs, 1))
        self._share_head_attributes()

    @property
    def regressed_names(self) -> tuple[str, ...]:
        """The maps the branch regresses (its outputs, the distillation
        targets), in channel order: ``uncertainty_names`` less the derived
        (all of them with ``regress_derived``)."""
        if self.regress_derived:
            return self.uncertainty_names
        return tuple(n for n in self.uncertainty_names if n not in self.derived_names)

    def _maps(self, scores: Tensor, raw: Tensor) -> Tensor:
        """The K maps (B, K, H, W) at the size of ``scores`` (B, C, H, W):
        the regressed ones decoded at the branch's resolution and resized
        once (auxiliary ones left out), the derived ones computed from them
        and ``scores``."""
        maps = self.loss_uncertainty.decode(raw)
        kept = [n for n in self.regressed_names if n not in self.derived_names]
        if len(kept) < maps.shape[1]:
            # auxiliary targets (regress_derived) are not outputs: not resized
            maps = maps[:, [self.regressed_names.index(n) for n in kept]]
        if maps.shape[2:] != scores.shape[2:]:
            maps = resize(maps, scores.shape[2:], mode='bilinear',
                          align_corners=self.align_corners)
        if not self.derived_names:
            return maps.to(scores.dtype)
        regressed = dict(zip(kept, maps.unbind(1)))
        total = softmax_entropy(at_least_float32(scores))
        derived = {'aleatoric': (total - regressed['epistemic']).clamp_min(0)}
        return torch.stack([derived[n] if n in derived else regressed[n]
                            for n in self.uncertainty_names], 1).to(scores.dtype)

    @property
    def feature_channels(self) -> int:
        """Channels of the features the prediction (and the branch) read."""
        return self.tap.feature_channels

    def _tapped(self, inputs: Sequence[Tensor], output: object = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """Class scores (B, C, h, w), raw uncertainty outputs and features
        (B, F, h, w) of the head's forward just run (inside ``with self.tap``)."""
        feature, scores = self.tap.take(inputs)
        if output is not None and isinstance(self.tap, ClassifierTap):
            self.tap.check_output(output, scores)
        return scores, self._branch(*self._branch_input(scores, feature)), feature

    def forward_with_uncertainty(self, inputs: Sequence[Tensor], *prev: Tensor,
                                 batch_img_metas: list[dict] | None = None
                                 ) -> tuple[Tensor, Tensor, Tensor]:
        """Class scores (B, C, h, w) of the prediction, raw uncertainty
        outputs and the shared features (B, F, h, w), without a loss (e.g.
        on unlabelled images). ``prev`` is a cascade's previous output; query
        heads (MaskFormer) need ``batch_img_metas``."""
        return self.forward_all(inputs, *prev, batch_img_metas=batch_img_metas)[1:]

    def forward_all(self, inputs: Sequence[Tensor], *prev: Tensor,
                    batch_img_metas: list[dict] | None = None
                    ) -> tuple[Any, Tensor, Tensor, Tensor]:
        """As :meth:`forward_with_uncertainty`, with the wrapped head's whole
        forward output first (auxiliary outputs included), which its
        ``loss_by_feat`` takes."""
        with self.tap:
            if isinstance(self.tap, MaskQueryTap):
                if batch_img_metas is None:
                    raise ValueError(f'DualHead: {type(self.head).__name__} needs the '
                                     f'image metas (batch_img_metas) for its forward')
                samples = [SegDataSample(metainfo=dict(m, batch_input_shape=m['img_shape']))
                           for m in batch_img_metas]
                output = self.head(inputs, samples)
            else:
                output = self.head(inputs, *prev)
            return (output, *self._tapped(inputs, output))

    def _branch_input(self, scores: Tensor, feature: Tensor
                      ) -> tuple[Tensor, Tensor | None]:
        """The features the branch reads and, with ``read_probabilities``, the
        class probabilities at their size (else None)."""
        scale = self.feature_grad_scale
        if scale == 0.0:
            x = feature.detach()
        elif scale < 1.0:
            # forward value unchanged; backward scaled by `scale`
            x = feature.detach() + scale * (feature - feature.detach())
        else:
            x = feature
        if not self.read_probabilities:
            return x, None
        prob = softmax_over_classes(scores.detach())
        if prob.shape[2:] != x.shape[2:]:
            prob = resize(prob, x.shape[2:], mode='bilinear',
                          align_corners=self.align_corners)
        return x, prob.to(x.dtype)

    def _branch(self, feature: Tensor, prob: Tensor | None) -> Tensor:
        """The branch on the features and the probabilities side by side.

        In eval mode its first layer takes the two apart, with its weights
        split by input channel: the same values up to float rounding, with
        no concatenation. The concatenation's channel count (256 features
        and 19 classes: 275) is one that onnxruntime's blocked convolutions
        do not take; apart, the features' convolution runs blocked (the
        ``DualHead`` student's ONNX graph at 1024x2048: 1.14x to 1.10x the
        plain one's, ``docs/cost_at_scale.md``).
        """
        first, rest = self.uncertainty_branch[0], self.uncertainty_branch[1:]
        if prob is None or self.training or not _eval_splittable(first):
            x = feature if prob is None else torch.cat([feature, prob], 1)
            return self.uncertainty_branch(x)
        if isinstance(first, DepthwiseSeparableConvModule):
            parts = _depthwise_apart(first.depthwise_conv, [feature, prob])
            return rest(_dense_apart(first.pointwise_conv, parts))
        return rest(_dense_apart(first, [feature, prob]))

    def forward(self, inputs: Sequence[Tensor], *prev: Tensor,
                batch_img_metas: list[dict] | None = None) -> Tensor:
        """(B, C + K, h, w): the class scores then the decoded uncertainty maps."""
        scores, raw, _ = self.forward_with_uncertainty(
            inputs, *prev, batch_img_metas=batch_img_metas)
        return torch.cat([scores, self._maps(scores, raw)], 1)

    def loss_and_outputs(self, inputs: Sequence[Tensor], *args: Any
                         ) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor]:
        """The wrapped head's own ``loss(inputs, [prev_output,]
        batch_data_samples, train_cfg)``, and the class scores, raw
        uncertainty outputs and features of that same forward."""
        with self.tap:
            losses = self.head.loss(inputs, *args)
            scores, raw, feature = self._tapped(inputs)
        return losses, scores, raw, feature

    def loss(self, inputs: Sequence[Tensor], *args: Any) -> dict[str, Tensor]:
        """The wrapped head's segmentation loss (no teacher here); arguments
        as the head's ``loss``. The branch joins the graph with weight 0, so
        that DDP finds every parameter used."""
        losses, _, raw, _ = self.loss_and_outputs(inputs, *args)
        first = next(key for key in losses if 'loss' in key)
        losses[first] = losses[first] + 0.0 * raw.sum()
        return losses

    def predict_parts(self, inputs: Sequence[Tensor], *args: Any
                      ) -> tuple[Tensor, Tensor]:
        """The wrapped head's own ``predict(inputs, [prev_output,]
        batch_img_metas, test_cfg)`` (B, C, H, W) and the K decoded maps
        resized to the same size (B, K, H, W)."""
        with self.tap:
            seg_logits = self.head.predict(inputs, *args)
            _, raw, _ = self._tapped(inputs)
        return seg_logits, self._maps(seg_logits, raw)

    def predict(self, inputs: Sequence[Tensor], *args: Any) -> Tensor:
        """:meth:`predict_parts` side by side: (B, C + K, H, W)."""
        return torch.cat(self.predict_parts(inputs, *args), 1)


def max_over_classes(logits: Tensor) -> Tensor:
    """max_c z_c over dim 1 (B, C, H, W) → (B, H, W), class map by class map
    (see :func:`softmax_entropy` for why not a reduction over the axis)."""
    classes = logits.unbind(1)
    top = classes[0]
    for z in classes[1:]:
        top = torch.maximum(top, z)
    return top


def softmax_over_classes(logits: Tensor) -> Tensor:
    """softmax(z) over dim 1 (B, C, H, W) as e_c / S with e_c = exp(z_c − m),
    the maximum m and the sum S taken class map by class map, as in
    :func:`softmax_entropy` and for its reason: onnxruntime runs a Softmax
    over the channel axis through transposes (61 ms of the ``DualHead``
    student's 2.1 s ONNX graph at 1024x2048, 19 classes at 1/4 of it)."""
    weight = (logits - max_over_classes(logits)[:, None]).exp()
    parts = weight.unbind(1)
    total = parts[0]
    for w in parts[1:]:
        total = total + w
    return weight / total[:, None]


def _eval_splittable(layer: nn.Module) -> bool:
    """Whether :func:`_dense_apart` (and :func:`_depthwise_apart`) compute
    ``layer``, a ConvModule (dense) or a DepthwiseSeparableConvModule: each
    conv, then batch norm with running statistics, then activation."""
    if isinstance(layer, DepthwiseSeparableConvModule):
        roles = [(layer.depthwise_conv, True), (layer.pointwise_conv, False)]
    else:
        roles = [(layer, False)]
    for module, depthwise in roles:
        if (not isinstance(module, ConvModule)
                or module.order != ('conv', 'norm', 'act')):
            return False
        conv = module.conv
        groups = conv.in_channels if depthwise else 1
        if (type(conv) is not nn.Conv2d or conv.groups != groups
                or conv.padding_mode != 'zeros' or module.with_explicit_padding
                or module.with_spectral_norm):
            return False
        if module.with_norm and not (
                isinstance(module.norm, nn.modules.batchnorm._BatchNorm)
                and module.norm.track_running_stats and module.norm.affine):
            return False
    return True


def _norm_act(module: ConvModule, y: Tensor, channels: slice) -> Tensor:
    """``module``'s batch norm (eval: running statistics) and activation on
    ``y``, whose channels are ``channels`` of the module's output."""
    if module.with_norm:
        bn = module.norm
        y = F.batch_norm(y, bn.running_mean[channels], bn.running_var[channels],
                         bn.weight[channels], bn.bias[channels], False, 0.0, bn.eps)
    return module.activate(y) if module.with_activation else y


def _dense_apart(module: ConvModule, parts: list[Tensor]) -> Tensor:
    """``module`` on the channel concatenation of ``parts``: the sum of each
    part's convolution with its input channels' weights, then norm and
    activation."""
    conv, total, start = module.conv, 0, 0
    for part in parts:
        # no in-place `+=` on the start: under tracing a shape is a tensor,
        # which the slice would keep and see change
        end = start + part.shape[1]
        weight = conv.weight[:, start:end]
        start = end
        total = total + F.conv2d(part, weight, None, conv.stride, conv.padding,
                                 conv.dilation)
    if conv.bias is not None:
        total = total + conv.bias[:, None, None]
    return _norm_act(module, total, slice(None))


def _depthwise_apart(module: ConvModule, parts: list[Tensor]) -> list[Tensor]:
    """A depthwise ``module`` on the channel concatenation of ``parts``, part
    by part (each channel is its own)."""
    conv, out, start = module.conv, [], 0
    for part in parts:
        end = start + part.shape[1]  # not `+=`: see _dense_apart
        ch, start = slice(start, end), end
        bias = None if conv.bias is None else conv.bias[ch]
        y = F.conv2d(part, conv.weight[ch], bias, conv.stride, conv.padding,
                     conv.dilation, part.shape[1])
        out.append(_norm_act(module, y, ch))
    return out


def softmax_entropy(logits: Tensor) -> Tensor:
    """H[softmax(z)] over dim 1 (B, C, H, W) → (B, H, W), as log S − Σ_c e_c
    (z_c − m) / S with m = max_c z_c, e_c = exp(z_c − m), S = Σ_c e_c: one
    log per pixel instead of one per class (−Σ p log p).

    The max and the sums run class by class over (B, H, W) maps rather than
    as reductions over the channel axis: ONNX Runtime reduces over a middle
    axis through transposes, and at 256x512 with 19 classes (one thread) the
    reductions took 17 ms against 6 ms for this form, where the plain member
    costs 18 ms; eager PyTorch gives 6 ms either way on one thread.
    """
    top = max_over_classes(logits)
    classes = logits.unbind(1)
    total = weighted = torch.zeros_like(top)
    for z in classes:
        shifted = z - top
        weight = shifted.exp()
        total = total + weight
        weighted = weighted + weight * shifted
    return total.log() - weighted / total


def _check_derived(derived: tuple[str, ...], names: tuple[str, ...]) -> tuple[str, ...]:
    """Derived maps must be derivable, among ``names``, and have what they
    are derived from regressed."""
    for name in derived:
        if name not in DERIVABLE:
            raise ValueError(f'DualHead: derived_names holds {name!r}; only '
                             f'{sorted(DERIVABLE)} can be derived')
        if name not in names:
            raise ValueError(f'DualHead: derived map {name!r} is not in '
                             f'uncertainty_names {list(names)}; add it there')
        if DERIVABLE[name] not in names or DERIVABLE[name] in derived:
            raise ValueError(f'DualHead: {name!r} is derived from a regressed '
                             f'{DERIVABLE[name]!r}; add {DERIVABLE[name]!r} to '
                             f'uncertainty_names')
    return derived


def _check_decode_head(head: nn.Module, cfg: ConfigType) -> None:
    """An mmseg decode head: what segmentors call (``loss``, ``predict``,
    ``num_classes``), e.g. a ``BaseDecodeHead`` or mmseg's MaskFormer heads."""
    if isinstance(head, BaseDecodeHead):
        return
    missing = [name for name in ('loss', 'predict', 'num_classes', 'align_corners')
               if not hasattr(head, name)]
    if missing:
        raise TypeError(
            f'DualHead: head (type={cfg.get("type") if isinstance(cfg, dict) else cfg!r}) '
            f'is not an mmseg decode head: it has no {", ".join(missing)}; give a '
            f'decode head config (a BaseDecodeHead subclass, e.g. '
            f'dict(type="FCNHead", ...)) as DualHead\'s head')
