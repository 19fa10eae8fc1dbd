"""SyntheticStreetsDataset through the shipped configs and mmseg's Cityscapes one."""
import os
import os.path as osp
import shutil

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.registry import init_default_scope

from mmseg.registry import DATASETS

import mmseg_uncert  # noqa: F401
from mmseg_uncert.datasets import synthetic_streets as ss
from mmseg_uncert.datasets.annotation_noise import decode_entropy

from conftest import ROOT, TINY_COUNTS

BASE = osp.join(ROOT, 'configs', '_base_', 'datasets')


def _dataset(config: str, data_root: str, split_cfg: str = 'test_dataloader'):
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(BASE, config))
    dataset_cfg = cfg[split_cfg].dataset
    dataset_cfg.data_root = data_root
    return DATASETS.build(dataset_cfg)


@pytest.mark.parametrize('config,split', [
    ('synthetic_streets.py', 'val'),
    ('synthetic_streets_ood.py', 'ood'),
    ('synthetic_streets_shift.py', 'shift_val'),
])
def test_each_split_config_packs_label_aleatoric_and_ood(tiny_data_root, config,
                                                         split):
    dataset = _dataset(config, tiny_data_root)
    assert len(dataset) == TINY_COUNTS[split]
    for index in range(len(dataset)):
        sample = dataset[index]['data_samples']
        paths = ss.file_paths(tiny_data_root, split, index)
        assert osp.samefile(sample.img_path, paths['img'])
        label = cv2.imread(paths['label'], cv2.IMREAD_UNCHANGED)
        aleatoric = decode_entropy(cv2.imread(paths['aleatoric'],
                                              cv2.IMREAD_UNCHANGED))
        ood = cv2.imread(paths['ood'], cv2.IMREAD_UNCHANGED)
        # test pipeline: image resized, masks kept at label size
        assert torch.equal(sample.gt_sem_seg.data[0],
                           torch.from_numpy(label.astype(np.int64)))
        np.testing.assert_array_equal(sample.gt_aleatoric.data[0].numpy(),
                                      aleatoric)
        np.testing.assert_array_equal(sample.gt_ood.data[0].numpy(), ood)
        assert bool(ood.any()) == (split == 'ood')


def test_mmseg_cityscapes_config_runs_on_it_by_changing_data_root(
        tiny_data_root):
    init_default_scope('mmseg')
    cfg = get_config('mmseg::_base_/datasets/cityscapes.py')
    dataset_cfg = cfg.val_dataloader.dataset
    dataset_cfg.data_root = tiny_data_root
    dataset = DATASETS.build(dataset_cfg)
    assert len(dataset) == TINY_COUNTS['val']
    sample = dataset[0]
    assert sample['inputs'].shape[0] == 3
    label = cv2.imread(ss.file_paths(tiny_data_root, 'val', 0)['label'],
                       cv2.IMREAD_UNCHANGED)
    assert torch.equal(sample['data_samples'].gt_sem_seg.data[0],
                       torch.from_numpy(label.astype(np.int64)))


def test_missing_mask_is_named_when_the_dataset_is_built(tiny_data_root,
                                                         tmp_path):
    root = str(tmp_path / 'copy')
    shutil.copytree(tiny_data_root, root)
    missing = ss.file_paths(root, 'val', 2)['aleatoric']
    os.remove(missing)
    with pytest.raises(FileNotFoundError) as info:
        _dataset('synthetic_streets.py', root)
    assert missing in str(info.value)
    assert 'make_synthetic.py' in str(info.value)
    # without uncertainty ground truth it is a plain Cityscapes dataset
    init_default_scope('mmseg')
    plain = DATASETS.build(dict(
        type='SyntheticStreetsDataset', data_root=root,
        with_uncertainty_gt=False,
        data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=[]))
    assert len(plain) == TINY_COUNTS['val']
    assert 'aleatoric_path' not in plain.get_data_info(0)


def test_shift_train_target_dataset_never_loads_labels(tiny_data_root):
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(BASE, 'synthetic_streets_shift.py'))
    dataset_cfg = cfg.shift_train_dataset
    dataset_cfg.data_root = tiny_data_root
    dataset = DATASETS.build(dataset_cfg)
    assert len(dataset) == TINY_COUNTS['shift_train']
    sample = dataset[0]['data_samples']
    assert 'gt_sem_seg' not in sample
    assert sample.img_path.endswith(
        osp.join('shift_train', 'synthcity', 'synthcity_000000_000019_leftImg8bit.png'))
