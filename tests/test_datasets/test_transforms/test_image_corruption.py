"""ImageCorruption: the imagecorruptions package's corruptions and their errors.

Seeded per image, in RGB, usable in a test pipeline.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.filters import gaussian

from mmseg_uncert.datasets.transforms import CORRUPTIONS, ImageCorruption

from conftest import ROOT


def _image(seed: int = 0, size=(48, 64)) -> np.ndarray:
    g = np.random.default_rng(seed)
    img = g.integers(0, 256, (*size, 3), dtype=np.uint8)
    img[:, : size[1] // 2, 2] = 200  # a red half (BGR): colour order matters
    return img


def _corrupt(name: str, severity: int, img: np.ndarray, path: str = 'a.png') -> np.ndarray:
    return ImageCorruption(name, severity).transform(dict(img=img.copy(), img_path=path))['img']


def test_the_packages_corruption_in_rgb_with_the_images_seed():
    """Equal to calling imagecorruptions.corrupt on the RGB image with numpy
    seeded as the transform seeds it (crc32 of the path, seed 0)."""
    import zlib
    from imagecorruptions import corrupt
    img = _image()
    for name in ('gaussian_noise', 'contrast', 'saturate', 'frost'):
        np.random.seed(zlib.crc32(b'a.png'))
        expected = corrupt(img[..., ::-1].copy(), severity=3, corruption_name=name)[..., ::-1]
        np.testing.assert_array_equal(_corrupt(name, 3, img), expected, err_msg=name)


def test_gaussian_blur_is_scikit_images_gaussian_at_the_severitys_sigma():
    """imagecorruptions' gaussian_blur: sigma [1, 2, 3, 4, 6][severity - 1]
    over each channel of x / 255, clipped, times 255, truncated to uint8;
    computed here with scikit-image's current API."""
    img = _image(1)
    rgb = img[..., ::-1] / 255.0
    expected = np.uint8(np.clip(gaussian(rgb, sigma=2, channel_axis=-1), 0, 1) * 255)
    np.testing.assert_array_equal(_corrupt('gaussian_blur', 2, img), expected[..., ::-1])


def test_every_corruption_runs_keeps_the_size_and_grows_with_severity():
    img = _image(2, size=(64, 96))
    for name in CORRUPTIONS:
        if name == 'glass_blur':  # about a second per image: checked once below
            continue
        distances = []
        for severity in (1, 5):
            out = _corrupt(name, severity, img)
            assert out.shape == img.shape and out.dtype == np.uint8, name
            distances.append(np.abs(out.astype(int) - img).mean())
        if name == 'saturate':  # severity 1 desaturates, 5 oversaturates
            assert min(distances) > 0
        else:
            assert distances[1] > distances[0] > 0, (name, distances)
    assert _corrupt('glass_blur', 1, img).shape == img.shape


def test_seeded_per_image_and_the_global_state_is_left_alone():
    img = _image(3)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = _corrupt('impulse_noise', 4, img, 'x/one.png')
    b = _corrupt('impulse_noise', 4, img, 'x/one.png')
    c = _corrupt('impulse_noise', 4, img, 'x/two.png')
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)  # another image, other noise
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_bad_names_severities_and_images_are_refused():
    with pytest.raises(ValueError, match=r"unknown corruption 'rain'; available: "
                                         r"gaussian_noise, shot_noise, .*saturate"):
        ImageCorruption('rain', 3)
    with pytest.raises(ValueError, match='severity must be 1, 2, 3, 4 or 5, got 0'):
        ImageCorruption('fog', 0)
    with pytest.raises(ValueError, match='small.png is 20x16; the corruptions need'):
        ImageCorruption('fog', 1).transform(dict(img=np.zeros((16, 20, 3), np.uint8),
                                                 img_path='small.png'))


def test_in_a_test_pipeline_the_image_changes_and_the_labels_do_not(tiny_data_root):
    import os.path as osp
    from mmseg_uncert.workflows.split_evaluation import build_split
    config = osp.join(ROOT, 'configs', 'fcn',
                      'fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py')
    clean = build_split(config, tiny_data_root, 'val', indices=2)
    foggy = build_split(config, tiny_data_root, 'val', indices=2,
                        corruption=dict(corruption='fog', severity=5))
    assert len(foggy) == 2
    a, b = clean[1], foggy[1]
    assert a['data_samples'].img_path == b['data_samples'].img_path
    assert torch.equal(a['data_samples'].gt_sem_seg.data, b['data_samples'].gt_sem_seg.data)
    assert (a['inputs'].float() - b['inputs'].float()).abs().mean() > 10
