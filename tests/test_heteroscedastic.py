"""Attenuated losses against hand computations, and the heteroscedastic head."""
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as nnf
from mmengine.config import Config

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmengine.structures import PixelData

from mmseg_uncert.models.losses import (AttenuatedCrossEntropyLoss,
                                        attenuated_cross_entropy,
                                        attenuated_regression)
from mmseg_uncert.models.segmentors import mmseg_scope

from conftest import ROOT, run_tool
from helpers.tiny_config import write_tiny_config
from test_tools_e2e import _latest_metrics

CONFIG = osp.join(ROOT, 'configs', 'heteroscedastic',
                  'heteroscedastic-fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py')


def test_attenuated_ce_by_hand():
    # one pixel, two classes, two noise samples
    logits = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    log_var = torch.tensor([math.log(4.0)]).view(1, 1, 1, 1)  # sigma = 2
    noise = torch.tensor([[0.5, -0.5], [-1.0, 0.0]]).view(2, 1, 2, 1, 1)
    label = torch.tensor([0]).view(1, 1, 1)
    # x_1 = (1 + 1, 0 - 1) = (2, -1); x_2 = (1 - 2, 0) = (-1, 0)
    p1 = math.exp(2) / (math.exp(2) + math.exp(-1))
    p2 = math.exp(-1) / (math.exp(-1) + math.exp(0))
    expected = -math.log((p1 + p2) / 2)
    got = attenuated_cross_entropy(logits, log_var, label, num_samples=2,
                                   noise=noise)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_attenuated_ce_is_cross_entropy_as_variance_vanishes():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 6, 7, generator=g) * 3
    label = torch.randint(0, 5, (2, 6, 7), generator=g)
    label[0, :2] = 255
    log_var = torch.full((2, 1, 6, 7), -40.0)
    torch.manual_seed(1)
    got = attenuated_cross_entropy(logits, log_var, label, num_samples=5)
    expected = nnf.cross_entropy(logits, label, ignore_index=255)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_attenuated_ce_ignores_pixels_and_is_stable():
    logits = torch.tensor([[1e4, -1e4]]).view(1, 2, 1, 1).repeat(1, 1, 2, 1)
    label = torch.tensor([[1], [255]]).view(1, 2, 1)
    log_var = torch.zeros(1, 1, 2, 1)
    torch.manual_seed(0)
    loss = attenuated_cross_entropy(logits, log_var, label, num_samples=3)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(2e4, rel=1e-3)
    none_valid = torch.full((1, 2, 1), 255)
    zero = attenuated_cross_entropy(logits, log_var, none_valid, num_samples=3)
    assert zero.item() == 0.0


def test_attenuated_ce_has_gradients_for_both_outputs_and_rejects_bad_shapes():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    log_var = torch.zeros(1, 1, 4, 4, requires_grad=True)
    loss = AttenuatedCrossEntropyLoss(num_samples=4)(
        logits, torch.randint(0, 3, (1, 4, 4)), log_var)
    loss.backward()
    assert logits.grad.abs().sum() > 0 and log_var.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r'log_variance.*\(1, 2, 4, 4\)'):
        attenuated_cross_entropy(logits, torch.zeros(1, 2, 4, 4),
                                 torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="AttenuatedCrossEntropyLoss: loss_name must start with 'loss_'"):
        AttenuatedCrossEntropyLoss(loss_name='att')


def test_attenuated_regression_by_hand():
    pred = torch.tensor([1.0, 2.0]).view(1, 1, 2, 1)
    target = torch.tensor([3.0, 2.5]).view(1, 1, 2, 1)
    log_var = torch.tensor([0.0, math.log(0.5)]).view(1, 1, 2, 1)
    # pixel 1: 0.5 * 1 * 4 + 0; pixel 2: 0.5 * 2 * 0.25 + 0.5 * log 0.5
    expected = (2.0 + (0.25 + 0.5 * math.log(0.5))) / 2
    assert attenuated_regression(pred, target, log_var).item() == pytest.approx(expected)
    valid = torch.tensor([True, False]).view(1, 2, 1)
    assert attenuated_regression(pred, target, log_var, valid).item() == pytest.approx(2.0)


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


def test_train_and_test_through_the_tools(tiny_data_root, tmp_path):
    cfg = write_tiny_config(str(tmp_path / 'het.py'), tiny_data_root, max_iters=2,
                            base=CONFIG)
    run_dir = str(tmp_path / 'run')
    proc = run_tool(['tools/train.py', cfg, '--work-dir', run_dir])
    assert 'loss_att_ce' in proc.stdout + proc.stderr
    test_dir = str(tmp_path / 'test')
    run_tool(['tools/test.py', cfg, osp.join(run_dir, 'iter_2.pth'),
              '--work-dir', test_dir])
    metrics = _latest_metrics(test_dir)
    assert 'auroc/aleatoric' in metrics and 'aleatoric_auroc/aleatoric' in metrics
