"""Inference inputs: two inputs of one name are refused."""
import os

import cv2
import numpy as np
import pytest

from mmseg_uncert.apis.inference_inputs import InferenceInputError


def test_two_inputs_of_one_name_are_refused(tmp_path):
    from mmseg_uncert.apis.inference_inputs import named_inputs
    for sub in ('a', 'b'):
        os.makedirs(tmp_path / sub)
        cv2.imwrite(str(tmp_path / sub / 'x.png'), np.zeros((4, 4, 3), np.uint8))
    paths = [str(tmp_path / 'a' / 'x.png'), str(tmp_path / 'b' / 'x.png')]
    with pytest.raises(InferenceInputError, match=r"both named 'x'.*a/x\.png.*b/x\.png"):
        list(named_inputs(paths))
    array = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(InferenceInputError, match="both named 'x'"):
        list(named_inputs([paths[0], array], names=[None, 'x']))
    # the folder that holds both keeps them apart by their relative paths
    assert sorted(n for n, _ in named_inputs(str(tmp_path))) == ['a/x', 'b/x']
