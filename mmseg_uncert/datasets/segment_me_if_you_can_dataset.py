"""RoadAnomaly21 and RoadObstacle21 (SegmentMeIfYouCan) as mmseg datasets."""
from __future__ import annotations

import os
import os.path as osp
from typing import Sequence

from mmseg.datasets import BaseSegDataset, CityscapesDataset
from mmseg.registry import DATASETS

from .layout_checks import require_folders

#: the benchmark's mask values: 0 = not anomaly, 1 = anomaly (everything
#: else, 255 in the files, is void)
SMIYC_OOD_LABEL_MAP = {0: 0, 1: 1}

_LAYOUT = ('<data_root>/images/<frame><img_suffix> and '
           '<data_root>/labels_masks/<frame>_labels_semantic.png, as in the '
           "benchmark's dataset_AnomalyTrack (RoadAnomaly21, .jpg) and "
           'dataset_ObstacleTrack (RoadObstacle21, .webp) archives')


@DATASETS.register_module()
class SegmentMeIfYouCanDataset(BaseSegDataset):
    """RoadAnomaly21 / RoadObstacle21 of SegmentMeIfYouCan (Chan et al.,
    NeurIPS 2021 Datasets and Benchmarks), in the layout the benchmark
    distributes and reads (``road_anomaly_benchmark/datasets/tracks.py``)::

        dataset_AnomalyTrack/images/<frame>.jpg          (RoadAnomaly21)
        dataset_AnomalyTrack/labels_masks/<frame>_labels_semantic.png
        dataset_ObstacleTrack/images/<frame>.webp        (RoadObstacle21)
        dataset_ObstacleTrack/labels_masks/<frame>_labels_semantic.png

    The masks are single-channel PNGs: 0 = not anomaly (not obstacle), 1 =
    anomaly (obstacle), 255 = void. Each sample gets ``ood_path`` = its mask
    and ``ood_label_map`` = :data:`SMIYC_OOD_LABEL_MAP`, so
    ``LoadUncertaintyAnnotations(keys=('ood', ))`` gives ``gt_ood`` with the
    benchmark's values (other values void), which
    :class:`~mmseg_uncert.evaluation.AnomalyMetric` reads. The mask is not a
    semantic label: the classes (``METAINFO``) are the 19 Cityscapes classes
    the anomalies are defined against, i.e. what the evaluated model predicts.

    The benchmark publishes the masks of its validation frames only
    (``validation*``; the test masks stay on its server), so by default only
    frames whose name starts with ``frame_prefix='validation'`` are listed;
    ``exclude_prefixes`` drops more (the benchmark's ObstacleTrack-validation
    split leaves out ten, see ``configs/_base_/datasets/road_obstacle21.py``).
    A listed frame without its mask, or a data root without the folders,
    fails when the dataset is built, naming the first missing path.

    Args:
        img_suffix: ``'.jpg'`` (RoadAnomaly21) or ``'.webp'`` (RoadObstacle21).
        frame_prefix: list only frames whose name starts with it (``''``: all).
        exclude_prefixes: leave out frames whose name starts with any of them.
        **kwargs: :class:`~mmseg.datasets.BaseSegDataset` arguments
            (``data_root``, ``data_prefix``, ``pipeline``, ...).
    """

    METAINFO = CityscapesDataset.METAINFO

    def __init__(self,
                 img_suffix: str = '.jpg',
                 seg_map_suffix: str = '_labels_semantic.png',
                 frame_prefix: str = 'validation',
                 exclude_prefixes: Sequence[str] = (),
                 data_prefix: dict = dict(img_path='images',
                                          seg_map_path='labels_masks'),
                 **kwargs) -> None:
        self.frame_prefix = frame_prefix
        self.exclude_prefixes = tuple(exclude_prefixes)
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         data_prefix=data_prefix, **kwargs)

    def load_data_list(self) -> list[dict]:
        img_dir = self.data_prefix.get('img_path', '')
        ann_dir = self.data_prefix.get('seg_map_path', '')
        require_folders(type(self).__name__, (img_dir, ann_dir), _LAYOUT)
        frames = sorted(
            name[:-len(self.img_suffix)] for name in os.listdir(img_dir)
            if name.endswith(self.img_suffix)
            and name.startswith(self.frame_prefix)
            and not any(name.startswith(p) for p in self.exclude_prefixes))
        if not frames:
            raise FileNotFoundError(
                f'{osp.join(img_dir, self.frame_prefix + "*" + self.img_suffix)}'
                f' matches no image: {type(self).__name__} expects {_LAYOUT} '
                f'(set img_suffix for .webp/.png images, frame_prefix=\'\' '
                f'for frames not named validation*)')
        data_list = []
        for frame in frames:
            mask = osp.join(ann_dir, frame + self.seg_map_suffix)
            if not osp.isfile(mask):
                raise FileNotFoundError(
                    f'{mask} is missing: frame {frame} has no mask. '
                    f'{type(self).__name__} expects {_LAYOUT}')
            data_list.append(dict(
                img_path=osp.join(img_dir, frame + self.img_suffix),
                seg_map_path=mask, ood_path=mask,
                ood_label_map=dict(SMIYC_OOD_LABEL_MAP),
                label_map=self.label_map,
                reduce_zero_label=self.reduce_zero_label, seg_fields=[]))
        return data_list
