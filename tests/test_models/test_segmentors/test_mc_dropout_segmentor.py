"""MCDropoutSegmentor: dropout on, BN statistics kept, reproducible, on a cascade."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mmseg.registry import MODELS

from mmseg_uncert.models.segmentors import mmseg_scope
from mmseg_uncert.workflows.head_coverage import build_model, synthetic_batch

from helpers.ensembles import _inputs, _mixed_members, _samples
from helpers.members import member_model_cfg, save_member


def _mc(tmp_path, dropout_ratio=0.1, **kwargs):
    spec = dict(model=member_model_cfg(5, dropout_ratio),
                checkpoint=save_member(str(tmp_path / 'mc.pth'), 3, 5,
                                       dropout_ratio=dropout_ratio))
    return MODELS.build(dict(type='MCDropoutSegmentor', model=spec, **kwargs))


def test_mc_dropout_keeps_bn_statistics_and_samples_with_dropout_on(tmp_path):
    mc = _mc(tmp_path, num_samples=6, seed=4)
    before = {k: v.clone() for k, v in mc.model.state_dict().items()}
    inputs, samples = _inputs(3), _samples(2, ori_shape=(32, 64))
    seen = []
    for prob in mc.member_probabilities(inputs, [s.metainfo for s in samples]):
        assert mc.model.decode_head.dropout.training  # dropout active
        assert not mc.model.backbone.training  # BN in eval
        seen.append(prob)
    assert not mc.model.decode_head.dropout.training  # switched back off
    assert not torch.allclose(seen[0], seen[1])  # the passes differ
    for key, value in mc.model.state_dict().items():
        assert torch.equal(value, before[key]), key  # BN statistics untouched
    out = mc.predict(inputs, samples)
    assert out[0].pred_uncertainty.epistemic.max() > 0


def test_mc_dropout_is_reproducible_and_leaves_the_global_rng(tmp_path):
    mc = _mc(tmp_path, num_samples=4, seed=7)
    inputs = _inputs(5)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    with torch.no_grad():
        a = mc.encode_decode(inputs, [s.metainfo for s in _samples(2, (32, 64))])
    assert torch.equal(torch.rand(1), expected_next)
    with torch.no_grad():
        b = mc.encode_decode(inputs, [s.metainfo for s in _samples(2, (32, 64))])
    assert torch.equal(a, b)


def test_mc_dropout_without_dropout_is_refused(tmp_path):
    with pytest.raises(ValueError, match='no dropout layer.*dropout_ratio'):
        _mc(tmp_path, dropout_ratio=0.0)


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
