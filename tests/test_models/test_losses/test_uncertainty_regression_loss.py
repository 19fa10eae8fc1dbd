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


def test_square_root_bins_by_hand():
    # 4 bins over [0, 2] equal in sqrt(u): u edges 0, 1/16, 1/4, 9/16, 1; centres
    # u = (b + 1/2)^2 / 16 = 1/64, 9/64, 25/64, 49/64, times 2
    loss = UncertaintyRegressionLoss(form='distribution', value_range=(0.0, 2.0),
                                     num_bins=4, sigma=0.75, value_scale='sqrt')
    for b, u in enumerate((1 / 64, 9 / 64, 25 / 64, 49 / 64)):
        raw = torch.full((1, 4, 1, 1), -40.0)
        raw[0, b] = 40.0
        assert loss.decode(raw).item() == pytest.approx(2 * u, rel=1e-6)
    # a target of 0.2 is u = 0.1, sqrt(u) = 0.316: bin 1 (u in [1/16, 1/4])
    mass, index = loss._bin_targets(torch.tensor([0.2]).view(1, 1, 1, 1))
    assert index.item() == 1
    # the Gaussian of width 0.75 bins is centred at sqrt(u) on the sqrt scale
    edges = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    cdf = 0.5 * (1 + torch.erf((edges - 0.1 ** 0.5) / (0.75 * 0.25 * 2 ** 0.5)))
    expected = (cdf[1:] - cdf[:-1]) / (cdf[-1] - cdf[0])
    assert torch.allclose(mass.flatten(), expected, atol=1e-6)
    # equal probabilities decode to the mean of the centres, not of the values' bins
    assert loss.decode(torch.zeros(1, 4, 1, 1)).item() == pytest.approx(
        2 * (1 + 9 + 25 + 49) / 64 / 4, rel=1e-6)
    with pytest.raises(ValueError, match="value_scale must be one of"):
        UncertaintyRegressionLoss(value_scale='log')
    with pytest.raises(ValueError, match="form='rmsle' has none"):
        UncertaintyRegressionLoss(form='rmsle', value_scale='sqrt')


@pytest.mark.parametrize('value_scale', ['linear', 'sqrt'])
def test_median_estimate_by_hand(value_scale):
    # bin probabilities 0.1, 0.2, 0.4, 0.3: the cumulative mass crosses 1/2 in
    # bin 2, halfway through it (0.3 below, 0.4 inside): s = (2 + 0.5) / 4
    loss = UncertaintyRegressionLoss(form='distribution', value_range=(1.0, 3.0),
                                     num_bins=4, value_scale=value_scale,
                                     estimate='median')
    prob = torch.tensor([0.1, 0.2, 0.4, 0.3], dtype=torch.float64)
    raw = prob.log().view(1, 4, 1, 1)
    s = 0.625 if value_scale == 'linear' else 0.625 ** 2
    assert loss.decode(raw).item() == pytest.approx(1.0 + 2.0 * s, rel=1e-9)
    # all the mass in the first bin: the middle of it; in the last: its middle too
    for b, expected in ((0, 0.125), (3, 0.875)):
        one = torch.full((1, 4, 1, 1), -60.0, dtype=torch.float64)
        one[0, b] = 60.0
        if value_scale == 'sqrt':
            expected = expected ** 2
        assert loss.decode(one).item() == pytest.approx(1.0 + 2.0 * expected, rel=1e-9)
    # the median ignores a far tail that moves the mean
    tail = torch.tensor([0.9, 0.0, 0.0, 0.1], dtype=torch.float64).clamp_min(1e-30)
    mean = UncertaintyRegressionLoss(form='distribution', value_range=(1.0, 3.0),
                                     num_bins=4, value_scale=value_scale)
    raw = tail.log().view(1, 4, 1, 1)
    assert loss.decode(raw).item() < mean.decode(raw).item()
    assert loss.decode(raw).item() == pytest.approx(
        1.0 + 2.0 * ((0.5 / 0.9 / 4) ** (2 if value_scale == 'sqrt' else 1)), rel=1e-9)
    with pytest.raises(ValueError, match="estimate must be one of"):
        UncertaintyRegressionLoss(estimate='mode')
    with pytest.raises(ValueError, match="estimate='median' applies to the bins"):
        UncertaintyRegressionLoss(form='mse', estimate='median')
