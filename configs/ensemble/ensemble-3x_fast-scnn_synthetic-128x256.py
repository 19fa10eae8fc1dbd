# A deep ensemble of three Fast-SCNN members, as trained (run from the
# repository root) by
#   python tools/train_ensemble.py \
#       configs/fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py --members 3 \
#       --cfg-options train_dataloader.sampler.type=BootstrapSampler
# (bagging: each member on its own bootstrap sample of the train split)
# which also writes this ensemble's config with its exact paths to
# work_dirs/fast-scnn_1xb4-1k_synthetic-128x256_ensemble/ensemble.py.
# Test: python tools/test.py configs/ensemble/ensemble-3x_fast-scnn_synthetic-128x256.py
_base_ = ['../fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py']
member_config = 'configs/fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py'
member_dir = 'work_dirs/fast-scnn_1xb4-1k_synthetic-128x256_ensemble'
model = dict(
    _delete_=True,
    type='EnsembleSegmentor',
    members=[
        dict(config=member_config, checkpoint=f'{member_dir}/member_{i}/iter_1000.pth')
        for i in range(3)
    ])
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='UncertaintyMetric',
         scores=['max_prob', 'entropy', 'epistemic', 'aleatoric', 'std',
                 'variation_ratio']),
]
test_evaluator = val_evaluator
