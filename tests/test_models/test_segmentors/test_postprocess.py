"""mmseg_uncert.models.segmentors.postprocess: outputs restored to each
image's original size as mmseg's own post-processing restores them."""
from __future__ import annotations

import types

import pytest
import torch

from mmseg.models.segmentors import BaseSegmentor
from mmseg.structures import SegDataSample

from mmseg_uncert.models.segmentors.postprocess import restore, samples_with_uncertainty

METAS = [
    dict(ori_shape=(20, 30)),
    dict(ori_shape=(13, 17), padding_size=[0, 3, 0, 2]),  # right and bottom
    dict(ori_shape=(40, 50), img_padding_size=[1, 2, 3, 4], flip=True,
         flip_direction='horizontal'),
    dict(ori_shape=(16, 24), flip=True, flip_direction='vertical'),
]


@pytest.mark.parametrize('align_corners', [False, True])
@pytest.mark.parametrize('meta', METAS)
def test_restore_equals_mmseg_postprocess(meta, align_corners):
    """The same cropped, flipped and resized values as mmseg's
    BaseSegmentor.postprocess_result gives (its argmax aside)."""
    outputs = torch.randn(1, 6, 24, 32, generator=torch.Generator().manual_seed(0))
    segmentor = types.SimpleNamespace(align_corners=align_corners)
    expected = BaseSegmentor.postprocess_result(
        segmentor, outputs, [SegDataSample(metainfo=meta)])[0].seg_logits.data
    assert torch.equal(restore(outputs, meta, align_corners), expected)


def test_samples_carry_logits_prediction_and_named_maps():
    logits = torch.randn(2, 4, 24, 32, generator=torch.Generator().manual_seed(1))
    maps = torch.rand(2, 2, 24, 32, generator=torch.Generator().manual_seed(2))
    segmentor = types.SimpleNamespace(align_corners=False)
    samples = samples_with_uncertainty(
        segmentor, logits, maps, ('epistemic', 'aleatoric'),
        [SegDataSample(metainfo=METAS[1]), SegDataSample(metainfo=METAS[2])])
    for i, sample in enumerate(samples):
        whole = restore(torch.cat([logits, maps], 1)[i:i + 1], sample.metainfo, False)
        assert torch.equal(sample.seg_logits.data, whole[:4])
        assert torch.equal(sample.pred_sem_seg.data[0], whole[:4].argmax(0))
        assert torch.equal(sample.pred_uncertainty.epistemic[0], whole[4])
        assert torch.equal(sample.pred_uncertainty.aleatoric[0], whole[5])
    with pytest.raises(ValueError, match=r"3 uncertainty maps for names \['a'\]"):
        samples_with_uncertainty(segmentor, logits, torch.rand(2, 3, 24, 32), ('a', ), None)
