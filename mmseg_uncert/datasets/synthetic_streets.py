"""Procedural street scenes in the Cityscapes layout, with known uncertainty.

Each image is rendered from its own random stream, derived from
``(seed, split, index)``, so a data set is byte-identical for the same seed
whatever the order or the number of worker processes that render it.

Per image four files are written (``{stem}`` = ``synthcity_{index:06d}_000019``)::

    leftImg8bit/{split}/synthcity/{stem}_leftImg8bit.png        BGR image
    gtFine/{split}/synthcity/{stem}_gtFine_labelTrainIds.png    Cityscapes train ids, 255 = ignore
    gtFine/{split}/synthcity/{stem}_gtFine_aleatoric.png        uint16: round(10000 x label entropy in nats)
    gtFine/{split}/synthcity/{stem}_gtFine_ood.png              uint8: 1 = object never seen in training

Ground truth of the two kinds of uncertainty:

* **Aleatoric** (:mod:`.annotation_noise`): labels are drawn from a known
  distribution. Class boundaries are jittered by up to ``boundary_jitter``
  pixels, and two kinds of region look the same whatever their class: a
  *shared pavement* patch at the road edge is road with probability
  ``pavement_road_prob`` and sidewalk otherwise, a *low greenery* patch is
  vegetation with probability ``greenery_vegetation_prob`` and terrain
  otherwise (one draw per region). The aleatoric map is the exact entropy of
  each pixel's label distribution.
* **Epistemic**: the ``ood`` split adds 2 to 5 unknown objects per image
  (animal silhouettes, jagged debris, smooth blobs of 0.2 % to 5 % of the
  image, :data:`OOD_AREA`), with shapes, colours and textures that no other
  split contains; they are marked exactly in the
  ``ood`` mask and labelled 255 (their outline in the label is jittered like
  every other boundary, so 255 may reach ``boundary_jitter`` pixels beyond). ``shift_train``/``shift_val`` render the same
  kind of scenes under fog, night, a colour cast or blur (one per image).
"""
from __future__ import annotations

import json
import os
import os.path as osp
import zlib
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterable

import cv2
import numpy as np

from .annotation_noise import (encode_entropy, entropy, jitter_labels,
                               label_distribution)

#: Cityscapes train ids drawn by the generator.
ROAD, SIDEWALK, BUILDING, POLE, TRAFFIC_SIGN = 0, 1, 2, 5, 7
VEGETATION, TERRAIN, SKY, PERSON, CAR = 8, 9, 10, 11, 13
NUM_CLASSES = 19
IGNORE_INDEX = 255
# Layout ids used while rendering, resolved to classes by the annotation draw.
_PAVEMENT_ZONE, _GREENERY_ZONE = 200, 201

CITY = 'synthcity'
#: Bumped whenever the same seed would draw other scenes; written to
#: ``generator.json`` in the data root, so that tools can tell stale data.
#: 2: unknown objects of 0.2 % to 5 % of the image, 2 to 5 per ood image.
GENERATOR_VERSION = 2
GENERATOR_RECORD = 'generator.json'
SPLITS = ('train', 'val', 'ood', 'shift_train', 'shift_val')
SHIFTS = ('fog', 'night', 'colour_cast', 'blur')
DEFAULT_COUNTS = {'train': 1000, 'val': 200, 'ood': 200, 'shift_train': 1000,
                  'shift_val': 200}
FILE_SUFFIXES = {
    'img': '_leftImg8bit.png',
    'label': '_gtFine_labelTrainIds.png',
    'aleatoric': '_gtFine_aleatoric.png',
    'ood': '_gtFine_ood.png',
}


@dataclass(frozen=True)
class SceneSpec:
    """Image size and the known parameters of the label noise."""

    height: int = 256
    width: int = 512
    boundary_jitter: int = 2
    pavement_road_prob: float = 0.5
    greenery_vegetation_prob: float = 0.3

    def __post_init__(self) -> None:
        if self.height < 32 or self.width < 32:
            raise ValueError(
                f'image size {self.height}x{self.width} is too small: '
                f'height and width must be at least 32 pixels')
        if not 0 <= self.boundary_jitter <= min(self.height, self.width) // 8:
            raise ValueError(
                f'boundary_jitter must be in [0, min(height, width) / 8], got '
                f'{self.boundary_jitter}')
        for name in ('pavement_road_prob', 'greenery_vegetation_prob'):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f'{name} must be a probability, got '
                                 f'{getattr(self, name)}')


#: Objects never seen in training (the ``ood`` split only): how many per
#: image, the range of their area as a fraction of the image (log-uniform;
#: 0.2 % to 5 %, about 250 to 6500 pixels at 256x512, like the anomalies of
#: road benchmarks), where their base stands (0 horizon, 1 bottom row), their
#: outlines and their two-colour skins (BGR), none of them a colour of the
#: other splits' objects.
OOD_COUNT = (2, 5)
OOD_AREA = (0.002, 0.05)
OOD_DEPTH = (0.25, 0.98)
OOD_SHAPES = ('animal', 'debris', 'blob')
OOD_PALETTE = (((0, 140, 255), (20, 20, 20)), ((200, 0, 200), (0, 220, 120)),
               ((255, 255, 0), (0, 0, 180)), ((130, 0, 255), (255, 200, 0)),
               ((0, 255, 160), (160, 0, 90)))


def _outline_area(pts: np.ndarray, scale: int = 128) -> float:
    """Area of a unit-size outline as ``cv2.fillPoly`` fills it (any polygon,
    self-touching ones included), measured at ``scale`` pixels per unit."""
    shifted = (pts - pts.min(0)) * scale
    size = np.ceil(shifted.max(0)).astype(int) + 2
    mask = np.zeros((size[1], size[0]), np.uint8)
    cv2.fillPoly(mask, [np.round(shifted).astype(np.int32)], 1)
    return float(mask.sum()) / scale ** 2


def _unknown_outline(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Outline of an unknown object at unit size, its base centred at (0, 0)
    (image axes: y grows downwards)."""
    if kind == 'animal':  # a four-legged silhouette: body, legs, head, tail
        d = rng.choice([-1.0, 1.0])
        body_h, leg = rng.uniform(0.25, 0.4), rng.uniform(0.25, 0.45)
        top = -(leg + body_h)
        pts = [(-0.5, -leg), (-0.42, -leg), (-0.42, 0), (-0.34, 0), (-0.34, -leg),
               (0.34, -leg), (0.34, 0), (0.42, 0), (0.42, -leg), (0.5, -leg),
               (0.5, top + 0.05), (0.62, top - 0.15), (0.8, top - 0.12),
               (0.78, top + 0.05), (0.55, top + 0.1), (0.45, top), (-0.45, top),
               (-0.7, top - 0.2), (-0.72, top - 0.15), (-0.5, top + 0.1)]
        pts = np.array(pts, np.float64)
        pts[:, 0] *= d
        return pts
    n = rng.integers(7, 13)
    angles = np.sort(rng.uniform(0, 2 * np.pi, n)) if kind == 'debris' else \
        np.linspace(0, 2 * np.pi, 48, endpoint=False)
    if kind == 'debris':  # jagged: independent radii
        radii = rng.uniform(0.35, 1.0, n)
    else:  # smooth blob: a few random harmonics of the radius
        radii = np.ones_like(angles)
        for k in range(2, 5):
            radii += rng.uniform(0, 0.25) * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
    flat = rng.uniform(0.5, 1.0)  # lying objects are wider than tall
    pts = np.stack([radii * np.cos(angles), flat * radii * np.sin(angles)], 1)
    pts[:, 1] -= pts[:, 1].max()  # base on the ground
    return pts


@dataclass
class Annotation:
    """What a scene's files hold besides the image."""

    label: np.ndarray  # (H, W) uint8 train ids, 255 = ignore
    aleatoric: np.ndarray  # (H, W) float64 label entropy, nats
    ood: np.ndarray  # (H, W) bool, objects never seen in training


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Random stream of one image, independent of every other image."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def _colour(rng: np.random.Generator, base: Iterable[int],
            spread: int) -> tuple[int, int, int]:
    base = np.asarray(list(base), dtype=np.int64)
    jitter = rng.integers(-spread, spread + 1, size=3)
    return tuple(int(v) for v in np.clip(base + jitter, 0, 255))


def _poly(img: np.ndarray, layout: np.ndarray, pts: np.ndarray,
          colour: tuple[int, int, int], layout_id: int,
          return_mask: bool = False) -> np.ndarray | None:
    """Fill a polygon in image and layout; optionally return its mask."""
    pts = [np.round(pts).astype(np.int32).reshape(-1, 1, 2)]
    cv2.fillPoly(img, pts, colour)
    cv2.fillPoly(layout, pts, layout_id)
    if not return_mask:
        return None
    mask = np.zeros(layout.shape, np.uint8)
    cv2.fillPoly(mask, pts, 1)
    return mask > 0


def _rect(img: np.ndarray, layout: np.ndarray | None, x0: float, y0: float,
          x1: float, y1: float, colour: tuple[int, int, int],
          layout_id: int | None = None) -> None:
    p0, p1 = (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1)))
    cv2.rectangle(img, p0, p1, colour, thickness=-1)
    if layout is not None and layout_id is not None:
        cv2.rectangle(layout, p0, p1, layout_id, thickness=-1)


def _ellipse(img: np.ndarray, layout: np.ndarray, centre: tuple[float, float],
             axes: tuple[float, float], colour: tuple[int, int, int],
             layout_id: int) -> None:
    c = (int(round(centre[0])), int(round(centre[1])))
    a = (max(1, int(round(axes[0]))), max(1, int(round(axes[1]))))
    cv2.ellipse(img, c, a, 0, 0, 360, colour, -1)
    cv2.ellipse(layout, c, a, 0, 0, 360, layout_id, -1)


def _pattern(mask: np.ndarray, kind: str, period: float,
             rng: np.random.Generator) -> np.ndarray:
    """A boolean pattern (stripes, checker or spots) inside ``mask``."""
    out = np.zeros_like(mask)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return out
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    period = max(period, 2.0)
    if kind == 'stripes':
        angle = rng.uniform(0, np.pi)
        u = xx * np.cos(angle) + yy * np.sin(angle)
        box = np.floor(u / period) % 2 == 0
    elif kind == 'checker':
        box = (np.floor(xx / period) + np.floor(yy / period)) % 2 == 0
    else:
        spots = (rng.random((y1 - y0, x1 - x0)) < 0.08).astype(np.uint8)
        box = cv2.dilate(spots, np.ones((3, 3), np.uint8)) > 0
    out[y0:y1, x0:x1] = box & mask[y0:y1, x0:x1]
    return out


class _Scene:
    """Draws one street scene into an image and a layout map."""

    def __init__(self, rng: np.random.Generator, spec: SceneSpec) -> None:
        self.rng, self.h, self.w = rng, spec.height, spec.width
        self.img = np.zeros((self.h, self.w, 3), np.uint8)
        self.layout = np.full((self.h, self.w), IGNORE_INDEX, np.uint8)
        self.horizon = self.h * rng.uniform(0.38, 0.5)
        self.vp_x = self.w * rng.uniform(0.4, 0.6)
        self.half_bottom = self.w * rng.uniform(0.3, 0.45)  # road half width
        self.kerb = self.w * rng.uniform(0.18, 0.3)  # sidewalk width

    def depth(self, y: float) -> float:
        """0 at the horizon, 1 at the bottom row: the perspective scale."""
        return (y - self.horizon) / (self.h - self.horizon)

    def road_half_width(self, y: float) -> float:
        return self.half_bottom * self.depth(y)

    def sky(self) -> None:
        zenith = np.array(_colour(self.rng, (200, 140, 90), 30), np.float32)
        pale = np.array(_colour(self.rng, (235, 215, 200), 15), np.float32)
        rows = int(np.ceil(self.horizon)) + 1
        t = np.linspace(0.0, 1.0, rows)[:, None]
        self.img[:rows] = ((1 - t) * zenith + t * pale)[:, None, :].astype(np.uint8)
        self.layout[:rows] = SKY

    def facades(self) -> None:
        rng, x = self.rng, 0.0
        while x < self.w:
            bw = self.w * rng.uniform(0.12, 0.3)
            top = self.horizon * rng.uniform(0.05, 0.8)
            bottom = self.horizon + self.h * 0.08
            wall = _colour(rng, (120, 130, 150), 50)
            _rect(self.img, self.layout, x, top, x + bw, bottom, wall, BUILDING)
            # brick courses: a texture that says "building" at any scale
            mortar = tuple(int(v * 0.85) for v in wall)
            course = max(2, int(self.h * 0.015))
            for yy in range(int(top), int(bottom), course):
                cv2.line(self.img, (int(x), yy), (int(x + bw), yy), mortar, 1)
            win = _colour(rng, (70, 60, 50), 20)
            step_x, step_y = bw / rng.integers(3, 6), self.h * rng.uniform(0.05, 0.08)
            wy = top + step_y * 0.4
            while wy + step_y * 0.5 < self.horizon:
                wx = x + step_x * 0.3
                while wx + step_x * 0.5 < x + bw:
                    _rect(self.img, None, wx, wy, wx + step_x * 0.45,
                          wy + step_y * 0.5, win)
                    wx += step_x
                wy += step_y
            x += bw

    def trees(self) -> None:
        rng = self.rng
        for _ in range(rng.integers(1, 5)):
            cx, r = self.w * rng.uniform(0, 1), self.h * rng.uniform(0.06, 0.14)
            cy = self.horizon - r * rng.uniform(0.0, 0.8)
            trunk = (40, 60, 90)
            _rect(self.img, self.layout, cx - r * 0.08, cy, cx + r * 0.08,
                  self.horizon + 2, trunk, VEGETATION)
            green = _colour(rng, (60, 130, 70), 30)
            _ellipse(self.img, self.layout, (cx, cy), (r, r * 0.9), green,
                     VEGETATION)
            crown = np.zeros((self.h, self.w), np.uint8)
            cv2.ellipse(crown, (int(cx), int(cy)), (max(1, int(r)), max(1, int(r * 0.9))),
                        0, 0, 360, 1, -1)
            leaves = _pattern(crown > 0, 'spots', 3, rng)
            self.img[leaves] = tuple(int(v * 0.8) for v in green)

    def ground(self) -> None:
        rng, h, vp, top = self.rng, self.h, self.vp_x, self.horizon
        hb, kerb = self.half_bottom, self.kerb
        terrain = _colour(rng, (70, 150, 110), 25)
        _poly(self.img, self.layout, np.array([[0, top], [self.w, top],
                                               [self.w, h], [0, h]]),
              terrain, TERRAIN)
        grass = _pattern(self.layout == TERRAIN, 'spots', 3, rng)
        self.img[grass] = tuple(int(v * 0.9) for v in terrain)
        pavement = _colour(rng, (150, 150, 145), 25)
        _poly(self.img, self.layout, np.array([[vp - 3, top], [vp + 3, top],
                                               [vp + hb + kerb, h],
                                               [vp - hb - kerb, h]]),
              pavement, SIDEWALK)
        # kerb stones: a bright band along each road edge, part of the sidewalk
        kerb_colour = _colour(rng, (205, 205, 200), 15)
        for side in (-1.0, 1.0):
            _poly(self.img, self.layout, np.array(
                [[vp, top], [vp + side * (hb + kerb * 0.06), h],
                 [vp + side * hb, h]]), kerb_colour, SIDEWALK)
        asphalt = _colour(rng, (90, 90, 90), 20)
        road = _poly(self.img, self.layout, np.array(
            [[vp - 1, top], [vp + 1, top], [vp + hb, h], [vp - hb, h]]),
            asphalt, ROAD, return_mask=True)
        grain = 6 * rng.standard_normal(int(road.sum()), dtype=np.float32)
        self.img[road] = np.clip(self.img[road].astype(np.float32)
                                 + grain[:, None], 0, 255).astype(np.uint8)
        for k in range(8):  # dashed centre line: still road in the label
            a, b = (k + 0.2) / 8, (k + 0.6) / 8
            ya, yb = top + (h - top) * a ** 2, top + (h - top) * b ** 2
            half = max(1.0, self.depth(yb) * self.w * 0.006)
            cv2.fillPoly(self.img, [np.round(np.array(
                [[vp - half, ya], [vp + half, ya], [vp + half, yb],
                 [vp - half, yb]])).astype(np.int32)], (235, 235, 235))

    def ambiguous_zones(self) -> None:
        """Regions whose look says nothing about which of two classes they are."""
        rng, h = self.rng, self.h
        if rng.random() < 0.7:  # shared pavement across a road edge
            side = rng.choice([-1.0, 1.0])
            y0 = self.horizon + (h - self.horizon) * rng.uniform(0.3, 0.6)
            y1 = min(h, y0 + (h - self.horizon) * rng.uniform(0.2, 0.4))
            edge0 = self.vp_x + side * self.road_half_width(y0)
            edge1 = self.vp_x + side * self.road_half_width(y1)
            reach0, reach1 = self.kerb * self.depth(y0) * 0.9, self.kerb * self.depth(y1) * 0.9
            pts = np.array([[edge0 - side * reach0, y0], [edge0 + side * reach0, y0],
                            [edge1 + side * reach1, y1], [edge1 - side * reach1, y1]])
            colour = _colour(rng, (120, 125, 135), 10)
            mask = _poly(self.img, self.layout, pts, colour, _PAVEMENT_ZONE,
                         return_mask=True)
            joints = _pattern(mask, 'checker', self.h * 0.02, rng)
            self.img[joints] = tuple(int(v * 0.88) for v in colour)
        if rng.random() < 0.7:  # low greenery in the terrain
            side = rng.choice([-1.0, 1.0])
            y = self.horizon + (h - self.horizon) * rng.uniform(0.2, 0.7)
            x = self.vp_x + side * (self.road_half_width(y) + self.kerb
                                    * self.depth(y) * rng.uniform(1.3, 2.5))
            axes = (self.w * 0.12 * max(self.depth(y), 0.2),
                    self.h * 0.06 * max(self.depth(y), 0.2))
            colour = _colour(rng, (50, 110, 95), 8)
            _ellipse(self.img, self.layout, (x, y), axes, colour, _GREENERY_ZONE)
            mask = self.layout == _GREENERY_ZONE
            self.img[_pattern(mask, 'spots', 3, rng)] = (40, 140, 120)

    def objects(self, with_ood: bool) -> None:
        rng, h = self.rng, self.h
        items = [('car', rng.uniform(0.15, 0.95)) for _ in range(rng.integers(1, 5))]
        items += [('person', rng.uniform(0.1, 0.9)) for _ in range(rng.integers(0, 4))]
        items += [('pole', rng.uniform(0.1, 0.8)) for _ in range(rng.integers(0, 3))]
        if with_ood:
            items += [('unknown', rng.uniform(*OOD_DEPTH))
                      for _ in range(rng.integers(OOD_COUNT[0], OOD_COUNT[1] + 1))]
        items.sort(key=lambda item: item[1])  # far first: near ones occlude
        for kind, t in items:
            getattr(self, f'_{kind}')(self.horizon + (h - self.horizon) * t)

    def _car(self, y: float) -> None:
        rng, s = self.rng, self.depth(y)
        cw = self.w * 0.22 * s
        ch = cw * rng.uniform(0.55, 0.75)
        cx = self.vp_x + rng.choice([-1.0, 1.0]) * self.road_half_width(y) * rng.uniform(0.1, 0.6)
        body = _colour(rng, [(40, 40, 200), (200, 60, 40), (30, 30, 30),
                             (220, 220, 220)][rng.integers(4)], 30)
        _rect(self.img, self.layout, cx - cw / 2, y - ch * 0.6, cx + cw / 2, y, body, CAR)
        _rect(self.img, self.layout, cx - cw * 0.35, y - ch, cx + cw * 0.35,
              y - ch * 0.55, body, CAR)
        _rect(self.img, None, cx - cw * 0.3, y - ch * 0.95, cx + cw * 0.3,
              y - ch * 0.62, (60, 50, 40))
        for wx in (cx - cw * 0.3, cx + cw * 0.3):
            _ellipse(self.img, self.layout, (wx, y), (ch * 0.15, ch * 0.15),
                     (20, 20, 20), CAR)

    def _sidewalk_x(self, y: float, spread: tuple[float, float]) -> float:
        side = self.rng.choice([-1.0, 1.0])
        return self.vp_x + side * (self.road_half_width(y) + self.kerb * self.depth(y)
                                   * self.rng.uniform(*spread))

    def _person(self, y: float) -> None:
        rng = self.rng
        ph = self.h * 0.45 * self.depth(y)
        px = self._sidewalk_x(y, (0.2, 0.8))
        shirt = _colour(rng, (80, 60, 160), 60)
        _rect(self.img, self.layout, px - ph * 0.12, y - ph * 0.8, px + ph * 0.12,
              y - ph * 0.4, shirt, PERSON)
        legs = _colour(rng, (60, 50, 40), 20)
        for dx in (-0.07, 0.07):
            _rect(self.img, self.layout, px + ph * (dx - 0.045), y - ph * 0.4,
                  px + ph * (dx + 0.045), y, legs, PERSON)
        _ellipse(self.img, self.layout, (px, y - ph * 0.88), (ph * 0.09, ph * 0.1),
                 _colour(rng, (140, 170, 210), 20), PERSON)

    def _pole(self, y: float) -> None:
        s = self.depth(y)
        ph = self.h * 0.9 * s
        px = self._sidewalk_x(y, (0.85, 0.95))
        pw = max(1.0, self.w * 0.01 * s)  # half width
        _rect(self.img, self.layout, px - pw, y - ph, px + pw, y, (70, 70, 70), POLE)
        sign = _colour(self.rng, (40, 200, 230), 25)
        _rect(self.img, self.layout, px - pw * 4, y - ph, px + pw * 4,
              y - ph + pw * 5, sign, TRAFFIC_SIGN)

    def _unknown(self, y: float) -> None:
        """An object never seen in training, standing on the road or the
        sidewalk with its base at row ``y``. Its area is drawn log-uniformly
        from :data:`OOD_AREA` (fractions of the image) whatever its depth, as
        in road-anomaly benchmarks, where a small object may be near."""
        rng = self.rng
        kind = OOD_SHAPES[rng.integers(len(OOD_SHAPES))]
        area = self.h * self.w * np.exp(rng.uniform(*np.log(OOD_AREA)))
        reach = self.road_half_width(y) + self.kerb * self.depth(y) * 0.8
        x = self.vp_x + rng.uniform(-1, 1) * reach
        outline = _unknown_outline(kind, rng)  # unit size, base at (0, 0)
        scale = np.sqrt(area / max(_outline_area(outline), 1e-6))
        pts = outline * scale + np.array([x, y])
        mask = np.zeros((self.h, self.w), np.uint8)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
        self._ood_skin(mask > 0)

    def _ood_skin(self, mask: np.ndarray) -> None:
        """Saturated colours and textures that no in-distribution object has."""
        rng = self.rng
        a, b = OOD_PALETTE[rng.integers(len(OOD_PALETTE))]
        self.img[mask] = a
        period = self.h * rng.uniform(0.01, 0.03)
        self.img[_pattern(mask, ['stripes', 'checker', 'spots'][rng.integers(3)],
                          period, rng)] = b
        self.layout[mask] = IGNORE_INDEX

    def finish(self) -> np.ndarray:
        """Lighting, smooth shading and sensor noise vary per image."""
        rng = self.rng
        shading = cv2.resize(rng.normal(0, 1, (4, 8)).astype(np.float32),
                             (self.w, self.h), interpolation=cv2.INTER_CUBIC)
        gain = rng.uniform(0.75, 1.2) * (1 + 0.06 * shading)[..., None]
        noise = rng.standard_normal(self.img.shape, dtype=np.float32)
        noise *= rng.uniform(2.0, 8.0)
        out = self.img.astype(np.float32)
        out *= gain
        out += noise
        return np.clip(out, 0, 255).astype(np.uint8)


def render_scene(rng: np.random.Generator, spec: SceneSpec = SceneSpec(),
                 with_ood: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Render one street scene.

    Returns:
        ``(image, layout)``: a BGR uint8 image (H, W, 3) and a uint8 layout
        of train ids where the ambiguous regions still carry their region ids
        (resolved by :func:`annotate`) and OOD objects carry 255.
    """
    scene = _Scene(rng, spec)
    scene.sky()
    scene.facades()
    scene.trees()
    scene.ground()
    scene.ambiguous_zones()
    scene.objects(with_ood)
    return scene.finish(), scene.layout


def annotate(layout: np.ndarray, spec: SceneSpec,
             rng: np.random.Generator) -> Annotation:
    """Draw the label from its known distribution; compute the exact entropy."""
    zones = {_PAVEMENT_ZONE: (ROAD, SIDEWALK, spec.pavement_road_prob),
             _GREENERY_ZONE: (VEGETATION, TERRAIN, spec.greenery_vegetation_prob)}
    ood = layout == IGNORE_INDEX
    # Prior over 19 classes plus "unknown" (the OOD objects), one channel per
    # category present, and the drawn (un-jittered) label.
    categories = sorted(set(np.unique(layout).tolist()) - set(zones)
                        | {c for zone, (a, b, _) in zones.items()
                           if (layout == zone).any() for c in (a, b)})
    index = {c: i for i, c in enumerate(categories)}
    prior = np.zeros((len(categories), *layout.shape), np.float32)
    drawn = layout.copy()
    for c in categories:
        prior[index[c]][layout == c] = 1.0
    for zone, (a, b, q) in zones.items():
        inside = layout == zone
        if inside.any():
            prior[index[a]][inside] = q
            prior[index[b]][inside] = 1.0 - q
            drawn[inside] = a if rng.random() < q else b
    label = jitter_labels(drawn, spec.boundary_jitter, rng)
    label[ood] = IGNORE_INDEX
    prob = label_distribution(prior, spec.boundary_jitter)
    return Annotation(label=label, aleatoric=entropy(prob), ood=ood)


def apply_shift(img: np.ndarray, rng: np.random.Generator,
                kind: str | None = None) -> tuple[np.ndarray, str]:
    """Render the scene under an adverse condition (one of :data:`SHIFTS`)."""
    kind = kind or SHIFTS[rng.integers(len(SHIFTS))]
    x = img.astype(np.float32)
    h = img.shape[0]
    if kind == 'fog':
        density = rng.uniform(0.45, 0.7)
        # thicker towards the horizon, where the scene is far away
        t = density * np.clip(1.2 - np.linspace(0, 1, h), 0, 1)[:, None, None]
        x = x * (1 - t) + t * np.array(_colour(rng, (215, 215, 210), 10), np.float32)
    elif kind == 'night':
        gamma, gain = rng.uniform(1.8, 2.4), rng.uniform(0.4, 0.6)
        x = 255.0 * (x / 255.0) ** gamma * gain * np.array([1.25, 1.0, 0.8], np.float32)
        x += rng.normal(0, 6, size=x.shape)
    elif kind == 'colour_cast':
        scale = np.ones(3, np.float32)
        up, down = rng.choice(3, size=2, replace=False)
        scale[up], scale[down] = rng.uniform(1.3, 1.5), rng.uniform(0.55, 0.75)
        x = x * scale
    elif kind == 'blur':
        sigma = rng.uniform(2.0, 3.5) * h / 256
        x = cv2.GaussianBlur(x, (0, 0), sigma)
    else:
        raise ValueError(f'unknown shift {kind!r}; choose from {SHIFTS}')
    return np.clip(x, 0, 255).astype(np.uint8), kind


def file_paths(out_dir: str, split: str, index: int) -> dict[str, str]:
    """Paths of the four files of one image."""
    stem = f'{CITY}_{index:06d}_000019'
    img_dir = osp.join(out_dir, 'leftImg8bit', split, CITY)
    gt_dir = osp.join(out_dir, 'gtFine', split, CITY)
    return {key: osp.join(img_dir if key == 'img' else gt_dir, stem + suffix)
            for key, suffix in FILE_SUFFIXES.items()}


def make_sample(seed: int, split: str, index: int,
                spec: SceneSpec) -> tuple[np.ndarray, Annotation]:
    """Image and annotation of one sample, exactly as :func:`generate` writes."""
    rng = image_rng(seed, split, index)
    img, layout = render_scene(rng, spec, with_ood=split == 'ood')
    annotation = annotate(layout, spec, rng)
    if split.startswith('shift'):
        img, _ = apply_shift(img, rng)
    return img, annotation


def _write_one(args: tuple) -> None:
    out_dir, split, index, seed, spec = args
    img, ann = make_sample(seed, split, index, spec)
    paths = file_paths(out_dir, split, index)
    cv2.imwrite(paths['img'], img)
    cv2.imwrite(paths['label'], ann.label)
    cv2.imwrite(paths['aleatoric'], encode_entropy(ann.aleatoric))
    cv2.imwrite(paths['ood'], ann.ood.astype(np.uint8))


def generate(out_dir: str, counts: dict[str, int], seed: int = 0,
             spec: SceneSpec = SceneSpec(), workers: int | None = None,
             progress: Callable[[int, int], None] | None = None) -> None:
    """Write a data set in the Cityscapes layout under ``out_dir``.

    Args:
        out_dir: root of the data set (``data_root`` in a config).
        counts: number of images per split, e.g. ``{'train': 1000, 'val': 200}``
            (splits: :data:`SPLITS`).
        seed: the data set's seed; the same seed gives byte-identical files.
        spec: image size and label-noise parameters.
        workers: processes to render with (default: the CPU count).
        progress: called as ``progress(done, total)`` after every image.
    """
    for split, n in counts.items():
        if split not in SPLITS:
            raise ValueError(f'unknown split {split!r}; choose from {SPLITS}')
        if n < 0:
            raise ValueError(f'count of split {split!r} must be >= 0, got {n}')
        for sub in ('leftImg8bit', 'gtFine'):
            os.makedirs(osp.join(out_dir, sub, split, CITY), exist_ok=True)
    jobs = [(out_dir, split, i, seed, spec)
            for split, n in counts.items() for i in range(n)]
    workers = workers or os.cpu_count() or 1
    pool = ProcessPoolExecutor(workers) if workers > 1 else nullcontext()
    with pool:
        results = (pool.map(_write_one, jobs, chunksize=16) if workers > 1
                   else map(_write_one, jobs))
        for done, _ in enumerate(results, 1):
            if progress:
                progress(done, len(jobs))
    with open(osp.join(out_dir, GENERATOR_RECORD), 'w') as f:
        json.dump(dict(version=GENERATOR_VERSION, seed=seed, counts=counts,
                       spec=vars(spec)), f, indent=2)


def generator_version(out_dir: str) -> int | None:
    """The generator version a data root was written with (None: unknown,
    e.g. written before versions were recorded)."""
    path = osp.join(out_dir, GENERATOR_RECORD)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get('version')


def ood_statistics(out_dir: str, split: str = 'ood') -> dict:
    """Sizes of the unknown objects in a written split, as the road-anomaly
    benchmarks count them: connected components of the OOD masks (objects
    that touch count once; the visible part of an occluded one counts).

    Returns:
        ``images``; ``objects_per_image`` (mean); ``pixel_fraction`` (OOD
        pixels over all pixels); ``area_pixels`` and ``area_percent``
        (component area percentiles 0, 5, 25, 50, 75, 95, 100).
    """
    folder = osp.join(out_dir, 'gtFine', split, CITY)
    paths = sorted(p for p in os.listdir(folder) if p.endswith(FILE_SUFFIXES['ood']))
    if not paths:
        raise FileNotFoundError(f'no OOD masks (*{FILE_SUFFIXES["ood"]}) in {folder}')
    areas, ood_pixels, pixels = [], 0, 0
    for name in paths:
        mask = cv2.imread(osp.join(folder, name), cv2.IMREAD_UNCHANGED) > 0
        _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        areas += np.bincount(labels.ravel())[1:].tolist()
        ood_pixels += int(mask.sum())
        pixels += mask.size
    percentiles = (0, 5, 25, 50, 75, 95, 100)
    area = np.percentile(np.asarray(areas or [0]), percentiles)
    image_pixels = pixels / len(paths)
    return dict(images=len(paths), objects_per_image=len(areas) / len(paths),
                pixel_fraction=ood_pixels / pixels,
                area_pixels={str(p): float(a) for p, a in zip(percentiles, area)},
                area_percent={str(p): float(100 * a / image_pixels)
                              for p, a in zip(percentiles, area)})
