"""SymmetricCrossEntropyLoss by hand, and the pixels it ignores."""
import math

import pytest
import torch

from mmseg_uncert.models.losses import (SymmetricCrossEntropyLoss,
                                        symmetric_cross_entropy)


def test_symmetric_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 3.0, 1.0],
                           [1.0, 1.0, 1.0]]).T.reshape(1, 3, 2, 2)
    label = torch.tensor([[[0, 2], [255, 1]]])
    alpha, beta, a = 0.1, 1.0, 1e-4
    total, n = 0.0, 0
    for i, y in enumerate([0, 2, 255, 1]):
        if y == 255:
            continue
        z = logits.reshape(3, 4)[:, i].tolist()
        p = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
        ce = -math.log(p[y])
        # RCE = -sum_c p_c log clamp(onehot_c, a, 1): only c != y contribute
        rce = -sum(p[c] * math.log(a) for c in range(3) if c != y)
        total += alpha * ce + beta * rce
        n += 1
    assert symmetric_cross_entropy(logits, label).item() == pytest.approx(total / n, rel=1e-6)
    loss = SymmetricCrossEntropyLoss(loss_weight=2.0)
    assert loss(logits, label).item() == pytest.approx(2 * total / n, rel=1e-6)
    assert loss.loss_name == 'loss_sce'


def test_symmetric_cross_entropy_ignores_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    label = torch.randint(0, 4, (2, 3, 3))
    label[0, 0] = 255
    base = symmetric_cross_entropy(logits, label)
    other = logits.detach().clone()
    other[0, :, 0] = torch.randn(4, 3) * 10  # only ignored pixels change
    assert symmetric_cross_entropy(other, label).item() == pytest.approx(base.item())
    base.backward()
    assert torch.all(logits.grad[0, :, 0] == 0)
    none = torch.full_like(label, 255)
    zero = symmetric_cross_entropy(logits, none)
    assert zero.item() == 0.0 and zero.requires_grad
    with pytest.raises(ValueError, match='logits'):
        symmetric_cross_entropy(logits, label[0])
