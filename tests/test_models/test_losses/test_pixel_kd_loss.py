"""PixelKDLoss against hand computations."""
import math

import pytest
import torch

from mmseg_uncert.models.losses import PixelKDLoss, pixel_kd


def test_pixel_kd_is_zero_for_a_student_equal_to_the_teacher():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, 6, generator=g)
    for t in (1.0, 3.0):
        teacher = (logits / t).softmax(1)
        # float32 rounding of two log-softmaxes, a few eps times |z / T| + log C
        # each, times the T² the loss carries
        bound = t**2 * 8 * torch.finfo(torch.float32).eps * (
            logits.abs().max().item() / t + math.log(5))
        assert pixel_kd(logits, teacher, t).item() == pytest.approx(0.0, abs=bound)


def test_pixel_kd_by_hand():
    # one pixel, two classes, T = 2
    student = torch.tensor([2.0, 0.0]).view(1, 2, 1, 1)
    q = torch.tensor([0.25, 0.75]).view(1, 2, 1, 1)
    p = torch.softmax(torch.tensor([1.0, 0.0]), 0)  # softmax(z / T)
    kl = 0.25 * math.log(0.25 / p[0]) + 0.75 * math.log(0.75 / p[1])
    got = PixelKDLoss(temperature=2.0)(student, q)
    assert got.item() == pytest.approx(4 * kl, rel=1e-6)


def test_pixel_kd_leaves_ignored_pixels_out():
    g = torch.Generator().manual_seed(1)
    student = torch.randn(1, 3, 2, 2, generator=g)
    teacher = torch.randn(1, 3, 2, 2, generator=g).softmax(1)
    valid = torch.tensor([[[True, False], [True, True]]])
    base = pixel_kd(student, teacher, 1.0, valid)
    changed = student.clone()
    changed[:, :, 0, 1] = torch.tensor([50.0, -50.0, 0.0])
    assert pixel_kd(changed, teacher, 1.0, valid).item() == pytest.approx(base.item())
    by_hand = [pixel_kd(student[:, :, i:i + 1, j:j + 1], teacher[:, :, i:i + 1, j:j + 1])
               for i, j in ((0, 0), (1, 0), (1, 1))]
    assert base.item() == pytest.approx(sum(v.item() for v in by_hand) / 3)
