"""SourceTargetDataset: labelled source and unlabelled target images in one item."""
from mmseg.registry import DATASETS

from mmseg_uncert.models.segmentors import mmseg_scope


def test_source_target_dataset_drops_target_labels(tiny_data_root):
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                dict(type='PackSegInputs')]
    with mmseg_scope():
        dataset = DATASETS.build(dict(
            type='SourceTargetDataset',
            source=dict(type='SyntheticStreetsDataset', data_root=tiny_data_root,
                        data_prefix=dict(img_path='leftImg8bit/train',
                                         seg_map_path='gtFine/train'), pipeline=pipeline),
            # a labelled split used as the target, with a pipeline that loads labels
            target=dict(type='SyntheticStreetsDataset', data_root=tiny_data_root,
                        data_prefix=dict(img_path='leftImg8bit/shift_train',
                                         seg_map_path='gtFine/shift_train'),
                        pipeline=pipeline)))
    assert len(dataset) == 12
    item = dataset[5]
    assert 'gt_sem_seg' in item['source']['data_samples']
    assert 'gt_sem_seg' not in item['target']['data_samples']
    assert item['target']['data_samples'].img_path.endswith('_000001_000019_leftImg8bit.png')
