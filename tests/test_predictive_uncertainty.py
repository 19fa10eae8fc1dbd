"""Streaming predictive statistics against a naive stacked computation."""
import itertools

import pytest
import torch

from mmseg_uncert.models import UNCERTAINTY_NAMES, PredictiveStatistics, entropy


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


@pytest.mark.parametrize('m', [1, 3, 5])
def test_streaming_equals_naive_stacking(m):
    probs = _members(m, seed=m)
    stats, naive = _stream(probs), _naive(probs)
    assert torch.allclose(stats.mean().double(), naive['mean'], atol=1e-6)
    maps = stats.decompose()
    assert set(maps) == set(UNCERTAINTY_NAMES)
    for name in UNCERTAINTY_NAMES:
        assert torch.allclose(maps[name].double(), naive[name], atol=1e-5), name


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
