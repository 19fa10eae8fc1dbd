"""EnsembleDistiller: its losses, unlabelled batches, an EnD² student, deployment.

Also mmseg_uncert.models.segmentors.uncertainty_encoder_decoder, which the
student's checkpoint loads into.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from mmengine.config import ConfigDict

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_uncert.apis.inference import deploy_model_config
from mmseg_uncert.models.segmentors import mmseg_scope
from mmseg_uncert.workflows.head_coverage import bare_model_cfg

from helpers.distillation import _batch, _dirichlet_cfg, _distiller, _student_cfg
from helpers.ensembles import _mixed_members
from helpers.members import member_specs


def _dirichlet_distiller(tmp_path):
    cfg = _dirichlet_cfg()
    cfg.update(type='EnsembleDistiller', teacher=member_specs(tmp_path, 3))
    with mmseg_scope():
        torch.manual_seed(0)
        model = MODELS.build(ConfigDict(cfg))
    model.init_weights()
    return model


def test_distiller_fits_the_dirichlet_to_the_members(tmp_path):
    """distill.loss_end2 is the NLL of the three members' (smoothed)
    predictions under the student's Dirichlet, at the label's size, on the
    image's pixels; it trains the head, and the checkpoint deploys to a
    one-pass model with total / aleatoric / epistemic maps."""
    model = _dirichlet_distiller(tmp_path)
    model.eval()
    inputs, samples = _batch(3)
    losses = model.loss(inputs, samples)
    assert set(losses) == {'decode.loss_ce', 'decode.acc_seg', 'distill.loss_kd',
                           'distill.loss_end2'}
    with torch.no_grad():
        logits = model.decode_head.forward_logits(model.extract_feat(inputs))
        logits = torch.nn.functional.interpolate(logits, size=(64, 128), mode='bilinear',
                                                 align_corners=False)
        metas = [s.metainfo for s in samples]
        members = [p.clamp_min(0) for p in model.teacher.member_probabilities(inputs, metas)]
        eps = model.decode_head.loss_distribution.smoothing
        mean_log = torch.stack([((1 - eps) * p + eps / 5).log() for p in members]).mean(0)
        alpha = logits.double().exp()
        nll = (torch.lgamma(alpha).sum(1) - torch.lgamma(alpha.sum(1))
               - ((alpha - 1) * mean_log.double()).sum(1))
    assert losses['distill.loss_end2'].item() == pytest.approx(nll.mean().item(), rel=1e-4)
    model.train()
    losses = model.loss(*_batch(4))
    losses['distill.loss_end2'].backward()
    assert model.decode_head.head.conv_seg.weight.grad.abs().sum() > 0
    # deployed alone: an UncertaintyEncoderDecoder with the student's weights
    deploy = deploy_model_config(dict(_dirichlet_cfg(), type='EnsembleDistiller',
                                      teacher=None))
    with mmseg_scope():
        plain = MODELS.build(deploy)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.eval()
    with torch.no_grad():
        pred = plain.predict(inputs, copy.deepcopy(samples))[0]
    assert set(pred.pred_uncertainty.keys()) == {'total', 'aleatoric', 'epistemic'}
    prob = pred.seg_logits.data.softmax(0)
    total = torch.special.entr(prob).sum(0)
    # the maps are computed at the head's resolution, then resized with the
    # logits: equal to the entropy of the resized softmax only up to that
    assert (pred.pred_uncertainty.total[0] - total).abs().mean() < 0.05


def test_student_checkpoint_loads_into_a_plain_config(tmp_path):
    model = _distiller(tmp_path)
    model.eval()
    plain_cfg = dict(_student_cfg(), type='UncertaintyEncoderDecoder')
    with mmseg_scope():
        plain = MODELS.build(ConfigDict(plain_cfg))
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.eval()
    inputs, samples = _batch(5)
    with torch.no_grad():
        a = model.predict(inputs, copy.deepcopy(samples))
        b = plain.predict(inputs, copy.deepcopy(samples))
    assert torch.equal(a[0].seg_logits.data, b[0].seg_logits.data)
    assert torch.equal(a[0].pred_uncertainty.std, b[0].pred_uncertainty.std)


def test_kd_and_uncertainty_cover_ignored_pixels_and_leave_padding_out(tmp_path):
    """Every label 255 here, except one row: CE sees one row, KD and the
    uncertainty loss the whole image, never the padding beyond img_shape."""
    model = _distiller(tmp_path)
    model.eval()  # no dropout, BN running statistics: the same forward twice
    inputs, samples = _batch(6)
    for s in samples:
        s.gt_sem_seg.data[:] = 255
        s.gt_sem_seg.data[:, 40] = 1
        s.set_metainfo(dict(img_shape=(48, 100)))  # the rest is padding
    losses = model.loss(inputs, samples)
    with torch.no_grad():
        x = model.extract_feat(inputs)
        _, logits, raw, _, _ = model._student_forward(x, samples, with_loss=False)
        # KD at the label's size, the student's logits upsampled
        logits = torch.nn.functional.interpolate(logits, size=(64, 128), mode='bilinear',
                                                 align_corners=False)
        teacher = model._teacher_outputs(inputs, [s.metainfo for s in samples])
        crop = (slice(None), slice(None), slice(0, 48), slice(0, 100))
        log_p = logits[crop].log_softmax(1)
        q = teacher.prob[crop]
        expected_kd = (q * (q.clamp_min(1e-38).log() - log_p)).sum(1).mean()
        # the uncertainty term at the branch's resolution (64x128 / 8 = 8x16):
        # the teacher's map averaged over each 8x8 cell; cells with more image
        # than padding count (48 / 8 = 6 rows, 100 / 8 = 12.5 -> 12 columns plus
        # the half-padded 13th, which has less than half image: 12)
        target = torch.nn.functional.avg_pool2d(teacher.maps['std'][:, None], 8)
        expected_u = model.decode_head.loss_uncertainty(raw[:, :, :6, :12],
                                                        target[:, :, :6, :12])
    assert losses['distill.loss_uncertainty'].item() == pytest.approx(expected_u.item(), rel=1e-5)
    # the KD of a student near its teacher is a small difference of float32
    # log-probabilities: bounded by a few eps times |logit| + log C, not relative
    bound = 8 * torch.finfo(torch.float32).eps * (
        logits.abs().max().item() + math.log(logits.shape[1]))
    assert losses['distill.loss_kd'].item() == pytest.approx(expected_kd.item(), rel=1e-5,
                                                            abs=bound)


def test_unlabelled_batch_trains_the_uncertainty_and_kd_terms_alone(tmp_path):
    model = _distiller(tmp_path)
    model.train()
    inputs, samples = _batch(7)
    unlabelled = [SegDataSample(metainfo=s.metainfo) for s in samples]
    losses = model.loss(inputs, unlabelled)
    assert set(losses) == {'distill.loss_kd', 'distill.loss_uncertainty'}
    sum(losses.values()).backward()
    assert model.decode_head.uncertainty_branch[1].weight.grad.abs().sum() > 0
    # half labelled: refused, naming the image without labels, not silently unlabelled
    unlabelled[1].set_metainfo(dict(img_path='city/no_label.png'))
    with pytest.raises(ValueError, match=r'mixes labelled and unlabelled.*no_label\.png'):
        model.loss(inputs, [samples[0], unlabelled[1]])


def test_mimic_across_teachers_of_other_feature_channels_says_they_must_match():
    student = ConfigDict(bare_model_cfg('pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py'))
    student['type'] = 'EnsembleDistiller'
    student['decode_head'] = dict(type='DualHead', head=student['decode_head'])
    student['teacher'] = [dict(model=m['model'], checkpoint=None, test_cfg=dict(mode='whole'))
                          for m in _mixed_members()[::2]]  # PSPNet, SegFormer
    student['mimic_loss'] = dict(type='FeatureMimicLoss')
    with mmseg_scope(), pytest.raises(ValueError, match=r'feature mimic needs teacher '
                                                        r'members with equal feature channels, '
                                                        r'got \[128, 256\]'):
        MODELS.build(student)
