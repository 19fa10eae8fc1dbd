"""The generated benchmark: deterministic, Cityscapes layout, true uncertainty."""
import glob
import hashlib
import os.path as osp

import cv2
import numpy as np
import pytest

from mmseg_uncert.datasets import synthetic_streets as ss
from mmseg_uncert.datasets.annotation_noise import decode_entropy

from conftest import TINY_COUNTS

REQUIRED_CLASSES = {ss.ROAD, ss.SIDEWALK, ss.BUILDING, ss.POLE, ss.TRAFFIC_SIGN,
                    ss.VEGETATION, ss.TERRAIN, ss.SKY, ss.PERSON, ss.CAR}


def _digests(root: str) -> dict:
    files = sorted(glob.glob(osp.join(root, '**', '*.png'), recursive=True))
    return {osp.relpath(f, root): hashlib.sha256(open(f, 'rb').read()).hexdigest()
            for f in files}


def _split_files(root: str, split: str) -> list[dict]:
    n = len(glob.glob(osp.join(root, 'leftImg8bit', split, '*', '*.png')))
    return [ss.file_paths(root, split, i) for i in range(n)]


def _read(path: str) -> np.ndarray:
    return cv2.imread(path, cv2.IMREAD_UNCHANGED)


def test_same_seed_gives_byte_identical_files_whatever_the_workers(tmp_path):
    spec = ss.SceneSpec(48, 96)
    counts = {split: 2 for split in ss.SPLITS}
    ss.generate(str(tmp_path / 'a'), counts, seed=3, spec=spec, workers=1)
    ss.generate(str(tmp_path / 'b'), counts, seed=3, spec=spec, workers=2)
    ss.generate(str(tmp_path / 'c'), counts, seed=4, spec=spec, workers=1)
    a, b, c = (_digests(str(tmp_path / k)) for k in 'abc')
    assert len(a) == 4 * 2 * len(ss.SPLITS) and a == b
    assert a.keys() == c.keys() and a != c


def test_cityscapes_layout_and_train_ids(tiny_data_root):
    seen = set()
    for split, n in TINY_COUNTS.items():
        files = _split_files(tiny_data_root, split)
        assert len(files) == n
        for paths in files:
            img, label = _read(paths['img']), _read(paths['label'])
            assert img.shape == (64, 128, 3) and label.shape == (64, 128)
            assert _read(paths['aleatoric']).dtype == np.uint16
            assert _read(paths['ood']).shape == (64, 128)
            if split == 'train':
                seen |= set(np.unique(label).tolist())
    assert REQUIRED_CLASSES <= seen <= set(range(19))


def test_ood_objects_only_in_the_ood_split(tiny_data_root):
    for split in TINY_COUNTS:
        for paths in _split_files(tiny_data_root, split):
            ood, label = _read(paths['ood']) > 0, _read(paths['label'])
            if split == 'ood':
                assert ood.any()
                assert (label[ood] == 255).all()
            else:
                # every pixel of an in-distribution scene has a class
                assert not ood.any() and not (label == 255).any()


def test_ood_objects_are_labelled_255_with_jittered_outlines():
    spec = ss.SceneSpec()
    img, ann = ss.make_sample(5, 'ood', 0, spec)
    assert ann.ood.any()
    ignored = ann.label == 255
    assert ignored[ann.ood].all()
    # outside the object, 255 only where the boundary jitter reached
    k = 2 * spec.boundary_jitter + 1
    reach = cv2.dilate(ann.ood.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    assert not (ignored & ~reach).any()


def test_aleatoric_map_is_the_entropy_of_the_drawn_label():
    """Zone interiors have the entropy of their coin, plain interiors 0, and
    only jittered boundaries and zones carry uncertainty."""
    spec = ss.SceneSpec(boundary_jitter=2, pavement_road_prob=0.5,
                        greenery_vegetation_prob=0.3)
    rng = ss.image_rng(0, 'train', 0)
    _, layout = ss.render_scene(rng, spec)
    ann = ss.annotate(layout, spec, rng)
    k = 2 * spec.boundary_jitter + 1
    kernel = np.ones((k, k), np.uint8)
    for zone, q in [(ss._PAVEMENT_ZONE, 0.5), (ss._GREENERY_ZONE, 0.3)]:
        core = cv2.erode((layout == zone).astype(np.uint8), kernel,
                         borderType=cv2.BORDER_REPLICATE) > 0
        if core.any():
            coin = -(q * np.log(q) + (1 - q) * np.log(1 - q))
            np.testing.assert_allclose(ann.aleatoric[core], coin, atol=1e-9)
    # a pixel whose whole window has one plain class is certain
    plain = np.zeros(layout.shape, bool)
    for c in np.unique(layout):
        if c < 19:
            plain |= cv2.erode((layout == c).astype(np.uint8), kernel,
                               borderType=cv2.BORDER_REPLICATE) > 0
    assert (ann.aleatoric[plain] == 0).all()
    assert (ann.label[plain] == layout[plain]).all()
    assert (ann.aleatoric[~plain] > 0).mean() > 0.99


def test_written_aleatoric_map_decodes_to_the_exact_entropy(tmp_path):
    spec = ss.SceneSpec(64, 128)
    ss.generate(str(tmp_path), {'val': 1}, seed=2, spec=spec, workers=1)
    _, ann = ss.make_sample(2, 'val', 0, spec)
    stored = decode_entropy(_read(ss.file_paths(str(tmp_path), 'val', 0)['aleatoric']))
    np.testing.assert_allclose(stored, ann.aleatoric, atol=5e-5)


def test_labels_in_ambiguous_zones_follow_their_probability():
    """Over many scenes, shared pavement is road about half the time."""
    spec = ss.SceneSpec(48, 96, boundary_jitter=0, pavement_road_prob=0.5,
                        greenery_vegetation_prob=0.3)
    outcomes = {ss._PAVEMENT_ZONE: [], ss._GREENERY_ZONE: []}
    for i in range(300):
        rng = ss.image_rng(11, 'train', i)
        _, layout = ss.render_scene(rng, spec)
        ann = ss.annotate(layout, spec, rng)
        for zone, first in [(ss._PAVEMENT_ZONE, ss.ROAD),
                            (ss._GREENERY_ZONE, ss.VEGETATION)]:
            inside = layout == zone
            if inside.any():
                outcomes[zone].append(float((ann.label[inside] == first).all()))
    # 150+ draws each: 4 standard errors ~ 0.16
    assert np.mean(outcomes[ss._PAVEMENT_ZONE]) == pytest.approx(0.5, abs=0.16)
    assert np.mean(outcomes[ss._GREENERY_ZONE]) == pytest.approx(0.3, abs=0.16)


@pytest.mark.parametrize('kind', ss.SHIFTS)
def test_each_shift_changes_the_image_as_named(kind):
    img, _ = ss.make_sample(0, 'train', 3, ss.SceneSpec())
    shifted, name = ss.apply_shift(img, np.random.default_rng(0), kind)
    assert name == kind
    x, y = img.astype(np.float64), shifted.astype(np.float64)
    if kind == 'night':
        assert y.mean() < 0.6 * x.mean()
    elif kind == 'fog':
        assert y[:64].std() < 0.7 * x[:64].std()  # far rows lose contrast
    elif kind == 'blur':
        sharp = cv2.Laplacian(img, cv2.CV_64F).var()
        assert cv2.Laplacian(shifted, cv2.CV_64F).var() < 0.2 * sharp
    else:
        ratio = y.reshape(-1, 3).mean(0) / x.reshape(-1, 3).mean(0)
        assert ratio.max() > 1.2 and ratio.min() < 0.8


def test_shift_splits_render_the_same_kind_of_scene_shifted(tmp_path):
    spec = ss.SceneSpec(64, 128)
    img, _ = ss.make_sample(0, 'shift_val', 0, spec)
    assert img.shape == (64, 128, 3)
    with pytest.raises(ValueError, match='unknown shift'):
        ss.apply_shift(img, np.random.default_rng(0), 'snow')


def test_spec_rejects_bad_values():
    with pytest.raises(ValueError, match='at least 32'):
        ss.SceneSpec(16, 64)
    with pytest.raises(ValueError, match='boundary_jitter'):
        ss.SceneSpec(64, 64, boundary_jitter=20)
    with pytest.raises(ValueError, match='pavement_road_prob'):
        ss.SceneSpec(pavement_road_prob=1.5)
    with pytest.raises(ValueError, match='unknown split'):
        ss.generate('unused', {'test': 1})


def test_unknown_objects_are_sized_like_road_anomalies(tmp_path):
    """Drawn areas span 0.2 % to 5 % of the image, log-uniformly, 2 to 5 per
    image; what is visible (connected components of the OOD masks, the
    statistic the README reports) keeps small objects and reaches the large."""
    import math
    from mmseg_uncert.datasets.synthetic_streets import (OOD_AREA, _outline_area,
                                                         generate, ood_statistics)
    # the area an outline fills, measured on a 1 x 0.5 rectangle and a triangle
    rect = np.array([[0, 0], [1, 0], [1, 0.5], [0, 0.5]], np.float64)
    assert _outline_area(rect) == pytest.approx(0.5, rel=0.03)
    assert _outline_area(rect[:3]) == pytest.approx(0.25, rel=0.05)
    generate(str(tmp_path), dict(ood=40), seed=3, workers=1)
    stats = ood_statistics(str(tmp_path))
    assert stats['images'] == 40
    # 2-5 drawn per image; touching or hidden ones merge or vanish, few enough
    assert 2.0 <= stats['objects_per_image'] <= 5.0
    assert 100 * OOD_AREA[0] / 2 < stats['area_percent']['50'] < 100 * OOD_AREA[1]
    assert stats['area_percent']['25'] < 1.0  # small objects are kept
    assert stats['area_percent']['95'] > 3.0  # and large ones reach a few percent
    # log-uniform over [0.2 %, 5 %] draws a mean of (0.05 - 0.002) / ln 25 = 1.5 %
    # per object, 3.5 objects per image: about 5 % of the pixels, less occlusion
    expected = 3.5 * (OOD_AREA[1] - OOD_AREA[0]) / math.log(OOD_AREA[1] / OOD_AREA[0])
    assert 0.5 * expected < stats['pixel_fraction'] < 1.2 * expected
