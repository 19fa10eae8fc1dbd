# MC dropout on the CPU segmentor: 20 passes with the FCN head's dropout
# (rate 0.1) on and BatchNorm in eval. Test only, from the checkpoint that
#   python tools/train.py configs/fcn/fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py
# writes (run from the repository root):
#   python tools/test.py \
#       configs/mc_dropout/mc-dropout-20x_fcn_mobilenet-v3-s_synthetic-128x256.py
_base_ = ['../fcn/fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py']
model = dict(
    _delete_=True,
    type='MCDropoutSegmentor',
    num_samples=20,
    seed=0,
    model=dict(
        config='configs/fcn/fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py',
        checkpoint='work_dirs/fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256/'
        'iter_2000.pth'))
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='UncertaintyMetric',
         scores=['max_prob', 'entropy', 'epistemic', 'aleatoric', 'std',
                 'variation_ratio']),
]
test_evaluator = val_evaluator
