"""The anomaly data sets name a missing file or folder (their layout checks)."""
import os
import os.path as osp

import pytest
from mmengine.registry import init_default_scope

from mmseg.registry import DATASETS

import mmseg_uncert  # noqa: F401

from helpers.anomaly_datasets import (FISHY_FRAMES, _dataset, _fishy_root, _smiyc_root,
                                      _street_hazards_root)


def test_a_missing_benchmark_file_is_named(tmp_path):
    init_default_scope('mmseg')
    # SMIYC: a validation frame without its mask
    root = str(tmp_path / 'dataset_AnomalyTrack')
    _smiyc_root(root, '.jpg', ['validation0000', 'validation0001'])
    missing = osp.join(root, 'labels_masks', 'validation0001_labels_semantic.png')
    os.remove(missing)
    with pytest.raises(FileNotFoundError) as info:
        _dataset('road_anomaly21.py', root)
    assert str(info.value).startswith(f'{missing} is missing')
    assert 'images/<frame><img_suffix>' in str(info.value)
    # SMIYC: a data root without the benchmark's folders
    empty = str(tmp_path / 'empty')
    os.makedirs(empty)
    with pytest.raises(FileNotFoundError,
                       match=f'{osp.join(empty, "images")} is missing'):
        _dataset('road_anomaly21.py', empty)
    # Fishyscapes: a mask whose Lost and Found image is absent
    root = str(tmp_path / 'fishyscapes_lost_and_found')
    _fishy_root(root)
    frame, split = FISHY_FRAMES['0001']
    image = osp.join(root, 'leftImg8bit', split, frame[:-len('_000000_000030')],
                     frame + '_leftImg8bit.png')
    os.remove(image)
    with pytest.raises(FileNotFoundError) as info:
        _dataset('fishyscapes_lost_and_found.py', root)
    assert image in str(info.value)
    assert f'0001_{frame}_labels.png has no image' in str(info.value)
    # StreetHazards: an image without its annotation, then no test folder
    root = str(tmp_path / 'streethazards')
    _street_hazards_root(root)
    missing = osp.join(root, 'test', 'annotations', 'test', 't5', '301.png')
    os.remove(missing)
    with pytest.raises(FileNotFoundError) as info:
        _dataset('street_hazards.py', root)
    assert str(info.value).startswith(f'{missing} is missing')
    with pytest.raises(FileNotFoundError,
                       match=osp.join(empty, 'test', 'images', 'test')):
        _dataset('street_hazards.py', empty)
    with pytest.raises(ValueError, match='reduce_zero_label must be True'):
        DATASETS.build(dict(type='StreetHazardsDataset', data_root=root,
                            reduce_zero_label=False))
