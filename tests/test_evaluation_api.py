"""mmseg_uncert.apis: correlations, saved maps, deployment of training
wrappers; the side-by-side pictures' colours."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from mmseg_uncert.visualization import Panel, colorize_labels, colour_limits
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


def test_colorize_labels_uses_the_palette_and_blacks_out_ignore():
    label = np.array([[0, 1], [255, 7]])
    rgb = colorize_labels(label, [(10, 20, 30), (40, 50, 60)])
    assert rgb[0, 0].tolist() == [10, 20, 30]
    assert rgb[0, 1].tolist() == [40, 50, 60]
    assert rgb[1, 0].tolist() == [0, 0, 0]  # ignored
    assert rgb[1, 1].tolist() == [0, 0, 0]  # outside the palette
    with pytest.raises(ValueError, match="kind 'heatmap'"):
        Panel('x', label, 'heatmap')


def test_maps_of_one_quantity_share_their_colour_scale():
    ramp = np.arange(1000, dtype=np.float64).reshape(10, 100) / 999  # 99.5th pct: 0.995
    panels = [Panel('student epistemic', ramp * 0.1, 'map', scale='epistemic'),
              Panel('ensemble epistemic', ramp * 0.2, 'map', scale='epistemic'),
              Panel('student std', ramp * 0.3, 'map'),
              Panel('zeros', np.zeros((10, 100)), 'map'),
              Panel('mask', (ramp > 0.5).astype(np.uint8), 'mask')]
    tops = colour_limits(panels)
    # both epistemic maps up to the ensemble's 0.2 * 0.995; the std its own 0.3 * 0.995
    assert tops[:3] == pytest.approx([0.199, 0.199, 0.2985])
    assert tops[3:] == [1.0, None]  # an all-zero map still gets a scale; a mask none
    with pytest.raises(ValueError, match="only a map has a colour scale to share, not a 'mask'"):
        Panel('mask', np.zeros((2, 2)), 'mask', scale='epistemic')
