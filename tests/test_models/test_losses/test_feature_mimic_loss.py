"""FeatureMimicLoss: channels and size adapted."""
import pytest
import torch

from mmseg_uncert.models.losses import FeatureMimicLoss


def test_feature_mimic_adapts_channels_and_size():
    loss = FeatureMimicLoss(student_channels=4, teacher_channels=6)
    s, t = torch.randn(1, 4, 8, 8), torch.randn(1, 6, 16, 16)
    assert loss(s, t).item() > 0
    same = FeatureMimicLoss(student_channels=6, teacher_channels=6)
    assert same(t, t).item() == 0.0
    with pytest.raises(ValueError, match='5 channels.*built for 6'):
        loss(s, torch.randn(1, 5, 8, 8))
