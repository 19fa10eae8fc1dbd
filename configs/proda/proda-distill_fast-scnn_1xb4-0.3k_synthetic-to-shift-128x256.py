# ProDA's distillation stage on the embedded benchmark: a student learns the
# source labels and, on the unlabelled target, the hard labels and soft
# predictions of the frozen stage-1 model (EnsembleDistiller with that model
# as a one-member teacher): CE(source) + CE(student, argmax q) + KL(q ‖ student).
#
# Needs the stage-1 model, trained from the repository root by
#   python tools/train.py \
#       configs/proda/proda_fast-scnn_1xb4-0.3k_synthetic-to-shift-128x256.py
# The student starts from the stage-1 weights (load_from): ProDA starts it from
# self-supervised weights, which would need a download, and on a short CPU
# schedule a student from the warm-up weights does not catch up with its
# teacher.
# Measured on this recipe (benchmarks/domain_adaptation.py, 3 seeds): the
# stage lowers shift_val mIoU by 3.2 against its teacher (docs/benchmarks.md); kept as
# ProDA's stage for your data, not as a gain on the embedded benchmark.
_base_ = ['./proda_fast-scnn_1xb4-0.3k_synthetic-to-shift-128x256.py']
stage1_checkpoint = ('work_dirs/proda_fast-scnn_1xb4-0.3k_synthetic-to-shift-128x256/'
                     'iter_300.pth')
load_from = stage1_checkpoint
# the frozen teacher's weights are left out of the optimizer
optim_wrapper = dict(constructor='TrainableOptimWrapperConstructor')
model = dict(
    _delete_=True,
    type='EnsembleDistiller',
    teacher=dict(config={{_base_.warmup_config}}, checkpoint=stage1_checkpoint),
    data_preprocessor={{_base_.model.data_preprocessor}},
    backbone={{_base_.model.backbone}},
    decode_head={{_base_.model.decode_head}},
    kd_loss=dict(type='PixelKDLoss', temperature=1.0, loss_weight=1.0),  # β
    # only the teacher's confident target pixels: learning all of its hard
    # labels cost 3 mIoU on shift_val in the earlier single-seed run
    pseudo_label_threshold=0.9,
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
custom_hooks = []
