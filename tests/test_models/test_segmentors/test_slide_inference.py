"""Slide inference with the windows added in place, against mmseg's own."""
from __future__ import annotations

import copy
from unittest import mock

import pytest
import torch
from mmengine.config import ConfigDict
from mmseg.models.segmentors import EncoderDecoder

from mmseg_uncert.models.segmentors import mmseg_scope
from mmseg_uncert.models.segmentors.slide_inference import (model_bands, model_inference,
                                                            slide_bands, slide_inference)
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
            bands = [(top, band.clone()) for top, band in model_bands(model, inputs, metas)]
    assert torch.equal(got, expected) and torch.equal(routed, expected)
    # window rows at 0..32, 16..48: rows 0..16 are final once the second
    # row starts, the rest at the end
    assert [(top, band.shape[2]) for top, band in bands] == [(0, 16), (16, 32)]
    assert torch.equal(torch.cat([band for _, band in bands], 2), expected)
    assert metas == before  # mmseg writes the window's shape into them


@pytest.mark.parametrize('size, crop, stride, rows', [
    # window rows 0..32, 20..52, 38..70 (the last moved back to the edge)
    ((70, 40), (32, 32), (20, 24), [(0, 20), (20, 18), (38, 32)]),
    ((64, 40), (32, 32), (32, 32), [(0, 32), (32, 32)]),  # windows that only touch
    ((24, 40), (32, 32), (20, 24), [(0, 24)]),  # lower than the window
])
def test_slide_bands_are_the_slide_logits_row_by_row(size, crop, stride, rows):
    """Each band is handed over when no later window covers its rows; the
    bands are mmseg's logits bit for bit, and each band's logits are freed
    before the next window row runs (a consumer that drops them holds no
    more than one window row's sums)."""
    with mmseg_scope():
        model = build_model(member_model_cfg(num_classes=5), seed=1).eval()
    model.test_cfg = ConfigDict(mode='slide', crop_size=crop, stride=stride)
    inputs, samples = synthetic_batch(5, size)
    metas = [dict(s.metainfo) for s in samples]
    with torch.no_grad():
        expected = model.slide_inference(inputs, copy.deepcopy(metas))
        bands = [(top, band.clone()) for top, band in slide_bands(model, inputs, metas)]
    assert [(top, band.shape[2]) for top, band in bands] == rows
    assert torch.equal(torch.cat([band for _, band in bands], 2), expected)


def test_a_stride_larger_than_the_window_is_refused():
    """mmseg would leave the rows between windows at 0 / 0 = NaN."""
    with mmseg_scope():
        model = build_model(member_model_cfg(num_classes=5), seed=0).eval()
    model.test_cfg = ConfigDict(mode='slide', crop_size=(16, 16), stride=(20, 8))
    inputs, samples = synthetic_batch(5, (40, 28))
    metas = [dict(s.metainfo) for s in samples]
    with pytest.raises(ValueError, match=r'test_cfg.stride \(20, 8\) is larger'):
        slide_inference(model, inputs, metas)
    with pytest.raises(ValueError, match='use a stride at most the crop size'):
        list(slide_bands(model, inputs, metas))


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
