"""A decode head that also predicts the variance of its logits."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from mmseg.models.losses import accuracy
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, SampleList

from ..uncertainty import entropy
from .head_taps import ClassifierTap
from .uncertainty_head import UncertaintyHead


@MODELS.register_module()
class HeteroscedasticHead(UncertaintyHead):
    """Any mmseg decode head plus a log-variance of its logits (Kendall &
    Gal, "What Uncertainties Do We Need in Bayesian Deep Learning for
    Computer Vision?", NeurIPS 2017).

    A 1x1 conv on the features the head's classifier sees predicts
    s = log σ² (one per pixel, or one per class and pixel). Training uses
    :class:`~mmseg_uncert.models.losses.AttenuatedCrossEntropyLoss`:
    x_t = f + σ·ε_t, L = −log (1/T) Σ_t softmax(x_t)_y. At inference the
    head adds two maps, exposed by
    :class:`~mmseg_uncert.models.segmentors.UncertaintyEncoderDecoder` as
    ``pred_uncertainty``:

    * ``aleatoric`` = (1/T) Σ_t H[softmax(f + σ·ε_t)], the expected entropy
      under the learned logit noise (nats, as an ensemble's aleatoric map),
      with T = ``num_inference_samples`` and seeded noise;
    * ``logit_variance`` = σ² (averaged over classes when per class).

    The segmentation logits are the wrapped head's, unchanged.

    Config::

        model = dict(
            type='UncertaintyEncoderDecoder',
            decode_head=dict(
                type='HeteroscedasticHead',
                head=dict(type='FCNHead', in_channels=576, channels=64, ...),
                loss_decode=dict(type='AttenuatedCrossEntropyLoss', num_samples=10)))

    Args:
        head: the decode head config (any head with a ``conv_seg`` classifier).
        per_class_variance: one variance per class instead of per pixel.
        num_inference_samples: T for the ``aleatoric`` map.
        seed: seed of the inference noise.
        loss_decode: the attenuated loss config.
    """

    uncertainty_names: tuple[str, ...] = ('aleatoric', 'logit_variance')

    def __init__(self,
                 head: ConfigType,
                 per_class_variance: bool = False,
                 num_inference_samples: int = 20,
                 seed: int = 0,
                 loss_decode: ConfigType = dict(type='AttenuatedCrossEntropyLoss'),
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.head = MODELS.build(head)
        self.tap = ClassifierTap(self.head, 'HeteroscedasticHead')
        self.num_classes = self.head.num_classes
        self.conv_log_variance = nn.Conv2d(
            self.tap.feature_channels, self.num_classes if per_class_variance else 1, 1)
        # start near zero variance: training begins as plain cross-entropy
        nn.init.normal_(self.conv_log_variance.weight, std=0.01)
        nn.init.constant_(self.conv_log_variance.bias, -10.0)
        self.loss_decode = MODELS.build(loss_decode)
        self.num_inference_samples = num_inference_samples
        self.seed = seed
        self._share_head_attributes()

    def forward_with_variance(self, inputs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Logits f (B, C, h, w) and log-variance s (B, 1 or C, h, w)."""
        with self.tap:
            logits = self.head(inputs)
            if not isinstance(logits, Tensor):
                raise TypeError(f'HeteroscedasticHead: {type(self.head).__name__} '
                                f'returns {type(logits).__name__}, not one tensor')
            feature, _ = self.tap.take()
        return logits, self.conv_log_variance(feature)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """(B, C + 2, h, w): the logits then the two maps (as ``predict``,
        before resizing)."""
        logits, log_variance = self.forward_with_variance(inputs)
        return torch.cat([logits, self.uncertainty_maps(logits, log_variance)], 1)

    def uncertainty_maps(self, logits: Tensor, log_variance: Tensor) -> Tensor:
        """(B, 2, h, w): ``aleatoric`` and ``logit_variance``."""
        std = torch.exp(0.5 * log_variance)
        generator = torch.Generator(device=logits.device).manual_seed(self.seed)
        expected_entropy = torch.zeros_like(logits[:, 0])
        for _ in range(self.num_inference_samples):
            noise = torch.randn(logits.shape, generator=generator,
                                device=logits.device, dtype=logits.dtype)
            expected_entropy += entropy((logits + std * noise).softmax(1))
        expected_entropy /= self.num_inference_samples
        variance = torch.exp(log_variance).mean(1)
        return torch.stack([expected_entropy, variance], 1)

    def loss(self, inputs: Sequence[Tensor], batch_data_samples: SampleList,
             train_cfg: ConfigType) -> dict[str, Tensor]:
        logits, log_variance = self.forward_with_variance(inputs)
        label = self.head._stack_batch_gt(batch_data_samples)
        size = label.shape[2:]
        logits = resize(logits, size=size, mode='bilinear',
                        align_corners=self.align_corners)
        log_variance = resize(log_variance, size=size, mode='bilinear',
                              align_corners=self.align_corners)
        label = label.squeeze(1)
        return {
            self.loss_decode.loss_name: self.loss_decode(
                logits, label, log_variance, ignore_index=self.ignore_index),
            'acc_seg': accuracy(logits, label, ignore_index=self.ignore_index),
        }

    def predict(self, inputs: Sequence[Tensor], batch_img_metas: list[dict],
                test_cfg: ConfigType) -> Tensor:
        """(B, C + 2, H, W): the logits then the two maps, resized as the
        wrapped head resizes its logits."""
        return self.head.predict_by_feat(self.forward(inputs), batch_img_metas)
