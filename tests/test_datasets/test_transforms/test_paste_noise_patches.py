"""PasteNoisePatches: pasted pixels are ignored, the rest untouched."""
import numpy as np
import pytest

from mmseg_uncert.datasets.transforms import PasteNoisePatches


def _results(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return dict(img=rng.integers(0, 256, (128, 256, 3), dtype=np.uint8),
                gt_seg_map=rng.integers(0, 19, (128, 256), dtype=np.uint8),
                img_path='a.png')


def test_patches_are_ignored_and_everything_else_is_kept():
    before = _results()
    np.random.seed(0)
    after = PasteNoisePatches(prob=1.0, max_patches=3, area_range=(0.01, 0.05))(
        {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in before.items()})
    pasted = after['gt_seg_map'] == 255
    # three patches of 1 % to 5 % each: between 1 % (all overlapping) and 15 %
    assert 0.01 * 0.8 <= pasted.mean() <= 0.15 * 1.1
    changed = (after['img'] != before['img']).any(2)
    assert not changed[~pasted].any()  # nothing outside a patch moves
    assert changed[pasted].mean() > 0.9  # a patch replaces the pixels under it
    assert np.array_equal(after['gt_seg_map'][~pasted], before['gt_seg_map'][~pasted])


def test_same_seed_same_patches_and_prob_zero_pastes_nothing():
    outs = []
    for _ in range(2):
        np.random.seed(3)
        outs.append(PasteNoisePatches(prob=0.5)(_results()))
    assert np.array_equal(outs[0]['img'], outs[1]['img'])
    untouched = PasteNoisePatches(prob=0.0)(_results())
    assert np.array_equal(untouched['img'], _results()['img'])


def test_bad_arguments_and_missing_label_are_named():
    with pytest.raises(ValueError, match='area_range'):
        PasteNoisePatches(area_range=(0.1, 0.01))
    with pytest.raises(ValueError, match='prob'):
        PasteNoisePatches(prob=1.5)
    with pytest.raises(KeyError, match='a.png has no gt_seg_map'):
        PasteNoisePatches()(dict(img=np.zeros((8, 8, 3), np.uint8), img_path='a.png'))
