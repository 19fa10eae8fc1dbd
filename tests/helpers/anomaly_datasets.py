"""The anomaly benchmarks' layouts written as tiny files, and their
data sets built from the shipped test configs."""
import os
import os.path as osp

import cv2
import numpy as np
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmseg.registry import DATASETS

import mmseg_uncert  # noqa: F401

from conftest import ROOT

BASE = osp.join(ROOT, 'configs', '_base_', 'datasets')
H, W = 12, 16


def _write(path: str, array: np.ndarray) -> str:
    os.makedirs(osp.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, array)
    return path


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (H, W, 3), np.uint8)


def _mask(seed: int, values: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.array(values, np.uint8), (H, W))


def _dataset(config: str, data_root: str):
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(BASE, config))
    dataset_cfg = cfg.test_dataloader.dataset
    dataset_cfg.data_root = data_root
    return DATASETS.build(dataset_cfg), cfg


def _smiyc_root(root: str, suffix: str, frames: list[str]) -> dict[str, np.ndarray]:
    """dataset_*Track/images/<frame><suffix> + labels_masks/<frame>_labels_semantic.png;
    masks use 0, 1 and 255, plus a stray 7 that the benchmark counts as void."""
    masks = {}
    for i, frame in enumerate(frames):
        _write(osp.join(root, 'images', frame + suffix), _image(i))
        masks[frame] = _mask(i, (0, 1, 255, 7))
        _write(osp.join(root, 'labels_masks', frame + '_labels_semantic.png'),
               masks[frame])
    # a test frame: the benchmark keeps its mask private
    _write(osp.join(root, 'images', 'zebra0000' + suffix), _image(99))
    return masks


def _smiyc_ood(mask: np.ndarray) -> np.ndarray:
    return np.where(mask == 7, 255, mask)  # 0 and 1 kept, the rest void


FISHY_FRAMES = {
    # fishyscapes id, Lost and Found frame, Lost and Found split
    '0000': ('04_Maurener_Weg_8_000000_000030', 'train'),
    '0001': ('13_Elly_Beinhorn_Str_000000_000050', 'test'),
}


def _fishy_root(root: str) -> dict[str, np.ndarray]:
    masks = {}
    for i, (fs_id, (frame, split)) in enumerate(FISHY_FRAMES.items()):
        scene = frame[:-len('_000000_000030')]
        _write(osp.join(root, 'leftImg8bit', split, scene,
                        frame + '_leftImg8bit.png'), _image(i))
        masks[frame] = _mask(i, (0, 1, 255))
        _write(osp.join(root, 'fishyscapes_lostandfound',
                        f'{fs_id}_{frame}_labels.png'), masks[frame])
    return masks


def _street_hazards_root(root: str) -> dict[str, np.ndarray]:
    labels = {}
    for i, name in enumerate(['300', '301']):
        _write(osp.join(root, 'test', 'images', 'test', 't5', name + '.png'),
               _image(i))
        labels[name] = _mask(i, tuple(range(15)))  # 0, 1..13, 14 = anomaly
        _write(osp.join(root, 'test', 'annotations', 'test', 't5',
                        name + '.png'), labels[name])
    return labels
