"""BootstrapSampler draws with replacement, per seed."""
import itertools

import pytest

from mmseg_uncert.datasets import BootstrapSampler


def test_bootstrap_sampler_draws_with_replacement_per_seed():
    data = list(range(20))
    a, b = BootstrapSampler(data, seed=0), BootstrapSampler(data, seed=1)
    assert a.sample == BootstrapSampler(data, seed=0).sample
    assert a.sample != b.sample
    assert len(a.sample) == 20 and len(set(a.sample)) < 20  # repeats
    # every pass yields exactly the sample, reshuffled
    stream = list(itertools.islice(iter(a), 60))
    for k in range(3):
        assert sorted(stream[20 * k:20 * (k + 1)]) == sorted(a.sample)
    assert stream[:20] != stream[20:40]
    # a bootstrap sample holds 1 − (1 − 1/N)^N ≈ 63.2 % of the distinct items
    large = BootstrapSampler(range(20000), seed=3)
    assert len(set(large.sample)) / 20000 == pytest.approx(1 - (1 - 1 / 20000) ** 20000,
                                                          abs=0.01)
    assert len(BootstrapSampler(data, seed=0, ratio=0.5).sample) == 10
    with pytest.raises(ValueError, match='ratio must be > 0'):
        BootstrapSampler(data, seed=0, ratio=0)
    with pytest.raises(ValueError, match='dataset is empty'):
        BootstrapSampler([], seed=0)
