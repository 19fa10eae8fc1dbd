"""A DualHead around every decode-head type in mmseg's shipped configs.

The head types and their configs are read from the installed mmseg's own
``configs/`` at test time, so a new mmseg's new heads are checked (and fail
the committed-results test until ``tools/head_coverage.py`` is re-run).
"""
from __future__ import annotations

import copy
import json
import math
import os.path as osp

import pytest
import torch
from mmengine.config import ConfigDict
from torch import nn

from mmseg.models.decode_heads import PSPHead
from mmseg.registry import MODELS

from mmseg_uncert.workflows.head_coverage import (RESULTS, bare_model_cfg, build_model,
                                             check_head, coverage_table,
                                             shipped_head_configs, synthetic_batch,
                                             table_in)
from mmseg_uncert.models.decode_heads import UnsupportedHeadError
from mmseg_uncert.models.segmentors import mmseg_scope
from mmseg_uncert.models.segmentors.student_init import load_student_state

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
HEADS = shipped_head_configs()
with open(osp.join(ROOT, RESULTS)) as f:
    COMMITTED = json.load(f)
COMMITTED_BY_HEAD = {r['head']: r for r in COMMITTED['results']}
#: the issue's goal: at most this many head types refused
MAX_REFUSED = 3


@pytest.mark.parametrize('head', sorted(HEADS))
def test_dual_head_around_every_shipped_mmseg_head(head):
    result = check_head(head, HEADS[head])
    committed = COMMITTED_BY_HEAD.get(head)
    assert committed is not None, (
        f'mmseg ships decode head {head} ({HEADS[head]}), which '
        f'{RESULTS} does not list: run python tools/head_coverage.py')
    assert (result['status'], result['reason'], result['config']) == (
        committed['status'], committed['reason'], committed['config'])
    if result['status'] == 'refused':
        # the error names the head and says why
        assert head in result['reason'].split(':', 1)[0] and len(result['reason']) > 80
        return
    assert result['logits_equal'], 'same weights must give the bare model\'s logits'
    assert result['loss_equal'] and all(result['loss_equal'].values()), result['loss_equal']
    assert result['channels'] == result['num_classes'] + 2
    assert result['maps'] == ['aleatoric', 'epistemic']
    terms = result['distill_losses']
    assert set(terms) == {'distill.loss_kd', 'distill.loss_uncertainty',
                          'distill.loss_pairwise', 'distill.loss_mimic'}
    assert all(math.isfinite(v) and v >= 0 for v in terms.values())
    assert result['branch_learns']


def test_committed_results_cover_mmseg_heads_and_meet_the_goal():
    assert sorted(COMMITTED_BY_HEAD) == sorted(HEADS)
    refused = [r['head'] for r in COMMITTED['results'] if r['status'] == 'refused']
    assert len(refused) <= MAX_REFUSED, refused
    import mmseg
    assert COMMITTED['mmseg'] == mmseg.__version__


@pytest.mark.parametrize('doc', ['docs/components/dual_head.md'])
def test_docs_hold_the_table_of_the_committed_results(doc):
    assert table_in(osp.join(ROOT, doc)) == coverage_table(COMMITTED)


def test_discovery_finds_the_head_types_of_mmseg_1_2_2():
    """Spot checks of what the config scan must find (by hand from mmseg
    1.2.2's configs/): a cascade's two stages, a query head that needs
    mmdet, an auxiliary-only head left out."""
    assert HEADS['OCRHead'].startswith('ocrnet/')
    assert HEADS['FCNHead']  # OCRNet's first stage and plain FCNs
    assert HEADS['Mask2FormerHead'].startswith('mask2former/')
    assert HEADS['PSPHead'] == 'pspnet/pspnet_r18-d8_4xb4-80k_isaid-896x896.py'
    assert 'STDCHead' not in HEADS  # STDC's boundary head is an auxiliary head only
    assert len(HEADS) == 35


# ------------------------------------------------------------ bad input

def _fcn(num_classes: int = 4) -> dict:
    return dict(type='FCNHead', in_channels=8, channels=8, num_convs=1,
                num_classes=num_classes, norm_cfg=dict(type='BN'))


def test_a_head_config_that_is_not_a_decode_head_names_the_key():
    with mmseg_scope(), pytest.raises(TypeError, match=r"head \(type='ResNet'\) is not an "
                                                        r"mmseg decode head"):
        MODELS.build(dict(type='DualHead', head=dict(type='ResNet', depth=18)))


@pytest.mark.parametrize('names,match', [((), 'uncertainty_names must be a non-empty'),
                                         ('std', 'uncertainty_names must be a non-empty'),
                                         (('std', 'epistemic', 'std'),
                                          r"uncertainty_names names \['std'\] more than once")])
def test_empty_or_repeated_uncertainty_names_are_refused(names, match):
    with mmseg_scope(), pytest.raises(ValueError, match=match):
        MODELS.build(dict(type='DualHead', head=_fcn(), uncertainty_names=names))


@MODELS.register_module()
class _DoubledLogitsHead(PSPHead):
    """Returns its classifier's output doubled: not what conv_seg gave."""

    def forward(self, inputs):
        return 2 * super().forward(inputs)


@MODELS.register_module()
class _TwiceClassifiedHead(PSPHead):
    """Calls its classifier twice in one forward."""

    def forward(self, inputs):
        out = super().forward(inputs)
        return out + self.conv_seg(self._transform_inputs(inputs)[:, :self.channels] * 0
                                   + 1)


@MODELS.register_module()
class _MyPSPHead(PSPHead):
    """A user's subclass: an extra scale on the logits, applied before conv_seg."""

    def cls_seg(self, feat):
        return self.conv_seg(0.5 * feat)


def _psp(type_: str) -> dict:
    return dict(type=type_, in_channels=8, channels=8, pool_scales=(1, 2), num_classes=4,
                norm_cfg=dict(type='BN'))


def _features():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 8, 16, 16, generator=g)]


def test_a_head_whose_outputs_cannot_be_followed_names_the_head_and_what_it_returned():
    with mmseg_scope():
        doubled = MODELS.build(dict(type='DualHead', head=_psp('_DoubledLogitsHead')))
        twice = MODELS.build(dict(type='DualHead', head=_psp('_TwiceClassifiedHead')))
    doubled.eval(), twice.eval()
    with pytest.raises(UnsupportedHeadError,
                       match=r"_DoubledLogitsHead returned a tensor of shape \(2, 4, 16, 16\), "
                             r"none of which is its classifier conv_seg's output"):
        doubled(_features())
    with pytest.raises(UnsupportedHeadError,
                       match='_TwiceClassifiedHead called its classifier conv_seg 2 times'):
        twice(_features())


def test_a_users_subclass_is_followed_by_what_it_does():
    """No type whitelist: the subclass's prediction is its own, and the branch
    reads what its conv_seg reads (0.5 x the features, by hand)."""
    with mmseg_scope():
        torch.manual_seed(0)
        dual = MODELS.build(dict(type='DualHead', head=_psp('_MyPSPHead'),
                                 read_probabilities=False))
        bare = MODELS.build(_psp('_MyPSPHead'))
    bare.load_state_dict(dual.head.state_dict())
    dual.eval(), bare.eval()
    x = _features()
    with torch.no_grad():
        scores, raw, feature = dual.forward_with_uncertainty(x)
        expected = bare(x)
        bottleneck = bare._forward_feature(x)  # the features before cls_seg's 0.5
    assert torch.equal(scores, expected)
    assert torch.allclose(feature, 0.5 * bottleneck)
    assert torch.allclose(raw, dual.uncertainty_branch(0.5 * bottleneck), atol=1e-6)


# ------------------------------------- ensembles over mixed architectures

def _mixed_members() -> list[dict]:
    """PSPNet, DeepLabV3+, SegFormer and OCRNet (a cascade) from mmseg's
    configs, random weights, 19 Cityscapes classes."""
    paths = ['pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py',
             'deeplabv3plus/deeplabv3plus_r18-d8_4xb2-80k_cityscapes-512x1024.py',
             'segformer/segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.py',
             'ocrnet/ocrnet_hr18s_4xb2-40k_cityscapes-512x1024.py']
    return [dict(model=bare_model_cfg(p), checkpoint=None) for p in paths]


@pytest.mark.parametrize('mode', ['whole', 'slide'])
def test_ensemble_over_mixed_architectures_and_a_cascade(mode, tmp_path):
    """p̄ is the mean of the members' own softmaxes (each run alone, by mmseg's
    inference), in whole-image and sliding-window modes."""
    test_cfg = (dict(mode='whole') if mode == 'whole'
                else dict(mode='slide', crop_size=(32, 32), stride=(24, 24)))
    specs = []
    for index, spec in enumerate(_mixed_members()):
        model = build_model(spec['model'], seed=index)
        path = str(tmp_path / f'member_{index}.pth')
        torch.save(dict(state_dict=model.state_dict(), meta={}), path)
        specs.append(dict(model=spec['model'], checkpoint=path))
    with mmseg_scope():
        ensemble = MODELS.build(dict(type='EnsembleSegmentor', members=specs,
                                     test_cfg=test_cfg))
    ensemble.eval()
    inputs, samples = synthetic_batch(19, (48, 64))
    with torch.no_grad():
        got = ensemble.predict(inputs, copy.deepcopy(samples))
        probs = []
        for member in ensemble.members:
            metas = [dict(s.metainfo) for s in samples]
            probs.append(member.inference(inputs, metas).softmax(1))
    mean = torch.stack(probs).mean(0)
    for sample, expected in zip(got, mean):
        assert torch.allclose(sample.seg_logits.data.exp(), expected, atol=1e-5)
        total = -(expected * expected.clamp_min(1e-12).log()).sum(0)
        assert torch.allclose(sample.pred_uncertainty.total[0], total, atol=1e-4)


@pytest.mark.parametrize('mode', ['whole', 'slide'])
def test_mc_dropout_over_a_cascade(mode, tmp_path):
    """OCRNet's heads have dropout: T seeded passes with dropout on and BN in
    eval, averaged, equal the same passes run by hand."""
    model_cfg = _mixed_members()[3]['model']
    model_cfg['test_cfg'] = dict(mode='whole')
    for head in model_cfg['decode_head']:
        head['dropout_ratio'] = 0.1  # the shipped HRNet-18s OCRNet has none
    model = build_model(model_cfg, seed=3)
    path = str(tmp_path / 'ocrnet.pth')
    torch.save(dict(state_dict=model.state_dict(), meta={}), path)
    with mmseg_scope():
        mc = MODELS.build(dict(type='MCDropoutSegmentor',
                               model=dict(model=model_cfg, checkpoint=path),
                               num_samples=3, seed=5,
                               test_cfg=None if mode == 'whole' else dict(
                                   mode='slide', crop_size=(32, 32), stride=(24, 24))))
    mc.eval()
    inputs, samples = synthetic_batch(19, (48, 64))
    with torch.no_grad():
        got = mc.predict(inputs, copy.deepcopy(samples))
        by_hand = mc.model
        torch.manual_seed(5)
        for m in by_hand.modules():
            if isinstance(m, nn.Dropout2d | nn.Dropout):
                m.train()
        metas = [dict(s.metainfo) for s in samples]
        mean = torch.stack([by_hand.inference(inputs, [dict(m) for m in metas]).softmax(1)
                            for _ in range(3)]).mean(0)
        by_hand.eval()
    for sample, expected in zip(got, mean):
        assert torch.allclose(sample.seg_logits.data.exp(), expected, atol=1e-5)
    assert any(float(s.pred_uncertainty.epistemic.max()) > 0 for s in got)


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


def test_a_cascade_student_deploys_alone():
    """An OCRNet student distilled by EnsembleDistiller deploys as an
    UncertaintyCascadeEncoderDecoder: its checkpoint loads strictly and the
    predictions (logits and maps) are the distiller's."""
    from mmseg_uncert.apis import deploy_model_config, student_state_dict
    from mmseg_uncert.workflows.head_coverage import distiller_model_cfg, student_model_cfg
    model = bare_model_cfg('ocrnet/ocrnet_hr18s_4xb2-40k_cityscapes-512x1024.py')
    distiller_cfg = distiller_model_cfg(student_model_cfg(model), 19)
    distiller = build_model(distiller_cfg)
    deployed_cfg = deploy_model_config(distiller_cfg)
    assert deployed_cfg.type == 'UncertaintyCascadeEncoderDecoder'
    deployed = build_model(deployed_cfg, seed=1)
    deployed.load_state_dict(student_state_dict(distiller.state_dict()), strict=True)
    distiller.eval(), deployed.eval()
    inputs, samples = synthetic_batch(19, (64, 64))
    with torch.no_grad():
        ours = deployed.predict(inputs, copy.deepcopy(samples))
        theirs = distiller.predict(inputs, copy.deepcopy(samples))
    for a, b in zip(ours, theirs):
        assert torch.equal(a.seg_logits.data, b.seg_logits.data)
        assert torch.equal(a.pred_uncertainty.epistemic, b.pred_uncertainty.epistemic)


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


def test_an_ensemble_reads_mask_queries_scores_as_probabilities():
    """A Mask2Former member predicts semantic scores s >= 0, not logits:
    the ensemble's p̄ is s / Σ_c s (here of its one member), not softmax(s)."""
    model_cfg = bare_model_cfg('mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.py')
    with mmseg_scope():
        ensemble = MODELS.build(dict(type='EnsembleSegmentor',
                                     members=[dict(model=model_cfg, checkpoint=None)],
                                     test_cfg=dict(mode='whole')))
    ensemble.eval()
    inputs, samples = synthetic_batch(150, (64, 64))
    with torch.no_grad():
        got = ensemble.predict(inputs, copy.deepcopy(samples))
        s = ensemble.members[0].inference(inputs, [dict(x.metainfo) for x in samples])
    assert float(s.min()) >= 0
    for sample, scores in zip(got, s):
        assert torch.allclose(sample.seg_logits.data.exp(), scores / scores.sum(0), atol=1e-6)


def test_a_plain_head_student_deploys_as_a_plain_mmseg_model():
    from mmseg_uncert.apis import deploy_model_config
    plain = dict(type='EnsembleDistiller', teacher=[], backbone=dict(type='ResNetV1c'),
                 decode_head=dict(type='FCNHead'))
    assert deploy_model_config(plain).type == 'EncoderDecoder'
    cascade = dict(plain, decode_head=[dict(type='FCNHead'), dict(type='OCRHead')])
    assert deploy_model_config(cascade).type == 'CascadeEncoderDecoder'
    assert deploy_model_config(cascade).num_stages == 2
    dual = dict(plain, decode_head=[dict(type='FCNHead'), dict(type='DualHead')])
    assert deploy_model_config(dual).type == 'UncertaintyCascadeEncoderDecoder'
