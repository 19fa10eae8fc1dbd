"""Write a config that runs the project's CPU config on tiny data, fast."""
from __future__ import annotations

import os.path as osp
import textwrap

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PROJECT_CONFIG = osp.join(ROOT, 'configs', 'fcn',
                          'fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py')


def write_tiny_config(path: str, data_root: str, max_iters: int,
                      base: str = PROJECT_CONFIG, extra: str = '',
                      uncertainty_gt: bool = True, test_split: str = 'val') -> str:
    """A derived config: 64x128 images, batch 2, no worker processes.

    ``uncertainty_gt``: val/test samples carry gt_aleatoric and gt_ood (needs
    this package's dataset and transforms). ``test_split``: the split
    ``tools/test.py`` evaluates (e.g. ``'ood'``).
    """
    test_tail = (['LoadUncertaintyAnnotations', 'PackSegUncertaintyInputs']
                 if uncertainty_gt else ['PackSegInputs'])
    text = textwrap.dedent(f'''
        _base_ = [{base!r}]
        data_root = {data_root!r}
        train_pipeline = [
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(type='RandomFlip', prob=0.5),
            dict(type='PackSegInputs'),
        ]
        test_pipeline = [
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
        ] + [dict(type=t) for t in {test_tail!r}]
        train_dataloader = dict(
            batch_size=2, num_workers=0, persistent_workers=False,
            dataset=dict(data_root=data_root, pipeline=train_pipeline))
        val_dataloader = dict(
            num_workers=0, persistent_workers=False,
            dataset=dict(data_root=data_root, pipeline=test_pipeline))
        test_dataloader = val_dataloader
        model = dict(data_preprocessor=dict(size=(64, 128)))
        train_cfg = dict(max_iters={max_iters}, val_interval={max_iters})
        param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
        default_hooks = dict(
            logger=dict(interval=1),
            checkpoint=dict(interval=2, max_keep_ckpts=10),
            visualization=dict(type='SegVisualizationHook'))
        ''') + textwrap.dedent(extra)
    if test_split != 'val':  # otherwise the base config's val split
        text += textwrap.dedent(f'''
            test_dataloader = dict(
                num_workers=0, persistent_workers=False,
                dataset=dict(data_root=data_root, pipeline=test_pipeline,
                             data_prefix=dict(img_path='leftImg8bit/{test_split}',
                                              seg_map_path='gtFine/{test_split}')))
            ''')
    with open(path, 'w') as f:
        f.write(text)
    return path
