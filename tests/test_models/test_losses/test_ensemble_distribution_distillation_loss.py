"""EnD²'s loss: the Dirichlet NLL of the members, and central smoothing."""
import numpy as np
import pytest
import torch
from scipy.stats import dirichlet

from mmseg_uncert.models.losses import (EnsembleDistributionDistillationLoss,
                                        dirichlet_nll)


def test_dirichlet_nll_is_the_mean_negative_log_density_of_the_members():
    rng = np.random.default_rng(1)
    z = torch.tensor(rng.normal(0, 1, (1, 4, 2, 3)))
    members = rng.dirichlet([2.0, 1.0, 3.0, 0.5], size=(3, 2, 3))  # (M, H, W, C)
    mean_log_prob = torch.tensor(np.log(members).mean(0).transpose(2, 0, 1))[None]
    alpha = z.exp().numpy()[0]
    expected = np.array([[-np.mean([dirichlet.logpdf(members[m, i, j], alpha[:, i, j])
                                    for m in range(3)]) for j in range(3)]
                         for i in range(2)])
    assert dirichlet_nll(z, mean_log_prob).item() == pytest.approx(expected.mean(), rel=1e-9)
    valid = torch.tensor([[[True, False, False], [False, False, True]]])
    assert dirichlet_nll(z, mean_log_prob, valid).item() == pytest.approx(
        (expected[0, 0] + expected[1, 2]) / 2, rel=1e-6)  # mmseg adds eps to avg_factor
    with pytest.raises(ValueError, match='differ'):
        dirichlet_nll(z, mean_log_prob[:, :3])


def test_central_smoothing_keeps_one_hot_members_finite():
    loss = EnsembleDistributionDistillationLoss(smoothing=0.01)
    one_hot = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 4, 1, 1)
    log_prob = loss.log_prob(one_hot)
    expected = np.log([0.99 + 0.0025, 0.0025, 0.0025, 0.0025])
    assert np.allclose(log_prob.flatten().numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match='smoothing must lie in'):
        EnsembleDistributionDistillationLoss(smoothing=1.0)
