"""ClassWeightedCrossEntropyLoss against torch, with ignored pixels."""
import math

import pytest
import torch


def test_class_weighted_cross_entropy_matches_torch_and_accepts_ignored_pixels():
    from mmseg_uncert.models.losses import ClassWeightedCrossEntropyLoss
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, generator=g)
    label = torch.randint(0, 4, (2, 5, 6), generator=g)
    label[0, :2] = 255
    weights = [0.5, 2.0, 1.0, 3.0]
    loss = ClassWeightedCrossEntropyLoss(weights)(logits, label, ignore_index=255)
    expected = torch.nn.functional.cross_entropy(
        logits, label, weight=torch.tensor(weights), ignore_index=255)
    # float32 log-softmax: a few eps times |z| + log C per pixel, whatever
    # order the two implementations sum in
    bound = 8 * torch.finfo(torch.float32).eps * (logits.abs().max().item() + math.log(4))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6, abs=bound)
    # by hand on one pixel: w_y * CE / w_y = CE
    one = ClassWeightedCrossEntropyLoss(weights)(logits[:1, :, 4:5, 0:1], label[:1, 4:5, 0:1])
    by_hand = -logits[0, :, 4, 0].log_softmax(0)[label[0, 4, 0]]
    assert one.item() == pytest.approx(by_hand.item(), rel=1e-6, abs=bound)
    # every pixel ignored: 0, with a gradient path
    logits.requires_grad_(True)
    none = ClassWeightedCrossEntropyLoss(weights)(logits, torch.full_like(label, 255))
    none.backward()
    assert none.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
    with pytest.raises(ValueError, match='3 class weights for 4 classes'):
        ClassWeightedCrossEntropyLoss(weights[:3])(logits, label)
