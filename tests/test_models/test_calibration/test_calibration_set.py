"""CalibrationSet: a split without valid pixels and a used folder are named."""
from __future__ import annotations

import numpy as np
import pytest

from mmseg_uncert.models.calibration import (CalibrationSet, LocalTemperatureScaling,
                                             TemperatureScaling, VectorScaling)

from helpers.calibration import _cache, _overconfident


def test_a_split_without_valid_pixels_is_named(tmp_path):
    images = [(lg, np.full_like(lb, 255), im) for lg, lb, im in _overconfident(5)]
    data = _cache(tmp_path, images, 'shift_val')
    for model in (TemperatureScaling(), VectorScaling(4), LocalTemperatureScaling(4)):
        with pytest.raises(ValueError, match=r"calibration split 'shift_val' has no valid "
                                             r"pixel \(3 images"):
            model.fit(data)
    # the cache never empties a folder that holds something
    with pytest.raises(FileExistsError, match=r'shift_val is not empty; give a new or empty'):
        CalibrationSet(str(tmp_path / 'shift_val'), 'shift_val')
