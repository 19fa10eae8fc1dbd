# A deep ensemble of mmseg's Cityscapes DeepLabV3+ R-50 and R-101 (80k
# schedule), tested with slide inference and the uncertainty metrics.
#
# Data: Cityscapes in data/cityscapes/ as mmseg expects it (leftImg8bit/,
# gtFine/ with *_labelTrainIds.png from mmseg's tools/dataset_converters/
# cityscapes.py). Checkpoints: download these two files of mmseg's model zoo
# (see mmseg's configs/deeplabv3plus/metafile.yaml) into checkpoints/:
#   deeplabv3plus_r50-d8_512x1024_80k_cityscapes_20200606_114049-f9fb496d.pth
#   deeplabv3plus_r101-d8_512x1024_80k_cityscapes_20200606_114143-068fcfe9.pth
# or train your own members (one config, several seeds) with
#   python tools/train_ensemble.py \
#       configs/deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py \
#       --members 3 --launcher pytorch
# Test: bash tools/dist_test.sh \
#       configs/ensemble/ensemble-2x_deeplabv3plus_r50-r101-d8_cityscapes-512x1024.py \
#       none 4
_base_ = [
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmseg_uncert'], allow_failed_imports=False)
runner_type = 'CompatRunner'
model = dict(
    type='EnsembleSegmentor',
    members=[
        dict(config='mmseg::deeplabv3plus/'
             'deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py',
             checkpoint='checkpoints/deeplabv3plus_r50-d8_512x1024_80k_'
             'cityscapes_20200606_114049-f9fb496d.pth'),
        dict(config='mmseg::deeplabv3plus/'
             'deeplabv3plus_r101-d8_4xb2-80k_cityscapes-512x1024.py',
             checkpoint='checkpoints/deeplabv3plus_r101-d8_512x1024_80k_'
             'cityscapes_20200606_114143-068fcfe9.pth'),
    ],
    test_cfg=dict(mode='slide', crop_size=(512, 1024), stride=(341, 683)))
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='UncertaintyMetric',
         scores=['max_prob', 'entropy', 'epistemic', 'aleatoric', 'std',
                 'variation_ratio']),
]
test_evaluator = val_evaluator
# as configs/_base_/default_runtime.py (this config builds on mmseg's
# runtime): pictures with the uncertainty maps (--show-dir, MMSegInferencer)
# and `--tta` keeping the maps over the augmented views
vis_backends = [dict(type='LocalVisBackend')]
# 4 panels a row: image, prediction, ground truth, then the maps below
visualizer = dict(type='UncertaintyVisualizer', vis_backends=vis_backends,
                  name='visualizer', columns=4)
tta_model = dict(type='UncertaintyTTAModel')
