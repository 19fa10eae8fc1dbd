"""ProDA's strong view of a target batch: a photometric and geometric
perturbation of the weak view, with the warp that carries the weak view's
maps (pseudo-labels, prototype assignments) onto it.

Zhang et al., "Prototypical Pseudo Label Denoising and Target Structure
Learning for Domain Adaptive Semantic Segmentation", CVPR 2021, §3.3: the
strong view is RandAugment (Cubuk et al., 2020) as FixMatch uses it, with
Cutout; the weak view's targets are transformed the same way, and the pixels
the transform leaves without a source (outside the weak view, under the
cut-out square) are left out of every loss.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from mmengine import dist
from mmengine.logging import MessageHub
from torch import Tensor

#: the fill of the pixels the warp or the cut-out leaves empty (0..255)
GREY = 127.0
#: largest magnitude of each geometric operation (RandAugment's, FixMatch's pool)
MAX_ROTATION_DEGREES = 30.0
MAX_SHEAR = 0.3
MAX_TRANSLATION = 0.3  # of the image's width or height
#: probability of each geometric operation: RandAugment draws 2 of its 14
#: operations and applies each with probability 1/2, so about 1/14 each
GEOMETRIC_PROB = 1.0 / 14.0
#: the cut-out square's side, as a share of the image's shorter side
CUTOUT_SIDE = 1.0 / 3.0


class StrongView(NamedTuple):
    """image: the strong view (B, 3, H, W), normalised like the input.
    warp: (B, 2, 3) ``affine_grid`` matrices that sample the weak view at
        each strong-view pixel (normalised coordinates, ``align_corners``
        False: one matrix serves every resolution).
    cutout: (B, 4) the cut-out box (x0, y0, x1, y1) in the strong view's
        normalised coordinates.
    """

    image: Tensor
    warp: Tensor
    cutout: Tensor

    def follow(self, maps: Tensor, mode: str = 'bilinear') -> Tensor:
        """Maps of the weak view (B, C, h, w), at any resolution, carried to
        the strong view's geometry; 0 where the strong pixel has no source
        (see :meth:`inside`)."""
        grid = F.affine_grid(self.warp.to(maps.dtype), list(maps.shape),
                             align_corners=False)
        return F.grid_sample(maps, grid, mode=mode, padding_mode='zeros',
                             align_corners=False)

    @torch.no_grad()
    def carry_mask(self, mask: Tensor) -> Tensor:
        """A (B, h, w) bool mask of the weak view carried to the strong view
        (nearest), and false where :meth:`inside` is."""
        carried = self.follow(mask[:, None].float(), 'nearest')[:, 0] > 0.5
        return carried & self.inside(mask.shape[1:])

    @torch.no_grad()
    def carry_labels(self, labels: Tensor, ignore_index: int) -> Tensor:
        """(B, h, w) class labels of the weak view carried to the strong view
        (nearest: no mixed classes), ``ignore_index`` where the strong pixel
        has no content (:meth:`inside`)."""
        carried = self.follow(labels[:, None].float(), 'nearest')[:, 0].long()
        return carried.masked_fill(~self.inside(labels.shape[1:]), ignore_index)

    def sourced(self, size: tuple[int, int]) -> Tensor:
        """(B, h, w) bool at resolution ``size``: the strong-view pixels whose
        source lies inside the weak view."""
        grid = F.affine_grid(self.warp, [self.warp.shape[0], 1, *size],
                             align_corners=False)
        return (grid.abs() <= 1).all(-1)

    def cut(self, size: tuple[int, int]) -> Tensor:
        """(B, h, w) bool: the pixels under the cut-out square."""
        b = self.warp.shape[0]
        # each pixel's own normalised centre: the identity grid
        own = F.affine_grid(_identity(b, self.warp), [b, 1, *size], align_corners=False)
        x, y = own[..., 0], own[..., 1]
        box = self.cutout[:, :, None, None]
        return (x >= box[:, 0]) & (x < box[:, 2]) & (y >= box[:, 1]) & (y < box[:, 3])

    def inside(self, size: tuple[int, int]) -> Tensor:
        """(B, h, w) bool: the pixels that carry the weak view's content,
        sourced and not cut out; the only ones a loss may count."""
        return self.sourced(size) & ~self.cut(size)


def view_generator(seed: int, device: torch.device) -> torch.Generator:
    """The strong view's random numbers, seeded by (seed, the runner's
    training iteration, rank): a resumed run draws the same views as an
    uninterrupted one, and ranks draw different ones."""
    iteration = MessageHub.get_current_instance().get_info('iter', 0)
    seed = (seed * 1_000_003 + iteration) * 7919 + dist.get_rank()
    return torch.Generator(device=device).manual_seed(seed % 2**63)


def _identity(b: int, like: Tensor) -> Tensor:
    return torch.eye(2, 3, dtype=like.dtype, device=like.device).expand(b, 2, 3)


def photometric(x: Tensor, strength: float,
                generator: torch.Generator | None = None) -> Tensor:
    """Per image (0..255 values): a brightness shift, contrast and
    saturation scales, grey-scale with probability 0.2, Gaussian blur with
    probability 0.5 and Gaussian noise (std 8), all scaled by ``strength``."""
    b = x.shape[0]

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator, device=x.device, dtype=x.dtype)

    x = x + (rand(b, 1, 1, 1) - 0.5) * 2 * 0.3 * 255 * strength
    grey = x.mean(1, keepdim=True)
    img_mean = grey.mean((2, 3), keepdim=True)
    x = (x - img_mean) * (1 + (rand(b, 1, 1, 1) - 0.5) * 2 * 0.4 * strength) + img_mean
    x = grey + (x - grey) * (1 + (rand(b, 1, 1, 1) - 0.5) * 2 * 0.4 * strength)
    to_grey = rand(b, 1, 1, 1) < 0.2
    x = torch.where(to_grey, x.mean(1, keepdim=True).expand_as(x), x)
    sigma = 0.1 + rand(b) * 1.9
    blur = rand(b) < 0.5
    if blur.any():
        radius = 4
        t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-t[None] ** 2 / (2 * sigma[:, None] ** 2))
        kernel = kernel / kernel.sum(1, keepdim=True)
        c = x.shape[1]
        blurred = []
        for i in range(b):
            k = kernel[i]
            y = F.conv2d(F.pad(x[i:i + 1], (radius, radius, 0, 0), mode='replicate'),
                         k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
            y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode='replicate'),
                         k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
            blurred.append(y)
        x = torch.where(blur[:, None, None, None], torch.cat(blurred), x)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + noise * 8.0 * strength


def geometric_warp(b: int, height: int, width: int,
                   generator: torch.Generator | None = None,
                   device: torch.device | str = 'cpu') -> Tensor:
    """(B, 2, 3) sampling matrices in normalised coordinates: a horizontal
    flip with probability 1/2, then each of rotation (≤ 30°), shear along x
    and along y (≤ 0.3) and translation along x and along y (≤ 0.3 of the
    side) with probability :data:`GEOMETRIC_PROB`, each of a magnitude drawn
    from 0.1..0.9 of its largest, either sign.

    The operations compose in pixel units (so that a rotation stays a
    rotation on a non-square image) and are then expressed in the
    normalised coordinates ``affine_grid`` takes: N·A·N⁻¹, N = diag(2/W, 2/H).
    """
    def rand(n: int) -> Tensor:
        # drawn on the generator's device, composed in float64 on the CPU
        return torch.rand(n, generator=generator, device=device).cpu().double()

    def magnitude(largest: float) -> Tensor:
        applied = (rand(b) < GEOMETRIC_PROB).double()
        sign = torch.where(rand(b) < 0.5, -1.0, 1.0).double()
        return applied * sign * (0.1 + 0.8 * rand(b)) * largest

    angle = magnitude(math.radians(MAX_ROTATION_DEGREES))
    shear_x, shear_y = magnitude(MAX_SHEAR), magnitude(MAX_SHEAR)
    shift_x = magnitude(MAX_TRANSLATION) * width
    shift_y = magnitude(MAX_TRANSLATION) * height
    flip = torch.where(rand(b) < 0.5, -1.0, 1.0).double()

    def matrices(a, bb, c, d, tx, ty) -> Tensor:
        m = torch.zeros(b, 3, 3, dtype=torch.float64)
        m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = a, bb, tx
        m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = c, d, ty
        m[:, 2, 2] = 1
        return m

    zero, one = torch.zeros(b, dtype=torch.float64), torch.ones(b, dtype=torch.float64)
    cos, sin = torch.cos(angle), torch.sin(angle)
    pixels = (matrices(flip, zero, zero, one, zero, zero)
              @ matrices(cos, -sin, sin, cos, zero, zero)
              @ matrices(one, shear_x, zero, one, zero, zero)
              @ matrices(one, zero, shear_y, one, zero, zero)
              @ matrices(one, zero, zero, one, shift_x, shift_y))
    scale = torch.diag(torch.tensor([2.0 / width, 2.0 / height, 1.0],
                                    dtype=torch.float64))
    normalised = scale @ pixels @ torch.linalg.inv(scale)
    return normalised[:, :2]


def strong_view(inputs: Tensor, mean: Tensor, std: Tensor, strength: float = 1.0,
                generator: torch.Generator | None = None,
                geometric: bool = True) -> StrongView:
    """The strong view of normalised images (B, 3, H, W): the photometric
    perturbation of :func:`photometric`, then (``geometric``) the warp of
    :func:`geometric_warp` and a grey cut-out square of side 1/3 of the
    shorter side, centred anywhere in the image (clipped at its borders).
    With ``geometric=False`` the view stays pixel-aligned with the input:
    its warp is the identity and its cut-out empty."""
    b, _, height, width = inputs.shape
    x = photometric(inputs * std + mean, strength, generator)
    if not geometric:
        return StrongView((x.clamp(0, 255) - mean) / std,
                          _identity(b, inputs).contiguous(), inputs.new_zeros(b, 4))
    warp = geometric_warp(b, height, width, generator, inputs.device).to(inputs)
    centre = torch.rand(2, b, generator=generator, device=inputs.device)
    centre = centre.to(inputs) * 2 - 1
    # half the side, in normalised units along x and along y
    half = CUTOUT_SIDE * min(height, width) / torch.tensor([width, height]).to(inputs)
    cutout = torch.cat([(centre - half[:, None]).clamp(min=-1),
                        (centre + half[:, None]).clamp(max=1)]).T.contiguous()
    view = StrongView(x, warp, cutout)
    x = view.follow(x - GREY) + GREY  # the pixels without a source grey
    x = torch.where(view.cut((height, width))[:, None], torch.full_like(x, GREY), x)
    return view._replace(image=(x.clamp(0, 255) - mean) / std)
