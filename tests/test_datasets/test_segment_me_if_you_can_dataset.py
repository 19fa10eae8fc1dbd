"""SegmentMeIfYouCanDataset: RoadAnomaly21 and RoadObstacle21 in their layout."""
import os.path as osp

import numpy as np

import mmseg_uncert  # noqa: F401

from helpers.anomaly_datasets import _dataset, _smiyc_ood, _smiyc_root


def test_road_anomaly21_loads_the_validation_masks_as_gt_ood(tmp_path):
    root = str(tmp_path / 'dataset_AnomalyTrack')
    masks = _smiyc_root(root, '.jpg', ['validation0000', 'validation0001'])
    dataset, cfg = _dataset('road_anomaly21.py', root)
    assert len(dataset) == 2  # zebra0000 has no public mask
    for index, frame in enumerate(sorted(masks)):
        packed = dataset[index]
        sample = packed['data_samples']
        assert osp.basename(sample.img_path) == frame + '.jpg'
        # the image is resized for the model, the mask is kept at its size
        assert packed['inputs'].shape[1:] == (1024, 1365)
        np.testing.assert_array_equal(sample.gt_ood.data[0].numpy(),
                                      _smiyc_ood(masks[frame]))
        assert 'gt_sem_seg' not in sample
    assert cfg.test_evaluator.min_pred_component_size == 500
    assert cfg.test_evaluator.min_gt_component_size == 100


def test_road_obstacle21_webp_frames_and_the_benchmarks_exclusions(tmp_path):
    root = str(tmp_path / 'dataset_ObstacleTrack')
    frames = ['validation_1', 'validation_19', 'validation_2', 'validation_30']
    masks = _smiyc_root(root, '.webp', frames)
    dataset, cfg = _dataset('road_obstacle21.py', root)
    names = [osp.basename(dataset.get_data_info(i)['img_path'])
             for i in range(len(dataset))]
    assert names == ['validation_1.webp', 'validation_2.webp',
                     'validation_30.webp']
    sample = dataset[1]['data_samples']
    np.testing.assert_array_equal(sample.gt_ood.data[0].numpy(),
                                  _smiyc_ood(masks['validation_2']))
    assert cfg.test_evaluator.min_pred_component_size == 50
