"""UncertaintyRegressionLoss: each form by hand, the distribution form's bins."""
import pytest
import torch
import torch.nn.functional as F

from mmseg_uncert.models.losses import UncertaintyRegressionLoss


def test_uncertainty_forms_by_hand():
    raw = torch.tensor([0.0, 2.0]).view(1, 1, 1, 2)
    target = torch.tensor([0.25, 0.5]).view(1, 1, 1, 2)
    mse = UncertaintyRegressionLoss(form='mse')
    expected = ((0.5 - 0.25) ** 2 + (torch.sigmoid(torch.tensor(2.0)).item() - 0.5) ** 2) / 2
    assert mse(raw, target).item() == pytest.approx(expected)
    rmsle = UncertaintyRegressionLoss(form='rmsle')
    v = F.softplus(raw).flatten()
    d = torch.log1p(v) - torch.log1p(target.flatten())
    assert rmsle(raw, target).item() == pytest.approx(d.pow(2).mean().sqrt().item(), rel=1e-5)
    # ignored pixels leave the mean
    valid = torch.tensor([[[True, False]]])
    assert mse(raw, target, valid).item() == pytest.approx(0.0625)


def test_distribution_form_decodes_bins_and_is_minimal_at_the_target():
    loss = UncertaintyRegressionLoss(form='distribution', value_range=(0.0, 1.0),
                                     num_bins=4, sigma=0.75)
    raw = torch.full((1, 4, 1, 1), -30.0)
    raw[0, 2] = 30.0  # all mass on bin 2, centre 0.625
    assert loss.decode(raw).item() == pytest.approx(0.625)
    target = torch.tensor([0.3]).view(1, 1, 1, 1)
    mass, index = loss._bin_targets(target)
    assert index.item() == 1 and mass.sum().item() == pytest.approx(1.0)
    # the cross-entropy is smallest when the predicted bins are the target's
    best = loss(mass.log().view(1, 4, 1, 1), target)
    worse = loss(torch.zeros(1, 4, 1, 1), target)
    assert best < worse
    with pytest.raises(ValueError, match='form must be one of'):
        UncertaintyRegressionLoss(form='l1')
    with pytest.raises(ValueError, match=r'do not fit targets.*64 outputs'):
        UncertaintyRegressionLoss()(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
