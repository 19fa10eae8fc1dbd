"""Pseudo-labels of unlabelled target batches: the teacher's argmax, thresholded."""
from __future__ import annotations

import copy

import pytest
import torch
from mmengine.config import ConfigDict

from mmseg.registry import MODELS

from mmseg_uncert.models.segmentors import mmseg_scope
from mmseg_uncert.models.segmentors.student_init import load_student_state
from mmseg_uncert.workflows.head_coverage import build_model, synthetic_batch

from helpers.members import member_model_cfg, save_member
from helpers.proda import _batch


def test_distiller_learns_the_teachers_hard_labels_on_target_batches(tmp_path):
    """ProDA's distillation stage: on an unlabelled target batch the student's
    CE is against argmax of the teacher and its KD against the teacher's
    softmax; the source batch learns its labels."""
    import torch.nn.functional as F
    teacher = dict(model=member_model_cfg(5),
                   checkpoint=save_member(str(tmp_path / 't.pth'), seed=4, num_classes=5))
    cfg = member_model_cfg(5, dropout_ratio=0.0)
    cfg.update(type='EnsembleDistiller', teacher=teacher,
               data_preprocessor=dict(cfg['data_preprocessor'], size=(64, 128)),
               kd_loss=dict(type='PixelKDLoss', loss_weight=0.5))
    with mmseg_scope():
        model = MODELS.build(ConfigDict(cfg))
    model.train()
    batch = model.data_preprocessor(dict(source=_batch(seed=5),
                                         target=_batch(seed=6, labelled=False)), True)
    losses = model(**batch, mode='loss')
    target = batch['inputs']['target']
    with torch.no_grad():
        logits = model.decode_head(model.extract_feat(target))
        logits = F.interpolate(logits, target.shape[2:], mode='bilinear', align_corners=False)
        q = model.teacher.members[0].inference(
            target, [s.metainfo for s in batch['data_samples']['target']]).softmax(1)
        ce = F.cross_entropy(logits, q.argmax(1))
        kd = (q * (q.log() - logits.log_softmax(1))).sum(1).mean()
    assert losses['target.decode.loss_ce'].item() == pytest.approx(ce.item(), rel=1e-4)
    assert losses['target.distill.loss_kd'].item() == pytest.approx(0.5 * kd.item(), rel=1e-4)
    assert 'decode.loss_ce' in losses and 'distill.loss_kd' not in losses
    # a threshold no random teacher reaches leaves no target pixel
    model.pseudo_label_threshold = 0.99
    losses = model(**batch, mode='loss')
    assert losses['target.decode.loss_ce'].item() == 0.0
    assert losses['target.distill.loss_kd'].item() == 0.0


def test_pseudo_labelled_targets_train_every_output_of_a_multi_output_head():
    """Domain adaptation's distillation stage with a DANet student: on the
    unlabelled target the head's own loss_by_feat sees all three outputs
    (pam_cam, pam, cam), against the teacher's argmax labels; by hand with
    the bare model and the same weights."""
    from mmseg_uncert.workflows.head_coverage import tiny_teacher
    head = dict(type='DAHead', in_channels=512, in_index=0, channels=16, pam_channels=8,
                num_classes=5, dropout_ratio=0.0, norm_cfg=dict(type='BN'))
    bare_cfg = ConfigDict(type='EncoderDecoder',
                          backbone=dict(type='ResNetV1c', depth=18, out_indices=(3, )),
                          decode_head=head)
    cfg = ConfigDict(copy.deepcopy(bare_cfg.to_dict()))
    cfg.update(type='EnsembleDistiller', teacher=[tiny_teacher(5, None)])
    cfg['decode_head'] = dict(type='DualHead', head=head, uncertainty_names=('std', ))
    distiller = build_model(cfg)
    bare = build_model(bare_cfg, seed=1)
    load_student_state(distiller, bare.state_dict(), 'the bare DANet')
    source, source_samples = synthetic_batch(5, (64, 64), seed=1)
    target, target_samples = synthetic_batch(5, (64, 64), seed=2)
    for s in target_samples:
        del s.gt_sem_seg
    distiller.train(), bare.train()
    losses = distiller.loss(dict(source=source, target=target),
                            dict(source=source_samples, target=target_samples))
    with torch.no_grad():
        metas = [s.metainfo for s in target_samples]
        labels = torch.stack(list(distiller.teacher.member_probabilities(target, metas))
                             ).mean(0).argmax(1)
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    pseudo = [SegDataSample(metainfo=m, gt_sem_seg=PixelData(data=l[None]))
              for m, l in zip(metas, labels)]
    expected = bare.decode_head.loss_by_feat(bare.decode_head(bare.extract_feat(target)),
                                             pseudo)
    for key in ('pam_cam.loss_ce', 'pam.loss_ce', 'cam.loss_ce'):
        assert torch.allclose(losses[f'target.decode.{key}'], expected[key], atol=1e-6), key


def test_distiller_on_the_strong_view_learns_the_carried_labels(tmp_path, monkeypatch):
    """target_view='strong' (ProDA): the student learns, on the strong view,
    the teacher's labels of the weak view carried there (a flip here), and
    nothing where the strong view has no content (its cut-out)."""
    import torch.nn.functional as F
    from mmseg_uncert.models.segmentors import ensemble_distiller
    from mmseg_uncert.models.strong_view import StrongView
    teacher = dict(model=member_model_cfg(5),
                   checkpoint=save_member(str(tmp_path / 't.pth'), seed=4, num_classes=5))
    cfg = member_model_cfg(5, dropout_ratio=0.0)
    cfg.update(type='EnsembleDistiller', teacher=teacher, kd_loss=None,
               target_view='strong',
               data_preprocessor=dict(cfg['data_preprocessor'], size=(64, 128)))
    with mmseg_scope():
        model = MODELS.build(ConfigDict(cfg))
    model.train()

    def flipped(inputs, mean, std, generator=None):
        # a flip, and a cut-out over the left quarter of the strong view
        warp = torch.tensor([[-1.0, 0, 0], [0, 1, 0]]).expand(len(inputs), 2, 3)
        cutout = torch.tensor([-1.0, -1.0, -0.5, 1.0]).expand(len(inputs), 4)
        return StrongView(inputs.flip(-1), warp, cutout)
    monkeypatch.setattr(ensemble_distiller, 'strong_view', flipped)
    batch = model.data_preprocessor(dict(source=_batch(seed=5),
                                         target=_batch(seed=6, labelled=False)), True)
    losses = model(**batch, mode='loss')
    target = batch['inputs']['target']
    with torch.no_grad():
        logits = model.decode_head(model.extract_feat(target.flip(-1)))
        logits = F.interpolate(logits, target.shape[2:], mode='bilinear', align_corners=False)
        q = model.teacher.members[0].inference(
            target, [s.metainfo for s in batch['data_samples']['target']]).softmax(1)
        labels = q.argmax(1).flip(-1)
        labels[..., :32] = 255  # the cut-out: 32 of 128 columns
        # mmseg's cross-entropy averages over every pixel, ignored ones as 0
        ce = F.cross_entropy(logits, labels, ignore_index=255, reduction='none').mean()
    assert losses['target.decode.loss_ce'].item() == pytest.approx(ce.item(), rel=1e-4)
    with pytest.raises(ValueError, match="target_view must be 'weak' or 'strong'"):
        with mmseg_scope():
            MODELS.build(ConfigDict(cfg, target_view='both'))
