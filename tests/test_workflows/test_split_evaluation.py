"""Split evaluation: map correlations, saved maps and timed test steps."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats  # installed with scikit-learn, a test dependency

from mmseg_uncert.workflows.split_evaluation import (SplitEvaluation, load_maps,
                                                     map_correlations, save_maps)


@pytest.mark.parametrize('seed', [0, 1])
def test_map_correlations_equal_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 20, 5000).astype(np.float32)  # many ties
    b = (a + rng.normal(0, 5, 5000)).round().astype(np.float32)
    ours = map_correlations(torch.from_numpy(a), torch.from_numpy(b))
    assert ours['pearson'] == pytest.approx(stats.pearsonr(a.astype(np.float64), b.astype(np.float64))[0], abs=1e-9)
    assert ours['spearman'] == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-9)


def test_map_correlations_need_the_same_pixels():
    with pytest.raises(ValueError, match='same images'):
        map_correlations(torch.rand(10), torch.rand(11))


def test_saved_maps_load_for_the_same_images_only(tmp_path):
    maps = torch.tensor([0.0, 0.125, 0.5, 0.25])
    path = str(tmp_path / 'maps.npz')
    save_maps(path, SplitEvaluation(metrics={}, maps=dict(std=maps),
                                    img_paths=['a.png', 'b.png']))
    assert torch.equal(load_maps(path, 'std', ['a.png', 'b.png']), maps)
    with pytest.raises(ValueError, match='other images'):
        load_maps(path, 'std', ['b.png', 'a.png'])
    with pytest.raises(KeyError, match="no 'epistemic' map"):
        load_maps(path, 'epistemic', ['a.png', 'b.png'])
    with pytest.raises(FileNotFoundError, match='--save-maps'):
        load_maps(str(tmp_path / 'none.npz'), 'std', [])


def test_time_test_steps_takes_the_median_round_with_models_taking_turns():
    from mmseg_uncert.workflows.split_evaluation import time_test_steps
    calls = []

    class Clock:
        """Advances by the cost of the model that just ran: 'slow' costs
        1 s per image except in round 2 (a disturbed round: 10 s)."""
        now = 0.0

        def __call__(self):
            return self.now

    clock = Clock()

    class Fake:
        def __init__(self, name, costs):
            self.name, self.costs, self.steps = name, costs, 0

        def test_step(self, batch):
            calls.append(self.name)
            clock.now += self.costs[self.steps // 4]
            self.steps += 1

    models = dict(slow=Fake('slow', [1.0, 10.0, 1.0]), fast=Fake('fast', [0.25, 0.25, 0.5]))
    times = time_test_steps(models, dataset=list(range(6)), images=4, rounds=3, clock=clock)
    assert times == {'slow': 1.0, 'fast': 0.25}  # medians of (1, 10, 1) and (.25, .25, .5)
    assert calls == (['slow'] * 4 + ['fast'] * 4) * 3  # turns within each round
    with pytest.raises(ValueError, match='rounds'):
        time_test_steps(models, dataset=[0], rounds=0)
