"""The attenuated regression loss by hand."""
import math

import pytest
import torch

from mmseg_uncert.models.losses import attenuated_regression


def test_attenuated_regression_by_hand():
    pred = torch.tensor([1.0, 2.0]).view(1, 1, 2, 1)
    target = torch.tensor([3.0, 2.5]).view(1, 1, 2, 1)
    log_var = torch.tensor([0.0, math.log(0.5)]).view(1, 1, 2, 1)
    # pixel 1: 0.5 * 1 * 4 + 0; pixel 2: 0.5 * 2 * 0.25 + 0.5 * log 0.5
    expected = (2.0 + (0.25 + 0.5 * math.log(0.5))) / 2
    assert attenuated_regression(pred, target, log_var).item() == pytest.approx(expected)
    valid = torch.tensor([True, False]).view(1, 2, 1)
    assert attenuated_regression(pred, target, log_var, valid).item() == pytest.approx(2.0)
