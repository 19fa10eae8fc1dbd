# A deep ensemble of three CPU segmentors, as trained (run from the
# repository root) by
#   python tools/train_ensemble.py \
#       configs/fcn/fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py --members 3
# which also writes this ensemble's config with its exact paths to
# work_dirs/fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256_ensemble/ensemble.py.
# Test: python tools/test.py \
#       configs/ensemble/ensemble-3x_fcn_mobilenet-v3-s_synthetic-128x256.py
_base_ = ['../fcn/fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py']
member_config = 'configs/fcn/fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py'
member_dir = 'work_dirs/fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256_ensemble'
model = dict(
    _delete_=True,
    type='EnsembleSegmentor',
    members=[
        dict(config=member_config,
             checkpoint=f'{member_dir}/member_0/iter_2000.pth'),
        dict(config=member_config,
             checkpoint=f'{member_dir}/member_1/iter_2000.pth'),
        dict(config=member_config,
             checkpoint=f'{member_dir}/member_2/iter_2000.pth'),
    ])
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='UncertaintyMetric',
         scores=['max_prob', 'entropy', 'epistemic', 'aleatoric', 'std',
                 'variation_ratio']),
]
test_evaluator = val_evaluator
