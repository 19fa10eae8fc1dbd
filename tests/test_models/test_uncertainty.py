"""Predictive uncertainty of M probability maps, and of a Dirichlet.

Streaming statistics against a naive stacked computation; the Dirichlet
maps against scipy and known values.
"""
import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import digamma

from mmseg_uncert.models import UNCERTAINTY_NAMES, PredictiveStatistics, entropy
from mmseg_uncert.models.uncertainty import dirichlet_uncertainty


def _members(m: int, seed: int = 0, shape=(2, 4, 5, 6)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.softmax(torch.randn(shape, generator=g) * 2, 1) for _ in range(m)]


def _stream(probs) -> PredictiveStatistics:
    stats = PredictiveStatistics()
    for p in probs:
        stats.add(p)
    return stats


def _naive(probs) -> dict:
    """Everything from the stacked [M, B, C, H, W] tensor, in float64."""
    stack = torch.stack(probs).double()
    mean = stack.mean(0)
    pred = mean.argmax(1, keepdim=True)
    total = -(mean * mean.log()).sum(1)
    aleatoric = -(stack * stack.log()).sum(2).mean(0)
    at = stack.gather(2, pred[None].expand(len(probs), *pred.shape))[:, :, 0]
    std = at.std(0, unbiased=False)
    votes = torch.nn.functional.one_hot(stack.argmax(2), stack.shape[2]).sum(0)
    variation_ratio = 1 - votes.amax(-1).double() / len(probs)
    return dict(mean=mean, total=total, aleatoric=aleatoric,
                epistemic=total - aleatoric, std=std,
                variation_ratio=variation_ratio)


@pytest.mark.parametrize('m', [1, 3, 4, 5, 9])  # C = 4: the votes change form at 4
def test_streaming_equals_naive_stacking(m):
    probs = _members(m, seed=m)
    stats, naive = _stream(probs), _naive(probs)
    assert torch.allclose(stats.mean().double(), naive['mean'], atol=1e-6)
    maps = stats.decompose()
    assert set(maps) == set(UNCERTAINTY_NAMES)
    for name in UNCERTAINTY_NAMES:
        assert torch.allclose(maps[name].double(), naive[name], atol=1e-5), name


def test_votes_are_kept_as_predictions_while_fewer_members_than_classes():
    """Up to C − 1 members, one byte a pixel per member; from the C-th on,
    counts per class; past 255 members the counts widen. The variation
    ratio is the naive one throughout."""
    probs = _members(300, seed=2, shape=(1, 4, 2, 3))
    stats = PredictiveStatistics()
    for m, p in enumerate(probs, start=1):
        stats.add(p)
        if m < 4:
            assert stats.votes is None and len(stats.predictions) == m
            assert stats.predictions[-1].dtype == torch.uint8
        else:
            assert stats.votes is not None and not stats.predictions
        if m in (2, 3, 4, 255, 256, 300):
            naive = _naive(probs[:m])['variation_ratio']
            assert torch.allclose(stats.decompose()['variation_ratio'].double(),
                                  naive, atol=1e-6), m
    assert stats.votes.dtype == torch.int32 and int(stats.votes.sum()) == 300 * 6


def test_votes_of_one_channel_and_of_more_than_256_classes():
    """One channel: counts from the first member on (variation ratio 0).
    300 classes: predictions in two bytes, kept while they take less
    memory than counts (2 bytes x 149 members < 300), then counts."""
    one = torch.ones(1, 1, 2, 2)
    assert (_stream([one, one]).decompose()['variation_ratio'] == 0).all()
    probs = _members(152, seed=4, shape=(1, 300, 1, 2))
    stats = PredictiveStatistics()
    for m, p in enumerate(probs, start=1):
        stats.add(p)
        assert (stats.votes is None) == (m <= 149), m
    assert stats.votes is not None
    stored = _stream(probs[:149])
    assert stored.predictions[0].dtype == torch.int16
    for count, s in ((149, stored), (152, stats)):
        assert torch.allclose(s.decompose()['variation_ratio'].double(),
                              _naive(probs[:count])['variation_ratio'], atol=1e-6)


@pytest.mark.parametrize('m', [3, 5])  # C = 4: votes as predictions, then counts
def test_bands_give_the_whole_maps_statistics_bit_for_bit(m):
    """Each member handed over in uneven row bands (as a slide-mode pass
    does, and a different split per member) gives the statistics of the
    whole maps exactly."""
    probs = _members(m, seed=11, shape=(2, 4, 13, 6))
    whole = _stream(probs)
    banded = PredictiveStatistics()
    splits = [(0, 13), (0, 5, 13), (0, 1, 2, 12, 13), (0, 7, 13), (0, 4, 8, 13)]
    for p, cuts in zip(probs, splits):
        banded.add_bands(((a, p[:, :, a:b]) for a, b in zip(cuts, cuts[1:])), 13)
    assert banded.count == whole.count == m
    assert torch.equal(banded.mean(), whole.mean())
    assert torch.equal(banded.class_std(), whole.class_std())
    for name, value in whole.decompose().items():
        assert torch.equal(banded.decompose()[name], value), name


def test_bands_out_of_order_or_short_are_named():
    p = _members(1, shape=(1, 3, 6, 2))[0]
    with pytest.raises(ValueError, match=r'member 0: a band starts at row 3.*end at row 2'):
        PredictiveStatistics().add_bands([(0, p[:, :, :2]), (3, p[:, :, 3:])], 6)
    with pytest.raises(ValueError, match=r'member 0: the bands cover rows 0\.\.4 .* 6 rows'):
        PredictiveStatistics().add_bands([(0, p[:, :, :4])], 6)
    with pytest.raises(ValueError, match=r'a band of rows 4\.\.10'):
        PredictiveStatistics().add_bands([(0, p[:, :, :4]), (4, p)], 6)


def test_decomposition_identities():
    maps = _stream(_members(4, seed=9)).decompose()
    assert torch.allclose(maps['total'], maps['aleatoric'] + maps['epistemic'],
                          atol=1e-6)
    assert (maps['epistemic'] >= 0).all()
    assert (maps['total'] <= torch.log(torch.tensor(4.0)) + 1e-6).all()  # C = 4


def test_agreeing_members_have_no_epistemic_uncertainty():
    p = _members(1, seed=3)[0]
    maps = _stream([p, p.clone(), p.clone()]).decompose()
    assert torch.allclose(maps['epistemic'], torch.zeros_like(maps['epistemic']),
                          atol=1e-6)
    assert torch.allclose(maps['std'], torch.zeros_like(maps['std']), atol=1e-7)
    assert (maps['variation_ratio'] == 0).all()
    assert torch.allclose(maps['total'], entropy(p), atol=1e-6)


def test_member_order_does_not_matter():
    probs = _members(4, seed=5)
    reference = _stream(probs).decompose()
    for order in itertools.permutations(range(4)):
        maps = _stream([probs[i] for i in order]).decompose()
        for name in UNCERTAINTY_NAMES:
            assert torch.allclose(maps[name], reference[name], atol=1e-6), name


def test_two_disagreeing_one_hot_members_by_hand():
    # member 1 says class 0, member 2 says class 1, with certainty
    a = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    b = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    maps = _stream([a, b]).decompose()
    log2 = torch.log(torch.tensor(2.0))
    assert maps['total'].item() == pytest.approx(log2.item())
    assert maps['aleatoric'].item() == pytest.approx(0.0)
    assert maps['epistemic'].item() == pytest.approx(log2.item())
    assert maps['std'].item() == pytest.approx(0.5)
    assert maps['variation_ratio'].item() == pytest.approx(0.5)


def test_bad_shapes_are_named():
    stats = PredictiveStatistics()
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        stats.add(torch.rand(3, 4, 4))
    stats.add(torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r'member 1.*\(1, 3, 2, 2\).*\(1, 3, 4, 4\)'):
        stats.add(torch.rand(1, 3, 2, 2))
    with pytest.raises(RuntimeError, match='no member'):
        PredictiveStatistics().decompose()


def test_dirichlet_maps_match_scipy_and_known_values():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64) * 2
    maps = dirichlet_uncertainty(z)
    alpha = z.exp().numpy()
    for b, i, j in itertools.product(range(2), range(3), range(5)):
        a = alpha[b, :, i, j]
        p = a / a.sum()
        total = -(p * np.log(p)).sum()
        # E_Dir H[π] = −Σ_c (α_c/α₀)(ψ(α_c + 1) − ψ(α₀ + 1))
        aleatoric = -(p * (digamma(a + 1) - digamma(a.sum() + 1))).sum()
        assert maps['total'][b, i, j].item() == pytest.approx(total, rel=1e-10)
        assert maps['aleatoric'][b, i, j].item() == pytest.approx(aleatoric, rel=1e-10)
        assert maps['epistemic'][b, i, j].item() == pytest.approx(total - aleatoric,
                                                                  abs=1e-10)
    # Monte Carlo check of the expected entropy at one pixel
    a = alpha[0, :, 0, 0]
    samples = np.random.default_rng(0).dirichlet(a, 200_000)
    mc = -(samples * np.log(np.clip(samples, 1e-300, None))).sum(1).mean()
    assert maps['aleatoric'][0, 0, 0].item() == pytest.approx(mc, abs=5e-3)
    # Beta(1, 1), the uniform distribution over [0, 1]: E H = ψ(3) − ψ(2) = 1/2
    flat = dirichlet_uncertainty(torch.zeros(1, 2, 1, 1, dtype=torch.float64))
    assert flat['aleatoric'].item() == pytest.approx(0.5, rel=1e-12)
    assert flat['total'].item() == pytest.approx(math.log(2), rel=1e-12)
    # a very sharp Dirichlet is a point mass: no epistemic uncertainty, and
    # logits too large for exp in float32 stay finite
    sharp = dirichlet_uncertainty(torch.tensor([[[[120.0]], [[119.0]], [[100.0]]]]))
    assert all(torch.isfinite(v).all() for v in sharp.values())
    assert sharp['epistemic'].item() == pytest.approx(0.0, abs=1e-4)
