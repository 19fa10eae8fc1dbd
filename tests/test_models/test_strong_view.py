"""ProDA's strong view: its warp, what it carries over, its empty pixels."""
import math

import pytest
import torch

from mmseg_uncert.models import strong_view as sv
from mmseg_uncert.models.strong_view import (GREY, StrongView, geometric_warp,
                                             strong_view)

MEAN = torch.tensor([120.0, 110.0, 100.0]).view(3, 1, 1)
STD = torch.tensor([60.0, 50.0, 40.0]).view(3, 1, 1)


def _view(warp, cutout=None, b=1):
    warp = torch.tensor(warp, dtype=torch.float32).expand(b, 2, 3)
    cutout = torch.zeros(b, 4) if cutout is None else torch.tensor(cutout).expand(b, 4)
    return StrongView(torch.zeros(b, 3, 4, 8), warp, cutout)


def test_identity_and_flip_carry_maps_exactly():
    maps = torch.randn(2, 5, 4, 8, generator=torch.Generator().manual_seed(0))
    same = _view([[1, 0, 0], [0, 1, 0]], b=2)
    assert torch.allclose(same.follow(maps), maps, atol=1e-6)
    assert same.inside((4, 8)).all()
    flip = _view([[-1, 0, 0], [0, 1, 0]], b=2)
    assert torch.allclose(flip.follow(maps), maps.flip(-1), atol=1e-6)
    labels = torch.randint(0, 5, (2, 1, 4, 8)).float()
    assert torch.equal(flip.follow(labels, 'nearest'), labels.flip(-1))


def test_pixels_without_source_and_under_the_cutout_by_hand():
    # sampling x + 0.5: the strong view's right quarter has no source
    # (pixel centres x = -7/8 .. 7/8 of 8 columns: the last two are past 1)
    shifted = _view([[1, 0, 0.5], [0, 1, 0]], cutout=[-1.0, -1.0, -0.5, 0.0])
    expected_sourced = torch.zeros(1, 4, 8, dtype=torch.bool)
    expected_sourced[..., :6] = True
    assert torch.equal(shifted.sourced((4, 8)), expected_sourced)
    # the box x in [-1, -0.5), y in [-1, 0): columns 0 and 1 of rows 0 and 1
    expected_cut = torch.zeros(1, 4, 8, dtype=torch.bool)
    expected_cut[0, :2, :2] = True
    assert torch.equal(shifted.cut((4, 8)), expected_cut)
    assert torch.equal(shifted.inside((4, 8)), expected_sourced & ~expected_cut)
    # the same box at twice the resolution: the same area
    assert shifted.cut((8, 16)).sum() == 4 * expected_cut.sum()
    # what follow() leaves there is 0
    assert (shifted.follow(torch.ones(1, 2, 4, 8))[..., 6:] == 0).all()


def test_rotation_stays_a_rotation_in_pixels_on_a_wide_image(monkeypatch):
    """Composed in pixel units, a rotation of a 64 x 256 image is
    orthogonal in pixels; composed in normalised units it would not be."""
    monkeypatch.setattr(sv, 'GEOMETRIC_PROB', 1.0)
    monkeypatch.setattr(sv, 'MAX_SHEAR', 0.0)
    monkeypatch.setattr(sv, 'MAX_TRANSLATION', 0.0)
    height, width = 64, 256
    warp = geometric_warp(16, height, width, torch.Generator().manual_seed(1)).double()
    to_pixels = torch.diag(torch.tensor([width / 2, height / 2], dtype=torch.float64))
    linear = to_pixels @ warp[:, :, :2] @ torch.linalg.inv(to_pixels)
    identity = torch.eye(2, dtype=torch.float64).expand(16, 2, 2)
    assert torch.allclose(linear @ linear.transpose(1, 2), identity, atol=1e-12)
    # a flip is a reflection (det -1), a rotation keeps det 1; angles 3 to 27 degrees
    det = torch.linalg.det(linear)
    assert torch.allclose(det.abs(), torch.ones(16, dtype=torch.float64))
    assert (det < 0).any() and (det > 0).any()
    rotation = linear * torch.stack([det, torch.ones_like(det)], 1)[:, None, :]
    angle = torch.atan2(rotation[:, 1, 0], rotation[:, 0, 0]).abs()
    assert (angle >= math.radians(3) - 1e-9).all()
    assert (angle <= math.radians(27) + 1e-9).all()
    assert warp[:, :, 2].abs().max() == 0  # no translation


def test_strong_view_fills_grey_and_keeps_the_rest_aligned():
    g = torch.Generator().manual_seed(4)
    inputs = (torch.rand(3, 3, 32, 64, generator=g) * 255 - MEAN) / STD
    view = strong_view(inputs, MEAN, STD, generator=torch.Generator().manual_seed(7))
    grey = (torch.full((3, 1, 1), GREY) - MEAN) / STD
    # the cut-out, and the pixels whose source lies a pixel or more outside
    # (nearer, bilinear sampling mixes the border pixel with the grey)
    grid = torch.nn.functional.affine_grid(view.warp, [3, 1, 32, 64],
                                           align_corners=False)
    far = (grid[..., 0].abs() > 1 + 2 / 64) | (grid[..., 1].abs() > 1 + 2 / 32)
    empty = view.cut((32, 64)) | far
    assert view.cut((32, 64)).sum() >= 3 * 10 * 10  # 1/3 of the shorter side, clipped
    got = view.image.permute(0, 2, 3, 1)[empty]
    assert torch.allclose(got, grey.view(1, 3).expand_as(got), atol=1e-5)
    # the same draws give the same view; geometric=False gives the identity
    again = strong_view(inputs, MEAN, STD, generator=torch.Generator().manual_seed(7))
    assert torch.equal(again.image, view.image) and torch.equal(again.warp, view.warp)
    plain = strong_view(inputs, MEAN, STD, generator=torch.Generator().manual_seed(7),
                        geometric=False)
    assert torch.equal(plain.warp, torch.eye(2, 3).expand(3, 2, 3))
    assert plain.inside((32, 64)).all()
    # the geometric view is the photometric one (same draws, made first)
    # carried by its warp, on the pixels whose four bilinear neighbours exist
    x = sv.photometric(inputs * STD + MEAN, 1.0, torch.Generator().manual_seed(7))
    assert torch.equal(plain.image, (x.clamp(0, 255) - MEAN) / STD)
    well_inside = ((grid[..., 0].abs() < 1 - 1 / 64) & (grid[..., 1].abs() < 1 - 1 / 32)
                   & ~view.cut((32, 64)))[:, None].expand_as(x)
    assert well_inside.float().mean() > 0.5
    assert torch.allclose((view.image * STD + MEAN)[well_inside],
                          view.follow(x).clamp(0, 255)[well_inside], atol=1e-3)
