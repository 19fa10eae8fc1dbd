# Heteroscedastic classification (Kendall & Gal 2017): the FCN head of the
# CPU segmentor plus a per-pixel log-variance of its logits, trained with the
# MC-sampled attenuated cross-entropy (T = 10). At test time the head adds
# `aleatoric` (expected entropy under the learned logit noise) and
# `logit_variance` to pred_uncertainty.
_base_ = ['../fcn/fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py']
model = dict(
    type='UncertaintyEncoderDecoder',
    decode_head=dict(
        _delete_=True,
        type='HeteroscedasticHead',
        head={{_base_.model.decode_head}},
        num_inference_samples=20,
        loss_decode=dict(type='AttenuatedCrossEntropyLoss', num_samples=10)))
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='UncertaintyMetric',
         scores=['max_prob', 'entropy', 'aleatoric', 'logit_variance']),
]
test_evaluator = val_evaluator
