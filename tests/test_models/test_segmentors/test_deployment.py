"""Deployment: training wrappers deploy as their student, with its weights.

Also mmseg_uncert.models.segmentors.cascade and
mmseg_uncert.models.segmentors.uncertainty_cascade_encoder_decoder, which an
OCRNet student deploys as.
"""
from __future__ import annotations

import copy

import pytest
import torch

from mmseg_uncert.apis import deploy_model_config, student_state_dict
from mmseg_uncert.workflows.head_coverage import (bare_model_cfg, build_model,
                                                  synthetic_batch)


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
    # the logits and maps apart, as the ONNX graph takes them: mmseg's cascade
    # encode_decode (its stages run by mmseg's code), cut
    size = (64, 64)
    metas = [dict(img_shape=size, pad_shape=size, ori_shape=size)] * len(inputs)
    with torch.no_grad():
        logits, maps = deployed.encode_decode_parts(inputs, metas)
        whole = deployed.encode_decode(inputs, metas)
    names = deployed.decode_head[-1].uncertainty_names
    assert logits.shape[1] == 19 and maps.shape[1] == len(names) > 0
    assert torch.equal(torch.cat([logits, maps], 1), whole)


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


def test_deploying_a_distiller_keeps_the_student_only():
    cfg = dict(type='EnsembleDistiller', teacher=dict(type='EnsembleSegmentor'),
               backbone=dict(type='B'), decode_head=dict(type='DualHead'),
               kd_loss=dict(type='PixelKDLoss'), pseudo_label_threshold=0.9,
               test_cfg=dict(mode='whole'), data_preprocessor=dict(type='P'))
    deployed = deploy_model_config(cfg)
    assert deployed.to_dict() == dict(
        type='UncertaintyEncoderDecoder', backbone=dict(type='B'),
        decode_head=dict(type='DualHead'), test_cfg=dict(mode='whole'),
        data_preprocessor=dict(type='P'), train_cfg=None)
    plain = dict(type='EncoderDecoder', backbone=dict(type='B'))
    assert deploy_model_config(plain).to_dict() == plain


def test_student_state_dict_drops_training_keys_and_strips_prefixes():
    w = torch.zeros(1)
    assert set(student_state_dict({'backbone.a': w, 'kd_loss.t': w,
                                   'pairwise_loss.p': w})) == {'backbone.a'}
    assert set(student_state_dict({'architecture.backbone.a': w,
                                   'distiller.teacher.b': w})) == {'backbone.a'}
    with pytest.raises(KeyError, match="'student.'"):
        student_state_dict({'backbone.a': w}, prefix='student.')
