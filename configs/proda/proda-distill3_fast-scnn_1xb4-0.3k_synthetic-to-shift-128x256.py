# A third distillation, beyond ProDA's two: the second distillation's student
# is the teacher and the new student's start. On the embedded benchmark each
# round has added to the one before (benchmarks/domain_adaptation.py).
#
# Needs the second distillation's student, trained from the repository root by
#   python tools/train.py \
#       configs/proda/proda-distill2_fast-scnn_1xb4-0.3k_synthetic-to-shift-128x256.py
_base_ = ['./proda-distill_fast-scnn_1xb4-0.3k_synthetic-to-shift-128x256.py']
stage3_checkpoint = ('work_dirs/'
                     'proda-distill2_fast-scnn_1xb4-0.3k_synthetic-to-shift-128x256/'
                     'iter_300.pth')
load_from = stage3_checkpoint
model = dict(teacher=dict(model=dict(checkpoint=stage3_checkpoint)))
