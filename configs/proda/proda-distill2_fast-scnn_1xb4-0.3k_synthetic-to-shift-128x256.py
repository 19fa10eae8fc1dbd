# ProDA's stage 3 on the embedded benchmark: the distillation again, the
# student of the first distillation now the teacher (its flip-averaged
# labels where they are >= 0.95 confident) and the new student's start.
# Everything else is the first distillation's recipe.
#
# Needs the first distillation's student, trained from the repository root by
#   python tools/train.py \
#       configs/proda/proda-distill_fast-scnn_1xb4-0.3k_synthetic-to-shift-128x256.py
_base_ = ['./proda-distill_fast-scnn_1xb4-0.3k_synthetic-to-shift-128x256.py']
stage2_checkpoint = ('work_dirs/'
                     'proda-distill_fast-scnn_1xb4-0.3k_synthetic-to-shift-128x256/'
                     'iter_300.pth')
load_from = stage2_checkpoint
model = dict(teacher=dict(model=dict(checkpoint=stage2_checkpoint)))
