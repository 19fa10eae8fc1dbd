# The student recipe of the main job: a Fast-SCNN whose head is a DualHead
# learns, from a frozen ensemble of three Fast-SCNN members (trained by
#   python tools/train_ensemble.py \
#       configs/fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py --members 3 \
#       --cfg-options train_dataloader.sampler.type=BootstrapSampler
# (bagging: each member on its own bootstrap sample of the train split)
# from the repository root), the labels, the ensemble's mean prediction (pixel
# KD) and its uncertainty decomposition: `epistemic` (mutual information) and
# `aleatoric` (expected entropy), in one network and one pass at test time;
# `total` is the entropy of its own KD-trained softmax (the score `entropy`).
# KD and the uncertainty term cover every pixel of the image, ignored ones
# included; patches of procedural noise pasted into the training crops
# (labelled ignore) show it inputs where the members disagree for a reason.
# The student starts from member 0's weights (its architecture trained on
# labels alone), so that 500 iterations of distillation teach it the
# ensemble's prediction and uncertainty instead of the scenes all over again.
_base_ = ['../fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py']
member_config = 'configs/fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py'
member_dir = 'work_dirs/fast-scnn_1xb4-1k_synthetic-128x256_ensemble'
# the student's backbone and head start from member 0
student_init = f'{member_dir}/member_0/iter_1000.pth'
# the frozen teacher's weights are left out of the optimizer
optim_wrapper = dict(constructor='TrainableOptimWrapperConstructor')
model = dict(
    type='EnsembleDistiller',
    teacher=dict(
        type='EnsembleSegmentor',
        members=[
            dict(config=member_config, checkpoint=f'{member_dir}/member_{i}/iter_1000.pth')
            for i in range(3)
        ]),
    decode_head=dict(
        _delete_=True,
        type='DualHead',
        head={{_base_.model.decode_head}},
        uncertainty_names=('epistemic', 'aleatoric'),
        derived_names=('aleatoric', ),
        # the teacher's aleatoric map is still regressed, as an auxiliary
        # target: without it the student's softmax came out less calibrated
        # (val ECE 0.0269 against 0.0203 on the demo's members, 2026-12-07)
        regress_derived=True,
        # a little cheaper than a dense 3x3 branch on this light network
        branch_conv='depthwise_separable',
        # mutual information of M = 3 members is at most ln 3 = 1.10 nats;
        # the members' expected entropy rarely exceeds 2 nats (ln 19 = 2.94);
        # bins equal in the square root resolve the many values near 0, and
        # the median of the predicted bins stays near 0 where the teacher's
        # map is (the mean carries the small chance of a high value)
        loss_uncertainty=dict(type='UncertaintyRegressionLoss',
                              form='distribution',
                              value_range=[(0.0, 1.1), (0.0, 2.0)],
                              value_scale='sqrt',
                              estimate='median')),
    kd_loss=dict(type='PixelKDLoss', temperature=1.0),
    student_init=student_init)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, begin=0, end=50, by_epoch=False),
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=50, end=500, by_epoch=False),
]
train_cfg = dict(max_iters=500, val_interval=500)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(512, 256), ratio_range=(0.5, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=(128, 256), cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PasteNoisePatches', prob=0.5, max_patches=3,
         area_range=(0.005, 0.08)),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='UncertaintyMetric',
         scores=['max_prob', 'entropy', 'epistemic', 'aleatoric']),
]
test_evaluator = val_evaluator
