# The student recipe on the embedded benchmark, sized for a CPU: the
# MobileNetV3-small + FCN segmentor with a DualHead learns from a frozen
# ensemble of three such segmentors (trained by
#   python tools/train_ensemble.py \
#       configs/fcn/fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py --members 3
# from the repository root) the labels, the ensemble's mean prediction (pixel
# KD), its feature affinities (pair-wise KD) and the spread of its members
# (`std`), in one network and one pass at test time.
_base_ = ['../fcn/fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py']
member_config = 'configs/fcn/fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py'
member_dir = 'work_dirs/fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256_ensemble'
# the frozen teacher's weights are left out of the optimizer
optim_wrapper = dict(constructor='TrainableOptimWrapperConstructor')
model = dict(
    type='EnsembleDistiller',
    teacher=dict(
        type='EnsembleSegmentor',
        members=[
            dict(config=member_config,
                 checkpoint=f'{member_dir}/member_0/iter_2000.pth'),
            dict(config=member_config,
                 checkpoint=f'{member_dir}/member_1/iter_2000.pth'),
            dict(config=member_config,
                 checkpoint=f'{member_dir}/member_2/iter_2000.pth'),
        ]),
    decode_head=dict(
        _delete_=True,
        type='DualHead',
        head={{_base_.model.decode_head}},
        uncertainty_names=('std', ),
        # the std of probabilities lies in [0, 0.5]
        loss_uncertainty=dict(type='UncertaintyRegressionLoss',
                              form='distribution', value_range=(0.0, 0.5))),
    kd_loss=dict(type='PixelKDLoss', temperature=1.0),
    pairwise_loss=dict(type='PairwiseKDLoss', node_scale=0.5))
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='UncertaintyMetric', scores=['max_prob', 'entropy', 'std']),
]
test_evaluator = val_evaluator
