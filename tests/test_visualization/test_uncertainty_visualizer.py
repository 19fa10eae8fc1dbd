"""UncertaintyVisualizer: colours at known pixels, and mmseg's visualizer contract."""
import glob

import cv2
import matplotlib
import numpy as np
import pytest
import torch
from mmengine.structures import PixelData

from mmseg.registry import VISUALIZERS
from mmseg.structures import SegDataSample
from mmseg.visualization import SegLocalVisualizer

from mmseg_uncert.visualization import Panel, UncertaintyVisualizer, draw_panels

from helpers.pictures import H, W, _expect_colour, _halves, _image

PALETTE = [[200, 10, 10], [10, 200, 10], [10, 10, 200]]
CLASSES = ['road', 'car', 'sky']
MAGMA = matplotlib.colormaps['magma']
_counter = iter(range(10 ** 6))


def _visualizer(**kwargs) -> UncertaintyVisualizer:
    # mmengine keeps visualizers by name: a new name gives a new instance
    return UncertaintyVisualizer(name=f'uv_test_{next(_counter)}',
                                 classes=CLASSES, palette=PALETTE, **kwargs)


def _sample(maps: dict | None = None, gt: bool = False) -> SegDataSample:
    sample = SegDataSample()
    pred = torch.zeros(1, H, W, dtype=torch.long)
    pred[..., W // 2:] = 1
    sample.pred_sem_seg = PixelData(data=pred)
    if gt:
        sample.gt_sem_seg = PixelData(data=torch.full((1, H, W), 2, dtype=torch.long))
    if maps is not None:
        sample.pred_uncertainty = PixelData(**maps)
    return sample


def _halves_of(picture, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of panel ``index``'s left and right halves, a margin of a
    few pixels left out at the borders and at the middle (resampling blurs
    the edge)."""
    x0, y0, x1, y1 = picture.boxes[index]
    xm, m = (x0 + x1) // 2, 4
    rows = slice(y0 + m, y1 - m)
    return (picture.image[rows, x0 + m:xm - m].reshape(-1, 3),
            picture.image[rows, xm + m:x1 - m].reshape(-1, 3))


def test_each_map_has_its_own_scale_from_0_to_its_top():
    vis = _visualizer()
    # epistemic 0 | 0.7 and std 0 | 0.2: each right half at the top of its scale
    sample = _sample(dict(epistemic=_halves(0, 0.7), std=_halves(0, 0.2)), gt=True)
    assert [p.title for p in vis.panels(_image(), sample)] == [
        'image', 'prediction', 'ground truth', 'epistemic', 'std']
    picture = vis.render('x', _image(), sample, with_labels=False)
    bottom, top = MAGMA([0.0, 1.0], bytes=True)
    for index in (3, 4):
        left, right = _halves_of(picture, index)
        _expect_colour(left, bottom)
        _expect_colour(right, top)
    # prediction: class 0 | class 1 in the palette's colours; gt all class 2
    left, right = _halves_of(picture, 1)
    _expect_colour(left, PALETTE[0])
    _expect_colour(right, PALETTE[1])
    _expect_colour(np.concatenate(_halves_of(picture, 2)), PALETTE[2])


def test_maps_of_one_scale_name_share_it():
    vis = _visualizer(scales=dict(total='nats', epistemic='nats'))
    sample = _sample(dict(total=_halves(0, 1.0), epistemic=_halves(0, 0.3),
                          std=_halves(0, 0.3)))
    picture = vis.render('x', _image(), sample, with_labels=False)
    names = [p.title for p in vis.panels(_image(), sample)]
    assert names == ['image', 'prediction', 'total', 'epistemic', 'std']
    # epistemic on the shared 0..1 scale (top 1.0, the total's): 0.3 of it
    _, right = _halves_of(picture, names.index('epistemic'))
    _expect_colour(right, MAGMA(0.3, bytes=True))
    _, right = _halves_of(picture, names.index('std'))  # its own scale
    _expect_colour(right, MAGMA(1.0, bytes=True))


def test_a_sample_without_maps_draws_image_and_prediction():
    vis = _visualizer()
    sample = _sample()
    assert [p.title for p in vis.panels(_image(), sample)] == ['image', 'prediction']
    picture = vis.render('x', _image(), sample, with_labels=False)
    assert len(picture.boxes) == 2
    left, right = _halves_of(picture, 1)
    _expect_colour(left, PALETTE[0])
    _expect_colour(right, PALETTE[1])
    # draw_pred=False / no sample: the image alone
    assert [p.title for p in vis.panels(_image(), sample, draw_pred=False)] == ['image']
    assert [p.title for p in vis.panels(_image(), None)] == ['image']
    # with_labels writes the class names on the label panel, nowhere else
    named = vis.render('x', _image(), sample, with_labels=True)
    changed = np.abs(named.image.astype(int) - picture.image).max(2) > 0
    x0, y0, x1, y1 = picture.boxes[1]
    assert changed[y0:y1, x0:x1].any()
    assert changed.sum() == changed[y0:y1, x0:x1].sum()


def test_add_datasample_writes_out_file_and_backends(tmp_path):
    cfg = dict(type='UncertaintyVisualizer',
               vis_backends=[dict(type='LocalVisBackend')],
               name=f'uv_cfg_{next(_counter)}', save_dir=str(tmp_path / 'save'),
               classes=CLASSES, palette=PALETTE)
    vis = VISUALIZERS.build(cfg)
    assert isinstance(vis, UncertaintyVisualizer)
    assert isinstance(vis, SegLocalVisualizer)
    # mmseg's own __init__ swaps classes and palette; ours keeps them
    assert vis.dataset_meta == dict(classes=CLASSES, palette=PALETTE)
    sample = _sample(dict(epistemic=_halves(0, 0.5)), gt=True)
    vis.add_datasample('val_a.png', _image(), sample, step=3)
    drawn = vis.get_image()
    expected = vis.render('val_a.png', _image(), sample).image
    assert np.array_equal(drawn, expected)
    written = cv2.imread(str(tmp_path / 'save' / 'vis_data' / 'vis_image' /
                             'val_a.png_3.png'))[..., ::-1]
    assert np.array_equal(written, drawn)
    out_file = str(tmp_path / 'out' / 'a.png')
    vis.add_datasample('a', _image(), sample, draw_gt=False, out_file=out_file)
    assert np.array_equal(cv2.imread(out_file)[..., ::-1], vis.get_image())
    assert not glob.glob(str(tmp_path / 'save' / 'vis_data' / 'vis_image' / 'a_*'))


def test_bad_arguments_are_named():
    vis = _visualizer(maps=['epistemic', 'mutual_info'])
    with pytest.raises(KeyError, match=r"\['mutual_info'\].*\['epistemic'\]"):
        vis.panels(_image(), _sample(dict(epistemic=_halves(0, 1))))
    with pytest.raises(ValueError, match='columns=0'):
        _visualizer(columns=0)
    bad = _halves(0, 1)
    bad[0, 0, 0] = float('nan')
    with pytest.raises(ValueError, match="panel 'epistemic'.*NaN"):
        _visualizer().render('x', _image(), _sample(dict(epistemic=bad)))
    with pytest.raises(ValueError, match=r'out\.png: panel .*needs the palette'):
        draw_panels([Panel('labels', np.zeros((2, 2), int), 'label')], 'out.png')
