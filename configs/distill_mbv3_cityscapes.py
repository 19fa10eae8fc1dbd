# Distil an ensemble of mmseg's Cityscapes DeepLabV3+ models into one
# MobileNetV3-large + DeepLabV3+ student whose DualHead also outputs the
# ensemble's uncertainty (std, epistemic, aleatoric) in the same pass.
#   mim train mmseg configs/distill_mbv3_cityscapes.py --launcher pytorch --gpus 4
#   (or: bash tools/dist_train.sh configs/distill_mbv3_cityscapes.py 4)
# 4 GPUs x 2 images, 80k iterations. Data: Cityscapes in data/cityscapes/ as
# mmseg expects it. Teacher checkpoints in checkpoints/ (the two files named
# in configs/ensemble/ensemble-2x_deeplabv3plus_r50-r101-d8_cityscapes-512x1024.py, or
# your own members from tools/train_ensemble.py). The student's backbone
# starts from mmseg's ImageNet MobileNetV3-large (downloaded at the first
# run). Checkpoints hold the student only: test them with this config (which
# builds the teacher too) or deploy them with a plain UncertaintyEncoderDecoder
# config carrying the same backbone and DualHead, without the teacher.
_base_ = [
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
custom_imports = dict(imports=['mmseg_uncert'], allow_failed_imports=False)
runner_type = 'CompatRunner'
crop_size = (512, 1024)
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
# the frozen teacher's weights are left out of the optimizer
optim_wrapper = dict(constructor='TrainableOptimWrapperConstructor')
model = dict(
    type='EnsembleDistiller',
    data_preprocessor=data_preprocessor,
    pretrained='open-mmlab://contrib/mobilenet_v3_large',
    backbone=dict(
        type='MobileNetV3', arch='large', out_indices=(3, 16), norm_cfg=norm_cfg),
    decode_head=dict(
        type='DualHead',
        head=dict(
            type='DepthwiseSeparableASPPHead',
            in_channels=960,
            in_index=1,
            channels=256,
            dilations=(1, 12, 24, 36),
            c1_in_channels=24,
            c1_channels=48,
            dropout_ratio=0.1,
            num_classes=19,
            norm_cfg=norm_cfg,
            align_corners=False,
            loss_decode=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
        uncertainty_names=('std', 'epistemic', 'aleatoric'),
        branch_channels=128,
        # as the student's own head: a dense 3x3 at 1/4 of 1024x2048 is 41.5 GMAC
        # (a fifth of the plain student's 201), this 4.9 (benchmarks/scale.py).
        # Checkpoints trained before 2026-12-07 have the dense branch: load them
        # with branch_conv='conv'.
        branch_conv='depthwise_separable',
        # std of probabilities in [0, 0.5]; entropies in [0, log 19 < 3]
        loss_uncertainty=dict(
            type='UncertaintyRegressionLoss',
            form='distribution',
            value_range=[(0.0, 0.5), (0.0, 3.0), (0.0, 3.0)])),
    teacher=dict(
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
        # on training crops the teacher sees the whole crop
        test_cfg=dict(mode='whole')),
    kd_loss=dict(type='PixelKDLoss', temperature=1.0),
    pairwise_loss=dict(type='PairwiseKDLoss', node_scale=0.5),
    teacher_autocast=True,
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
train_dataloader = dict(batch_size=2, num_workers=2)
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='UncertaintyMetric',
         scores=['max_prob', 'entropy', 'std', 'epistemic', 'aleatoric']),
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
