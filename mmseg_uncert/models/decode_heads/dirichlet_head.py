"""A decode head whose logits are a Dirichlet's log-concentrations (EnD²)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from mmseg.registry import MODELS
from mmseg.utils import ConfigType, SampleList

from ..uncertainty import dirichlet_uncertainty
from .uncertainty_head import UncertaintyHead


@MODELS.register_module()
class DirichletHead(UncertaintyHead):
    """Any mmseg decode head read as a Prior Network: its C logits z are the
    log-concentrations of a Dirichlet over the class probabilities,
    α_c = exp(z_c) (Malinin et al., "Ensemble Distribution Distillation",
    ICLR 2020).

    The segmentation is the head's own: E π = softmax(z), so the prediction,
    CE and KD are those of the wrapped head, unchanged. The overall scale of
    the logits, which the softmax ignores, becomes the Dirichlet's precision
    α₀: how much the members would agree. ``predict`` gives C + 3 channels,
    the logits then ``total``, ``aleatoric`` and ``epistemic`` in closed form
    (:func:`~mmseg_uncert.models.uncertainty.dirichlet_uncertainty`), which
    :class:`~mmseg_uncert.models.segmentors.UncertaintyEncoderDecoder` turns
    into ``seg_logits`` and ``pred_uncertainty``: one pass, no extra branch.

    The Dirichlet is fitted to an ensemble's members in
    :class:`~mmseg_uncert.models.segmentors.EnsembleDistiller` by
    ``loss_distribution``
    (:class:`~mmseg_uncert.models.losses.EnsembleDistributionDistillationLoss`);
    trained on its own (``loss``) only the segmentation loss applies.

    Args:
        head: the wrapped decode head config (any head whose forward returns
            one logits tensor).
        loss_distribution: the EnD² loss config.
    """

    #: the maps ``predict`` appends to the logits, in this order
    uncertainty_names = ('total', 'aleatoric', 'epistemic')

    def __init__(self,
                 head: ConfigType,
                 loss_distribution: ConfigType = dict(
                     type='EnsembleDistributionDistillationLoss'),
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.head = MODELS.build(head)
        self.loss_distribution = MODELS.build(loss_distribution)
        self._share_head_attributes()

    def forward_logits(self, inputs: Sequence[Tensor]) -> Tensor:
        """The wrapped head's logits z = ln α, (B, C, h, w)."""
        logits = self.head(inputs)
        if not isinstance(logits, Tensor):
            raise TypeError(f'DirichletHead: {type(self.head).__name__} returns '
                            f'{type(logits).__name__}, not one logits tensor')
        return logits

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """(B, C + 3, h, w): the logits then total, aleatoric, epistemic."""
        logits = self.forward_logits(inputs)
        maps = dirichlet_uncertainty(logits)
        return torch.cat([logits, torch.stack(
            [maps[name].to(logits.dtype) for name in self.uncertainty_names], 1)], 1)

    def loss(self, inputs: Sequence[Tensor], batch_data_samples: SampleList,
             train_cfg: ConfigType) -> dict[str, Tensor]:
        """The wrapped head's segmentation loss (no teacher here)."""
        return self.head.loss_by_feat(self.forward_logits(inputs), batch_data_samples)

    def predict(self, inputs: Sequence[Tensor], batch_img_metas: list[dict],
                test_cfg: ConfigType) -> Tensor:
        return self.head.predict_by_feat(self.forward(inputs), batch_img_metas)
