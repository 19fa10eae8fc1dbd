"""FishyscapesLostAndFoundDataset: masks paired with Lost and Found images."""
import os.path as osp

import numpy as np

import mmseg_uncert  # noqa: F401

from helpers.anomaly_datasets import FISHY_FRAMES, _dataset, _fishy_root


def test_fishyscapes_lost_and_found_pairs_masks_with_lost_and_found_images(
        tmp_path):
    root = str(tmp_path / 'fishyscapes_lost_and_found')
    masks = _fishy_root(root)
    dataset, cfg = _dataset('fishyscapes_lost_and_found.py', root)
    assert len(dataset) == 2
    for index, (frame, split) in enumerate(FISHY_FRAMES.values()):
        sample = dataset[index]['data_samples']
        assert sample.img_path.endswith(
            osp.join(split, frame[:-len('_000000_000030')],
                     frame + '_leftImg8bit.png'))
        np.testing.assert_array_equal(sample.gt_ood.data[0].numpy(),
                                      masks[frame])
    assert cfg.test_evaluator.protocol == 'fishyscapes'
