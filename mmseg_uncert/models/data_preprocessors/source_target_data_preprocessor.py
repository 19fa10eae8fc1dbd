"""Preprocess a domain-adaptation batch: source and target separately."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS


def image_mask(batch_img_metas: list[dict], size: tuple[int, int],
               device: torch.device, input_size: tuple[int, int] | None = None
               ) -> Tensor:
    """(B, h, w) bool: the pixels of each image (``img_shape``, top-left)
    inside a padded input batch of size ``input_size``, on a map of size
    ``size`` (a feature map's, or the input's when ``input_size`` is None);
    padding is False."""
    input_size = tuple(input_size or size)
    masks = []
    for meta in batch_img_metas:
        img_h, img_w = meta['img_shape'][:2]
        h = min(size[0], -(-img_h * size[0] // input_size[0]))
        w = min(size[1], -(-img_w * size[1] // input_size[1]))
        mask = torch.zeros(tuple(size), dtype=torch.bool, device=device)
        mask[:h, :w] = True
        masks.append(mask)
    return torch.stack(masks)


def is_source_target(data: Any) -> bool:
    """Whether ``data`` is a ``dict(source=..., target=...)`` batch."""
    return isinstance(data, dict) and set(data) == {'source', 'target'}


@MODELS.register_module()
class SourceTargetDataPreProcessor(SegDataPreProcessor):
    """mmseg's SegDataPreProcessor, applied to the source and the target half
    of a :class:`~mmseg_uncert.datasets.SourceTargetDataset` batch one after
    the other (their images may differ in size).

    A ``dict(source=batch, target=batch)`` becomes ``dict(inputs=dict(source=
    Tensor, target=Tensor), data_samples=dict(source=[...], target=[...]))``,
    which reaches the segmentor's ``loss`` through the runner's usual
    ``forward(**data, mode='loss')``: single-process and DDP training alike,
    since MMDistributedDataParallel calls the preprocessor then ``forward``.
    Ordinary batches (validation, test) are preprocessed as by the parent.
    """

    def forward(self, data: dict, training: bool = False) -> dict[str, Any]:
        if not is_source_target(data):
            return super().forward(data, training)
        source = super().forward(data['source'], training)
        target = super().forward(data['target'], training)
        return dict(inputs=dict(source=source['inputs'], target=target['inputs']),
                    data_samples=dict(source=source['data_samples'],
                                      target=target['data_samples']))


def source_target_preprocessor(cfg: dict | None) -> dict | None:
    """A segmentor's data_preprocessor config with mmseg's
    SegDataPreProcessor switched to :class:`SourceTargetDataPreProcessor`
    (same arguments); other types are kept (they must handle such batches)."""
    if cfg is None or cfg.get('type') not in ('SegDataPreProcessor',
                                               'mmseg.SegDataPreProcessor'):
        return cfg
    return dict(cfg, type='SourceTargetDataPreProcessor')
