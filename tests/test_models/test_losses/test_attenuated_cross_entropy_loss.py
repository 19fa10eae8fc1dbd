"""AttenuatedCrossEntropyLoss against hand computations.

Also mmseg_uncert.models.losses.named_loss, whose loss-name check it meets.
"""
import math

import pytest
import torch
import torch.nn.functional as nnf

from mmseg_uncert.models.losses import (AttenuatedCrossEntropyLoss,
                                        attenuated_cross_entropy)


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
