# Domain shift: the same kind of scenes in fog, at night, with a colour cast
# or blurred. Tests on shift_val (labelled); shift_train_dataset is the
# unlabelled target for domain adaptation: its pipeline never loads labels.
_base_ = ['./synthetic_streets.py']
val_dataloader = dict(
    dataset=dict(data_prefix=dict(img_path='leftImg8bit/shift_val',
                                  seg_map_path='gtFine/shift_val')))
test_dataloader = val_dataloader
shift_train_dataset = dict(
    type='SyntheticStreetsDataset',
    data_root={{_base_.data_root}},
    with_uncertainty_gt=False,
    data_prefix=dict(img_path='leftImg8bit/shift_train',
                     seg_map_path='gtFine/shift_train'),
    pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='RandomResize', scale={{_base_.img_scale}},
             ratio_range=(0.5, 2.0), keep_ratio=True),
        dict(type='RandomCrop', crop_size={{_base_.crop_size}}),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackSegInputs'),
    ])
