"""Labelled source and unlabelled target images in one training batch."""
from __future__ import annotations

from typing import Any

from mmengine.dataset import BaseDataset
from torch.utils.data import Dataset

from mmseg.registry import DATASETS

#: fields of a packed data sample that hold annotations
_ANNOTATION_FIELDS = ('gt_sem_seg', 'gt_edge_map', 'gt_depth_map', 'gt_aleatoric', 'gt_ood')


@DATASETS.register_module()
class SourceTargetDataset(Dataset):
    """Pairs each labelled source sample with an unlabelled target sample,
    for unsupervised domain adaptation.

    Item ``i`` is ``dict(source=source[i % S], target=target[i % T])`` and
    the length is ``max(S, T)``, so that a shuffled sampler shows every
    image of both domains once per epoch. mmengine's ``pseudo_collate``
    batches it into ``dict(source=..., target=...)``, each an ordinary mmseg
    batch, which domain-adaptation segmentors preprocess separately.

    The target is unlabelled by contract: any annotation its pipeline loads
    (a labelled split used as the target) is removed from the packed sample
    here, so a model cannot read it.

    Args:
        source: the labelled source dataset (config or object).
        target: the target dataset (config or object); its pipeline should
            not load annotations (they are dropped if it does).
    """

    def __init__(self, source: dict | Dataset, target: dict | Dataset) -> None:
        self.source = DATASETS.build(source) if isinstance(source, dict) else source
        self.target = DATASETS.build(target) if isinstance(target, dict) else target
        for name, dataset in (('source', self.source), ('target', self.target)):
            if len(dataset) == 0:
                raise ValueError(f'SourceTargetDataset: the {name} dataset is empty '
                                 f'(check its data_root and data_prefix)')

    @property
    def metainfo(self) -> dict:
        """The source's classes and palette (the label space trained on)."""
        return self.source.metainfo

    def __len__(self) -> int:
        return max(len(self.source), len(self.target))

    def __getitem__(self, index: int) -> dict[str, Any]:
        source = self.source[index % len(self.source)]
        target = self.target[index % len(self.target)]
        sample = target['data_samples']
        for field in _ANNOTATION_FIELDS:
            if field in sample:
                delattr(sample, field)
        return dict(source=source, target=target)

    def full_init(self) -> None:
        """Lazy-initialised member datasets are initialised here."""
        for dataset in (self.source, self.target):
            if isinstance(dataset, BaseDataset):
                dataset.full_init()
