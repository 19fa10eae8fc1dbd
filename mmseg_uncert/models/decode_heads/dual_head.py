"""A decode head with a second, uncertainty branch: the student's head."""
from __future__ import annotations

from typing import Sequence

import torch
from mmcv.cnn import ConvModule, DepthwiseSeparableConvModule
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmseg.registry import MODELS
from mmseg.utils import ConfigType, SampleList

from .classifier_tap import take_tapped, tap_classifier

#: heads whose classifier input the branch is tested to share
SUPPORTED_HEADS = ('FCNHead', 'DepthwiseSeparableFCNHead', 'ASPPHead',
                   'DepthwiseSeparableASPPHead', 'UPerHead', 'LRASPPHead', 'PSPHead',
                   'SegformerHead')


#: the branch's hidden 3x3 layer
BRANCH_CONVS = {'conv': ConvModule, 'depthwise_separable': DepthwiseSeparableConvModule}


@MODELS.register_module()
class DualHead(BaseModule):
    """Any supported mmseg decode head plus an uncertainty branch.

    The branch (3x3 conv-BN-ReLU, then 1x1 conv) reads the very features the
    wrapped head's classifier reads, and outputs K channels named by
    ``uncertainty_names`` (e.g. ``('std',)`` or ``('epistemic',
    'aleatoric')``), decoded by ``loss_uncertainty``'s form (see
    :class:`~mmseg_uncert.models.losses.UncertaintyRegressionLoss`). The
    segmentation logits are the wrapped head's, unchanged. ``predict`` gives
    C + K channels, which
    :class:`~mmseg_uncert.models.segmentors.UncertaintyEncoderDecoder` turns
    into ``seg_logits`` and ``pred_uncertainty``; one network, one pass.

    Trained on its own (``loss``) only the segmentation loss applies; the
    uncertainty branch learns from a teacher in
    :class:`~mmseg_uncert.models.segmentors.EnsembleDistiller`.

    Two switches decide what the branch sees and what it may change:

    * ``read_probabilities`` also feeds the branch the classifier's softmax
      (detached). An ensemble's spread is largely a function of where its mean
      prediction is unsure, and the student's own prediction is distilled
      from that mean, so handing it to the branch spares the branch
      re-deriving it from the features.
    * ``feature_grad_scale`` is the share of the uncertainty loss's gradient
      that reaches the shared features (1 = all, 0 = stop-gradient): the
      branch's loss must not pull the features away from segmentation.

    Args:
        head: the wrapped decode head config (one of :data:`SUPPORTED_HEADS`).
        uncertainty_names: names of the K uncertainty channels.
        branch_channels: width of the branch's hidden layer.
        branch_conv: the hidden layer's 3x3 convolution, ``'conv'`` (dense)
            or ``'depthwise_separable'`` (depthwise 3x3 then pointwise 1x1,
            as in MobileNets: fewer multiply-adds). For light networks: on a
            Fast-SCNN at 256x512 (one thread) the DualHead took 21 ms with
            the dense branch and 18 ms with this one, against 8 ms for the
            bare head and about 57 ms for the backbone.
        loss_uncertainty: the uncertainty loss; its form sets the outputs.
        read_probabilities: also feed the branch the (detached) softmax.
        feature_grad_scale: share of the branch's gradient that reaches the
            shared features, in [0, 1].
    """

    def __init__(self,
                 head: ConfigType,
                 uncertainty_names: Sequence[str] = ('std', ),
                 branch_channels: int = 64,
                 branch_conv: str = 'conv',
                 loss_uncertainty: ConfigType = dict(type='UncertaintyRegressionLoss'),
                 read_probabilities: bool = True,
                 feature_grad_scale: float = 1.0,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        head_type = head.get('type') if isinstance(head, dict) else None
        if head_type not in SUPPORTED_HEADS:
            raise TypeError(
                f'DualHead cannot hook {head_type!r}: supported heads are '
                f'{", ".join(SUPPORTED_HEADS)} (heads whose forward ends in '
                f'one conv_seg classifier)')
        if not uncertainty_names:
            raise ValueError('DualHead: uncertainty_names is empty')
        if not 0.0 <= feature_grad_scale <= 1.0:
            raise ValueError(f'DualHead: feature_grad_scale must lie in [0, 1], '
                             f'got {feature_grad_scale}')
        self.read_probabilities = read_probabilities
        self.feature_grad_scale = float(feature_grad_scale)
        self.head = MODELS.build(head)
        conv_seg = tap_classifier(self.head, 'DualHead')
        self.loss_uncertainty = MODELS.build(loss_uncertainty)
        self.uncertainty_names = tuple(uncertainty_names)
        outputs = len(self.uncertainty_names) * self.loss_uncertainty.outputs_per_channel
        if branch_conv not in BRANCH_CONVS:
            raise ValueError(f'DualHead: branch_conv must be one of {tuple(BRANCH_CONVS)}, '
                             f'got {branch_conv!r}')
        in_channels = conv_seg.in_channels + (self.head.num_classes if read_probabilities
                                              else 0)
        self.uncertainty_branch = nn.Sequential(
            BRANCH_CONVS[branch_conv](
                in_channels, branch_channels, 3, padding=1,
                norm_cfg=getattr(self.head, 'norm_cfg', None) or dict(type='BN'),
                act_cfg=dict(type='ReLU')),
            nn.Conv2d(branch_channels, outputs, 1))
        self.num_classes = self.head.num_classes
        self.align_corners = self.head.align_corners
        self.ignore_index = self.head.ignore_index
        self.threshold = getattr(self.head, 'threshold', None)
        self.out_channels = self.num_classes + len(self.uncertainty_names)

    @property
    def feature_channels(self) -> int:
        """Channels of the features the classifier (and the branch) read."""
        return self.head.conv_seg.in_channels

    def forward_with_uncertainty(self, inputs: Sequence[Tensor]
                                 ) -> tuple[Tensor, Tensor, Tensor]:
        """Logits (B, C, h, w), raw uncertainty outputs and the shared
        features (B, F, h, w) the classifier read."""
        logits = self.head(inputs)
        if not isinstance(logits, Tensor):
            raise TypeError(f'DualHead: {type(self.head).__name__} returns '
                            f'{type(logits).__name__}, not one tensor')
        feature = take_tapped(self.head.conv_seg, 'DualHead')
        return logits, self.uncertainty_branch(self._branch_input(logits, feature)), feature

    def _branch_input(self, logits: Tensor, feature: Tensor) -> Tensor:
        scale = self.feature_grad_scale
        if scale == 0.0:
            x = feature.detach()
        elif scale < 1.0:
            # forward value unchanged; backward scaled by `scale`
            x = feature.detach() + scale * (feature - feature.detach())
        else:
            x = feature
        if self.read_probabilities:
            x = torch.cat([x, logits.detach().softmax(1)], 1)
        return x

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """(B, C + K, h, w): the logits then the decoded uncertainty maps."""
        logits, raw, _ = self.forward_with_uncertainty(inputs)
        return torch.cat([logits, self.loss_uncertainty.decode(raw)], 1)

    def loss(self, inputs: Sequence[Tensor], batch_data_samples: SampleList,
             train_cfg: ConfigType) -> dict[str, Tensor]:
        """The wrapped head's segmentation loss (no teacher here). The branch
        joins the graph with weight 0, so that DDP finds every parameter used."""
        logits, raw, _ = self.forward_with_uncertainty(inputs)
        losses = self.head.loss_by_feat(logits, batch_data_samples)
        first = next(key for key in losses if 'loss' in key)
        losses[first] = losses[first] + 0.0 * raw.sum()
        return losses

    def predict(self, inputs: Sequence[Tensor], batch_img_metas: list[dict],
                test_cfg: ConfigType) -> Tensor:
        return self.head.predict_by_feat(self.forward(inputs), batch_img_metas)
