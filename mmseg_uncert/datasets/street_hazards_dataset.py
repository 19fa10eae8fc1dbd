"""StreetHazards as an mmseg dataset, with its anomaly class as gt_ood."""
from __future__ import annotations

import os.path as osp

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .layout_checks import require_folders

#: the anomaly class in the annotation files (1-based labels: 0 is unused,
#: 1..13 the known classes, 14 the anomaly; eval_ood.py subtracts 1 and
#: calls class 13 out-of-distribution)
STREET_HAZARDS_ANOMALY_VALUE = 14

#: every annotation value of the known classes (and 0) is in-distribution,
#: as eval_ood.py counts every pixel but the anomaly's; values above 14 are
#: void
STREET_HAZARDS_OOD_LABEL_MAP = {
    **{value: 0 for value in range(STREET_HAZARDS_ANOMALY_VALUE)},
    STREET_HAZARDS_ANOMALY_VALUE: 1,
}

_LAYOUT = ('<data_root>/test/images/test/<town>/<name>.png and '
           '<data_root>/test/annotations/test/<town>/<name>.png (the '
           'streethazards_test.tar archive unpacked; towns such as t5)')


@DATASETS.register_module()
class StreetHazardsDataset(BaseSegDataset):
    """StreetHazards (Hendrycks et al., "Scaling Out-of-Distribution Detection
    for Real-World Settings", ICML 2022), in the layout of its archives::

        <data_root>/test/images/test/t5/300.png
        <data_root>/test/annotations/test/t5/300.png
        <data_root>/train/images/{training,validation}/<town>/*.png   (train archive)

    Annotations are single-channel PNGs with 1-based labels: 1..13 are the
    13 known classes (``METAINFO``, the reference code's ``num_class = 13``,
    ``unlabeled`` among them), 14 the anomaly (test images only). The
    reference ``dataset.py`` subtracts 1 (``segm - 1``); here
    ``reduce_zero_label=True`` does the same, and the anomaly is mapped to
    ignore (255) in ``gt_sem_seg``, so IoU is over the known classes. Each
    sample also gets ``ood_path`` (its annotation) and ``ood_label_map`` =
    :data:`STREET_HAZARDS_OOD_LABEL_MAP`:
    ``LoadUncertaintyAnnotations(keys=('ood', ))`` then gives ``gt_ood`` = 1
    on the anomaly and 0 on every other pixel, as ``eval_ood.py`` splits
    them. Every town folder under the image folder is listed, as the
    reference ``create_dataset.py`` does. A data root missing the folders or
    an annotation fails when the dataset is built, naming the first missing
    path.

    Args:
        **kwargs: :class:`~mmseg.datasets.BaseSegDataset` arguments
            (``data_root``, ``data_prefix``, ``pipeline``, ...).
            ``reduce_zero_label`` must stay True (the labels are 1-based).
    """

    METAINFO = dict(
        classes=('unlabeled', 'building', 'fence', 'other', 'pedestrian',
                 'pole', 'road line', 'road', 'sidewalk', 'vegetation', 'car',
                 'wall', 'traffic sign'),
        # the colours of the reference create_dataset.py
        palette=[[0, 0, 0], [70, 70, 70], [190, 153, 153], [250, 170, 160],
                 [220, 20, 60], [153, 153, 153], [157, 234, 50],
                 [128, 64, 128], [244, 35, 232], [107, 142, 35], [0, 0, 142],
                 [102, 102, 156], [220, 220, 0]])

    def __init__(self,
                 img_suffix: str = '.png',
                 seg_map_suffix: str = '.png',
                 data_prefix: dict = dict(img_path='test/images/test',
                                          seg_map_path='test/annotations/test'),
                 reduce_zero_label: bool = True,
                 **kwargs) -> None:
        if not reduce_zero_label:
            raise ValueError(
                'StreetHazardsDataset: reduce_zero_label must be True; the '
                'annotations are 1-based (1..13 known classes, 14 anomaly)')
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         data_prefix=data_prefix,
                         reduce_zero_label=reduce_zero_label, **kwargs)

    def load_data_list(self) -> list[dict]:
        img_dir = self.data_prefix.get('img_path', '')
        ann_dir = self.data_prefix.get('seg_map_path', '')
        require_folders(type(self).__name__, (img_dir, ann_dir), _LAYOUT)
        data_list = super().load_data_list()
        if not data_list:
            raise FileNotFoundError(
                f'{osp.join(img_dir, "<town>", "*" + self.img_suffix)} matches '
                f'no image: {type(self).__name__} expects {_LAYOUT}')
        # after the 1-based shift the anomaly is class 13, beyond the known
        # ones: ignore it in gt_sem_seg (on top of any class subset's map)
        label_map = dict(self.label_map or {})
        label_map[STREET_HAZARDS_ANOMALY_VALUE - 1] = 255
        for info in data_list:
            if not osp.isfile(info['seg_map_path']):
                raise FileNotFoundError(
                    f'{info["seg_map_path"]} is missing: image '
                    f'{info["img_path"]} has no annotation. '
                    f'{type(self).__name__} expects {_LAYOUT}')
            info['label_map'] = label_map
            info['ood_path'] = info['seg_map_path']
            info['ood_label_map'] = dict(STREET_HAZARDS_OOD_LABEL_MAP)
        return data_list
