"""Slide inference with the windows added in place, against mmseg's own."""
from __future__ import annotations

import copy
from unittest import mock

import pytest
import torch
from mmengine.config import ConfigDict
from mmseg.models.segmentors import EncoderDecoder

from mmseg_uncert.models.segmentors import mmseg_scope
from mmseg_uncert.models.segmentors.slide_inference import model_inference, slide_inference
from mmseg_uncert.workflows.head_coverage import build_model, synthetic_batch

from helpers.ensembles import _mixed_members
from helpers.members import member_model_cfg


@pytest.mark.parametrize('index', range(4))
def test_the_logits_of_mmseg_slide_inference_bit_for_bit(index):
    """PSPNet, DeepLabV3+, SegFormer and OCRNet (a cascade); windows that
    overlap unevenly, and a last row and column moved back to the edge."""
    with mmseg_scope():
        model = build_model(_mixed_members()[index]['model'], seed=index).eval()
    model.test_cfg = ConfigDict(mode='slide', crop_size=(32, 32), stride=(20, 24))
    inputs, samples = synthetic_batch(19, (48, 70))
    metas = [dict(s.metainfo) for s in samples]
    before = copy.deepcopy(metas)
    with torch.no_grad():
        expected = model.slide_inference(inputs, copy.deepcopy(metas))
        got = slide_inference(model, inputs, metas)
        # an mmseg segmentor takes the in-place windows, not mmseg's loop
        with mock.patch.object(EncoderDecoder, 'slide_inference',
                               side_effect=AssertionError('mmseg loop used')):
            routed = model_inference(model, inputs, metas)
    assert torch.equal(got, expected) and torch.equal(routed, expected)
    assert metas == before  # mmseg writes the window's shape into them


def test_a_segmentor_with_its_own_slide_inference_keeps_it():
    """A subclass that overrides mmseg's slide inference runs its own, on
    copies of the metas."""
    with mmseg_scope():
        model = build_model(member_model_cfg(num_classes=5), seed=0).eval()

    class OwnSlide(type(model)):
        def slide_inference(self, inputs, batch_img_metas):
            batch_img_metas[0]['img_shape'] = 'written'
            return inputs.new_full((1,), 7.0)

    model.__class__ = OwnSlide
    model.test_cfg = ConfigDict(mode='slide', crop_size=(16, 16), stride=(8, 8))
    inputs, samples = synthetic_batch(5, (24, 28))
    metas = [dict(s.metainfo) for s in samples]
    before = copy.deepcopy(metas)
    assert model_inference(model, inputs, metas).tolist() == [7.0]
    assert metas == before


def test_an_image_smaller_than_the_window_and_whole_mode():
    """One window, the image itself; whole mode is mmseg's inference."""
    with mmseg_scope():
        model = build_model(member_model_cfg(num_classes=5), seed=0).eval()
    inputs, samples = synthetic_batch(5, (24, 28))
    metas = [dict(s.metainfo) for s in samples]
    with torch.no_grad():
        model.test_cfg = ConfigDict(mode='slide', crop_size=(32, 32), stride=(16, 16))
        assert torch.equal(slide_inference(model, inputs, metas),
                           model.slide_inference(inputs, copy.deepcopy(metas)))
        model.test_cfg = ConfigDict(mode='whole')
        assert torch.equal(model_inference(model, inputs, metas),
                           model.inference(inputs, copy.deepcopy(metas)))
