"""LoadUncertaintyAnnotations: masks loaded, checked and transformed with the label.

Also mmseg_uncert.datasets.transforms.pack_seg_uncertainty_inputs, which
packs them into the data sample.
"""
import os.path as osp

import cv2
import numpy as np
import pytest
from mmengine.registry import init_default_scope

from mmseg.registry import DATASETS

import mmseg_uncert  # noqa: F401
from mmseg_uncert.datasets import synthetic_streets as ss
from mmseg_uncert.datasets.transforms import LoadUncertaintyAnnotations

from helpers.anomaly_datasets import H, W, _dataset, _smiyc_ood, _smiyc_root


def test_a_palette_png_mask_is_read_as_its_indices(tmp_path):
    """Masks saved in P mode (as some benchmark releases and tools write them)
    decode to their palette indices, as PIL and the benchmarks read them;
    cv2 alone would give their colours."""
    from PIL import Image
    root = str(tmp_path / 'dataset_AnomalyTrack')
    masks = _smiyc_root(root, '.jpg', ['validation0000'])
    path = osp.join(root, 'labels_masks', 'validation0000_labels_semantic.png')
    palette = Image.new('P', (W, H))
    palette.putdata(masks['validation0000'].ravel().tolist())
    palette.putpalette([value for i in range(256) for value in (i, 255 - i, 128)])
    palette.save(path)
    assert Image.open(path).mode == 'P' and cv2.imread(path, cv2.IMREAD_UNCHANGED).ndim == 3
    dataset, _ = _dataset('road_anomaly21.py', root)
    np.testing.assert_array_equal(dataset[0]['data_samples'].gt_ood.data[0].numpy(),
                                  _smiyc_ood(masks['validation0000']))


def test_masks_follow_geometric_transforms(tiny_data_root):
    """Resized and flipped with the label, as mmseg's seg_fields are."""
    init_default_scope('mmseg')
    dataset = DATASETS.build(dict(
        type='SyntheticStreetsDataset', data_root=tiny_data_root,
        data_prefix=dict(img_path='leftImg8bit/ood', seg_map_path='gtFine/ood'),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(type='LoadUncertaintyAnnotations'),
            dict(type='Resize', scale=(256, 128), keep_ratio=False),
            dict(type='RandomFlip', prob=1.0, direction='horizontal'),
            dict(type='PackSegUncertaintyInputs'),
        ]))
    sample = dataset[0]['data_samples']
    paths = ss.file_paths(tiny_data_root, 'ood', 0)
    ood = cv2.imread(paths['ood'], cv2.IMREAD_UNCHANGED)
    expected = cv2.resize(ood, (256, 128), interpolation=cv2.INTER_NEAREST)[:, ::-1]
    np.testing.assert_array_equal(sample.gt_ood.data[0].numpy(), expected)
    assert sample.gt_aleatoric.data.shape == sample.gt_sem_seg.data.shape


def test_transform_names_the_labelled_image_without_mask_paths():
    with pytest.raises(KeyError, match='frame_7.png has a label but no aleatoric_path'):
        LoadUncertaintyAnnotations()(dict(img_path='frame_7.png',
                                          seg_map_path='frame_7_labelIds.png'))
    with pytest.raises(KeyError, match='frame_7.png has a label but no ood_path'):
        LoadUncertaintyAnnotations(keys=('ood', ))(
            dict(img_path='frame_7.png', gt_seg_map=np.zeros((4, 4), np.uint8)))


def test_transform_passes_an_image_without_annotations_through():
    # what mmseg's inference_model / MMSegInferencer give the test pipeline
    img = np.full((4, 6, 3), 7, np.uint8)
    results = LoadUncertaintyAnnotations()(dict(img_path='frame_7.png', img=img))
    assert set(results) == {'img_path', 'img'}
    assert results['img'] is img


def test_transform_rejects_a_mask_of_another_size(tiny_data_root):
    paths = ss.file_paths(tiny_data_root, 'val', 0)
    results = dict(img_path=paths['img'], ood_path=paths['ood'],
                   gt_seg_map=np.zeros((10, 10), np.uint8), seg_fields=[])
    with pytest.raises(ValueError, match=r'\(64, 128\).*\(10, 10\)'):
        LoadUncertaintyAnnotations(keys=('ood', ))(results)


def test_transform_rejects_an_8_bit_aleatoric_map(tmp_path):
    path = str(tmp_path / 'x_gtFine_aleatoric.png')
    cv2.imwrite(path, np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match='16-bit'):
        LoadUncertaintyAnnotations(keys=('aleatoric', ))(
            dict(img_path='x.png', aleatoric_path=path))
