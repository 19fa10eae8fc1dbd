"""The side-by-side panels: colours, shared scales, boxes and written pictures."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from mmseg_uncert.visualization import (Panel, colorize_labels, colour_limits,
                                        draw_panels, render_panels)

from helpers.pictures import H, W, _expect_colour, _halves, _image


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


def test_panel_boxes_hold_the_image_exactly():
    """Boxes are where the panel's data lands: a one-colour image fills
    its box and nothing outside it."""
    image = np.full((H, W, 3), (30, 140, 90), dtype=np.uint8)
    picture = render_panels([Panel('image', image, 'image')], columns=1)
    x0, y0, x1, y1 = picture.boxes[0]
    assert (x1 - x0) / (y1 - y0) == pytest.approx(W / H, rel=0.02)
    inside = picture.image[y0:y1, x0:x1].reshape(-1, 3)
    _expect_colour(inside, (30, 140, 90))
    is_image = (np.abs(picture.image.astype(int) - (30, 140, 90)).max(2) <= 1)
    assert is_image.sum() == (x1 - x0) * (y1 - y0)


def test_draw_panels_writes_what_render_panels_draws(tmp_path):
    panels = [Panel('image', _image(), 'image'),
              Panel('map', _halves(0, 1)[0].numpy(), 'map')]
    path = str(tmp_path / 'p.png')
    draw_panels(panels, path, title='t')
    assert np.array_equal(cv2.imread(path)[..., ::-1],
                          render_panels(panels, title='t').image)
