"""Fishyscapes Lost & Found (validation) as an mmseg dataset."""
from __future__ import annotations

import os
import os.path as osp
import re

from mmseg.datasets import BaseSegDataset, CityscapesDataset
from mmseg.registry import DATASETS

from .layout_checks import require_folders

#: Fishyscapes' mask values: 0 = in-distribution, 1 = anomaly; anything
#: else (255) is void, as its evaluation keeps ``labels <= 1``
FISHYSCAPES_OOD_LABEL_MAP = {0: 0, 1: 1}

#: ``<fishyscapes id>_<Lost and Found frame>_labels.png``, e.g.
#: ``0000_04_Maurener_Weg_8_000000_000030_labels.png``
_LABEL_FILE = re.compile(r'^(\d+)_(.+)_labels\.png$')
#: a Lost and Found frame is ``<scene>_<sequence:6>_<time:6>``
_FRAME = re.compile(r'^(.+)_\d{6}_\d{6}$')

_LAYOUT = ('<data_root>/fishyscapes_lostandfound/<id>_<frame>_labels.png '
           '(the Fishyscapes archive fishyscapes_lostandfound.zip, unpacked) '
           'and <data_root>/leftImg8bit/{train,test}/<scene>/'
           '<frame>_leftImg8bit.png (the images of the Lost and Found data '
           'set, leftImg8bit.zip)')


@DATASETS.register_module()
class FishyscapesLostAndFoundDataset(BaseSegDataset):
    """Fishyscapes Lost & Found validation (Blum et al., "The Fishyscapes
    Benchmark", IJCV 2021): 100 Lost and Found frames with Fishyscapes'
    anomaly masks.

    Fishyscapes distributes the masks only (``fishyscapes_lostandfound.zip``,
    files ``<id>_<frame>_labels.png``, as ``bdlb``'s ``fishyscapes_tfds.py``
    reads them); the images are Lost and Found's own, matched by frame name
    in its Cityscapes-style layout (as SegmentMeIfYouCan's
    ``FishyscapesLAFSubset`` finds them, in its train or test split)::

        <data_root>/fishyscapes_lostandfound/<id>_<frame>_labels.png
        <data_root>/leftImg8bit/{train,test}/<scene>/<frame>_leftImg8bit.png

    e.g. ``0000_04_Maurener_Weg_8_000000_000030_labels.png`` and
    ``leftImg8bit/train/04_Maurener_Weg_8/`` +
    ``04_Maurener_Weg_8_000000_000030_leftImg8bit.png``.

    Masks are single-channel: 0 = in-distribution, 1 = anomaly, 255 = void.
    Each sample gets ``ood_path`` and ``ood_label_map`` =
    :data:`FISHYSCAPES_OOD_LABEL_MAP` for
    ``LoadUncertaintyAnnotations(keys=('ood', ))``; the classes are the 19
    Cityscapes classes the anomalies are defined against. A data root
    without the masks, or a mask without its image, fails when the dataset is
    built, naming the first missing path.

    Args:
        **kwargs: :class:`~mmseg.datasets.BaseSegDataset` arguments;
            ``data_prefix`` names the image root (``img_path``, default
            ``leftImg8bit``) and the mask folder (``seg_map_path``, default
            ``fishyscapes_lostandfound``).
    """

    METAINFO = CityscapesDataset.METAINFO
    SPLITS = ('train', 'test')

    def __init__(self,
                 img_suffix: str = '_leftImg8bit.png',
                 data_prefix: dict = dict(img_path='leftImg8bit',
                                          seg_map_path='fishyscapes_lostandfound'),
                 **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, data_prefix=data_prefix,
                         **kwargs)

    def _image(self, img_dir: str, frame: str, mask: str) -> str:
        scene = _FRAME.match(frame)
        candidates = [osp.join(img_dir, split, scene.group(1) if scene else '',
                               frame + self.img_suffix) for split in self.SPLITS]
        for path in candidates:
            if osp.isfile(path):
                return path
        raise FileNotFoundError(
            f'{candidates[0]} is missing (and so is {candidates[1]}): the '
            f'mask {mask} has no image. {type(self).__name__} expects {_LAYOUT}')

    def load_data_list(self) -> list[dict]:
        img_dir = self.data_prefix.get('img_path', '')
        ann_dir = self.data_prefix.get('seg_map_path', '')
        require_folders(type(self).__name__, (ann_dir, img_dir), _LAYOUT)
        masks = sorted(name for name in os.listdir(ann_dir)
                       if _LABEL_FILE.match(name))
        if not masks:
            raise FileNotFoundError(
                f'{osp.join(ann_dir, "<id>_<frame>_labels.png")} matches no '
                f'file: {type(self).__name__} expects {_LAYOUT}')
        data_list = []
        for name in masks:
            mask = osp.join(ann_dir, name)
            frame = _LABEL_FILE.match(name).group(2)
            data_list.append(dict(
                img_path=self._image(img_dir, frame, mask),
                seg_map_path=mask, ood_path=mask,
                ood_label_map=dict(FISHYSCAPES_OOD_LABEL_MAP),
                label_map=self.label_map,
                reduce_zero_label=self.reduce_zero_label, seg_fields=[]))
        return data_list
