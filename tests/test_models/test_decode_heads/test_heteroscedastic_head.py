"""HeteroscedasticHead: the wrapped head's logits and a reproducible aleatoric map."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_uncert.models.segmentors import mmseg_scope

from conftest import ROOT

# the heteroscedastic head's config
CONFIG = osp.join(ROOT, 'configs', 'heteroscedastic',
                  'heteroscedastic-fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py')


def _model():
    cfg = Config.fromfile(CONFIG)
    with mmseg_scope():
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


def test_head_logits_are_the_wrapped_heads():
    model = _model()
    head = model.decode_head
    x = [torch.randn(1, 576, 8, 16)]
    with torch.no_grad():
        bare = head.head(x)  # the FCN head alone, same weights
        logits, log_var = head.forward_with_variance(x)
        out = head.forward(x)
    assert torch.equal(logits, bare)
    assert log_var.shape == (1, 1, 8, 16)
    assert torch.equal(out[:, :19], bare) and out.shape[1] == 21


def test_predict_gives_the_aleatoric_map_reproducibly():
    model = _model()
    inputs = torch.randn(1, 3, 64, 128)
    sample = SegDataSample(metainfo=dict(ori_shape=(64, 128), img_shape=(64, 128),
                                         pad_shape=(64, 128),
                                         padding_size=[0, 0, 0, 0]))
    with torch.no_grad():
        a = model.predict(inputs, [sample.clone()])[0]
        b = model.predict(inputs, [sample.clone()])[0]
    assert a.seg_logits.data.shape == (19, 64, 128)
    assert a.pred_uncertainty.aleatoric.shape == (1, 64, 128)
    assert torch.equal(a.pred_uncertainty.aleatoric, b.pred_uncertainty.aleatoric)
    # with the initial tiny variance the expected entropy is the entropy of f
    p = a.seg_logits.data.softmax(0)
    entropy = -(p * p.log()).sum(0)
    assert torch.allclose(a.pred_uncertainty.aleatoric[0], entropy, atol=1e-2)


@MODELS.register_module(force=True)
class HeadWithoutClassifier(torch.nn.Module):
    """A head whose classifier is not a conv_seg (as DDRHead's aux outputs)."""

    num_classes = 3


def test_a_head_without_conv_seg_is_refused():
    with pytest.raises(TypeError, match='conv_seg.*HeadWithoutClassifier'):
        with mmseg_scope():
            MODELS.build(dict(type='HeteroscedasticHead',
                              head=dict(type='HeadWithoutClassifier')))
