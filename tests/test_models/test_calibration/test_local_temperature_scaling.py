"""LocalTemperatureScaling: from the global temperature to a per-pixel one."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmseg_uncert.models.calibration import LocalTemperatureScaling, TemperatureScaling
from mmseg_uncert.workflows.post_hoc_calibration import calibration_metrics

from helpers.calibration import _cache


def test_local_temperature_starts_at_the_global_one_and_learns_where_it_differs(tmp_path):
    """The image's first channel says which half of each image is
    overconfident (sharpness 6: p_max ~ 0.99 where 70% are right) and which
    underconfident (0.5: p_max ~ 0.35): one temperature cannot fit both, a
    per-pixel one can."""
    g = np.random.default_rng(3)
    images = []
    for _ in range(4):
        size = (16, 24)
        label = g.integers(0, 4, size)
        guess = np.where(g.random(size) < 0.7, label, g.integers(0, 4, size))
        sharp = np.where(np.arange(size[1]) < 12, 6.0, 0.5)[None, :]
        logits = g.normal(0, 0.1, (4, *size)) + sharp * np.eye(4)[guess].transpose(2, 0, 1)
        image = np.zeros((3, *size), np.float32)
        image[0] = np.where(np.arange(size[1]) < 12, 1.0, -1.0)[None, :]
        images.append((logits.astype(np.float32), label, image))
    data = _cache(tmp_path, images)
    lts = LocalTemperatureScaling(num_classes=4, temperature=1.7)
    z = torch.from_numpy(images[0][0])[None]
    im = torch.from_numpy(images[0][2])[None]
    torch.testing.assert_close(lts(z, im), z / 1.7)  # T everywhere before fitting
    torch.manual_seed(0)
    fit = lts.fit(data, epochs=60, lr=1e-2)
    global_t = TemperatureScaling().fit(data)
    assert fit['global_temperature'] == pytest.approx(global_t['temperature'])
    assert fit['nll'] < global_t['nll'] - 0.05
    t = lts.temperature_map(z, im)[0, 0]
    assert t[:, :12].mean() > 1.5 > 1.0 > t[:, 12:].mean()
    # same argmax: a positive temperature never reorders a pixel's classes
    assert torch.equal(lts(z, im).argmax(1), z.argmax(1))
    nll_check = calibration_metrics(data, lts)['NLL']
    assert nll_check == pytest.approx(fit['nll'], rel=1e-5)
