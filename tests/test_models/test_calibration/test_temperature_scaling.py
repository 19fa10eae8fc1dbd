"""TemperatureScaling: the fitted temperature against scipy's minimum of the NLL."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize

from mmseg_uncert.models.calibration import TemperatureScaling

from helpers.calibration import _cache, _naive_nll, _overconfident, _valid


def test_temperature_equals_scipys_minimum_of_the_valid_pixels_nll(tmp_path):
    images = _overconfident(0)
    fit = TemperatureScaling().fit(_cache(tmp_path, images))
    z, y = _valid(images)
    ref = optimize.minimize_scalar(lambda t: _naive_nll(z / t, y), bounds=(0.05, 20),
                                   method='bounded', options=dict(xatol=1e-10))
    assert fit['temperature'] > 1.5  # overconfident: softened
    assert fit['temperature'] == pytest.approx(ref.x, rel=1e-6)
    assert fit['nll'] == pytest.approx(ref.fun, rel=1e-9)
    # the ignored pixels' wild logits play no part: other wild values, same T
    moved = [(np.where(lb == 255, 100 * lg[::-1], lg), lb, im) for lg, lb, im in images]
    again = TemperatureScaling().fit(_cache(tmp_path, moved, 'moved'))
    assert again['temperature'] == pytest.approx(fit['temperature'], rel=1e-9)


def test_underconfident_logits_get_a_temperature_below_one(tmp_path):
    images = _overconfident(1, sharpness=0.8, noise=0.1)  # p_max ~ 0.43, 70% right
    fit = TemperatureScaling().fit(_cache(tmp_path, images))
    z, y = _valid(images)
    ref = optimize.minimize_scalar(lambda t: _naive_nll(z / t, y), bounds=(0.01, 5),
                                   method='bounded', options=dict(xatol=1e-10))
    assert fit['temperature'] < 1 and fit['temperature'] == pytest.approx(ref.x, rel=1e-6)


def test_a_diverging_temperature_names_its_value_and_the_nll(tmp_path):
    # the labels are each pixel's least likely class: the best T is negative
    g = np.random.default_rng(6)
    logits = g.normal(0, 3, (4, 10, 10)).astype(np.float32)
    reversed_ = [(logits, logits.argmin(0), np.zeros((3, 10, 10), np.float32))]
    with pytest.raises(ValueError, match=r"temperature scaling diverged on split 'val': "
                                         r"fitted temperature -[\d.]+ \(NLL [\d.]+ there\)"):
        TemperatureScaling().fit(_cache(tmp_path, reversed_))
    # logits that say nothing of the labels: T grows past the limit or flips
    noise = [(g.normal(0, 1, (4, 40, 40)).astype(np.float32) * 1e-3,
              g.integers(0, 4, (40, 40)), np.zeros((3, 40, 40), np.float32))]
    with pytest.raises(ValueError, match=r'fitted temperature .* outside \(0, 100\]'):
        TemperatureScaling().fit(_cache(tmp_path, noise, 'noise'))
