"""The synthetic benchmark as an mmseg dataset, with its uncertainty ground truth."""
from __future__ import annotations

import os.path as osp

from mmseg.datasets import CityscapesDataset
from mmseg.registry import DATASETS

from .synthetic_streets import FILE_SUFFIXES


@DATASETS.register_module()
class SyntheticStreetsDataset(CityscapesDataset):
    """:class:`~mmseg.datasets.CityscapesDataset` plus aleatoric and OOD masks.

    Every sample also gets ``aleatoric_path`` (``*_gtFine_aleatoric.png``, the
    label entropy) and ``ood_path`` (``*_gtFine_ood.png``) next to its label,
    which :class:`~mmseg_uncert.datasets.transforms.LoadUncertaintyAnnotations`
    reads. The files are checked when the dataset is built, so a data root
    without them fails at once, naming the first missing file.

    Args:
        with_uncertainty_gt: look for the two masks (set False to use the
            dataset as a plain Cityscapes dataset, e.g. as unlabelled target).
        **kwargs: :class:`~mmseg.datasets.CityscapesDataset` arguments.
    """

    def __init__(self, with_uncertainty_gt: bool = True, **kwargs) -> None:
        self.with_uncertainty_gt = with_uncertainty_gt
        super().__init__(**kwargs)

    def load_data_list(self) -> list[dict]:
        data_list = super().load_data_list()
        if not self.with_uncertainty_gt:
            return data_list
        for info in data_list:
            seg_map = info.get('seg_map_path')
            if seg_map is None:
                raise ValueError(
                    f'{type(self).__name__}: image {info["img_path"]} has no '
                    f'label path (data_prefix.seg_map_path is unset), so its '
                    f'aleatoric/OOD masks cannot be found; set seg_map_path or '
                    f'with_uncertainty_gt=False')
            stem = seg_map[:-len(self.seg_map_suffix)]
            for key in ('aleatoric', 'ood'):
                path = stem + FILE_SUFFIXES[key]
                if not osp.isfile(path):
                    raise FileNotFoundError(
                        f'{path} is missing: image {info["img_path"]} has no '
                        f'{key} mask. Generate the data root with '
                        f'tools/make_synthetic.py, or set '
                        f'with_uncertainty_gt=False in the dataset config to '
                        f'use it without uncertainty ground truth.')
                info[f'{key}_path'] = path
        return data_list
