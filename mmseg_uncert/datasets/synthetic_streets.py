"""Procedural street scenes in the Cityscapes layout, generated from a seed.

Every image is rendered from its own random stream, derived from
``(seed, split, index)``, so a data set is byte-identical for the same seed
whatever the order or the number of worker processes that render it.
"""
from __future__ import annotations

import os
import os.path as osp
import zlib
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterable

import cv2
import numpy as np

#: Cityscapes train ids drawn by the generator.
ROAD, SIDEWALK, BUILDING, POLE, TRAFFIC_SIGN = 0, 1, 2, 5, 7
VEGETATION, TERRAIN, SKY, PERSON, CAR = 8, 9, 10, 11, 13
IGNORE_INDEX = 255

CITY = 'synthcity'
SPLITS = ('train', 'val')


@dataclass(frozen=True)
class SceneSize:
    """Image size in pixels (height, width)."""

    height: int = 256
    width: int = 512

    def __post_init__(self) -> None:
        if self.height < 32 or self.width < 32:
            raise ValueError(
                f'image size {self.height}x{self.width} is too small: '
                f'height and width must be at least 32 pixels')


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Random stream of one image, independent of every other image."""
    split_key = zlib.crc32(split.encode())
    return np.random.default_rng([seed, split_key, index])


def _colour(rng: np.random.Generator, base: Iterable[int],
            spread: int) -> tuple[int, int, int]:
    base = np.asarray(list(base), dtype=np.int64)
    jitter = rng.integers(-spread, spread + 1, size=3)
    return tuple(int(v) for v in np.clip(base + jitter, 0, 255))


def _fill(img: np.ndarray, label: np.ndarray, pts: np.ndarray,
          colour: tuple[int, int, int], class_id: int) -> None:
    pts = np.round(pts).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(img, [pts], colour)
    cv2.fillPoly(label, [pts], class_id)


def _rect(img: np.ndarray, label: np.ndarray | None, x0: float, y0: float,
          x1: float, y1: float, colour: tuple[int, int, int],
          class_id: int | None = None) -> None:
    p0 = (int(round(x0)), int(round(y0)))
    p1 = (int(round(x1)), int(round(y1)))
    cv2.rectangle(img, p0, p1, colour, thickness=-1)
    if label is not None and class_id is not None:
        cv2.rectangle(label, p0, p1, class_id, thickness=-1)


def render_scene(rng: np.random.Generator,
                 size: SceneSize = SceneSize()) -> tuple[np.ndarray, np.ndarray]:
    """Render one street scene.

    Returns:
        ``(image, label)``: a BGR uint8 image of shape (H, W, 3) and a uint8
        map of Cityscapes train ids of shape (H, W).
    """
    h, w = size.height, size.width
    img = np.zeros((h, w, 3), np.uint8)
    label = np.full((h, w), IGNORE_INDEX, np.uint8)

    horizon = h * rng.uniform(0.38, 0.5)
    vp_x = w * rng.uniform(0.4, 0.6)

    # Sky: vertical gradient from a varied zenith colour to a pale horizon.
    zenith = np.array(_colour(rng, (200, 140, 90), 30), np.float32)
    pale = np.array(_colour(rng, (235, 215, 200), 15), np.float32)
    t = np.linspace(0.0, 1.0, int(np.ceil(horizon)) + 1)[:, None]
    img[:len(t)] = ((1 - t) * zenith + t * pale)[:, None, :].astype(np.uint8)
    label[:len(t)] = SKY

    # Façades with windows, from left to right, reaching below the horizon.
    x = 0.0
    while x < w:
        bw = w * rng.uniform(0.12, 0.3)
        top = horizon * rng.uniform(0.05, 0.8)
        bottom = horizon + h * 0.08
        wall = _colour(rng, (120, 130, 150), 50)
        _rect(img, label, x, top, x + bw, bottom, wall, BUILDING)
        win = _colour(rng, (70, 60, 50), 20)
        step_x, step_y = bw / rng.integers(3, 6), h * rng.uniform(0.05, 0.08)
        wy = top + step_y * 0.4
        while wy + step_y * 0.5 < horizon:
            wx = x + step_x * 0.3
            while wx + step_x * 0.5 < x + bw:
                _rect(img, None, wx, wy, wx + step_x * 0.45, wy + step_y * 0.5,
                      win)
                wx += step_x
            wy += step_y
        x += bw

    # Trees in front of the façades: trunk is vegetation too, as in Cityscapes.
    for _ in range(rng.integers(0, 4)):
        cx, r = w * rng.uniform(0, 1), h * rng.uniform(0.06, 0.14)
        cy = horizon - r * rng.uniform(0.2, 1.0)
        green = _colour(rng, (60, 130, 70), 30)
        cv2.circle(img, (int(cx), int(cy)), int(r), green, -1)
        cv2.circle(label, (int(cx), int(cy)), int(r), VEGETATION, -1)

    # Ground: sidewalks on both sides, the road between two lines that meet at
    # the vanishing point, a terrain strip beyond the sidewalk.
    ground_top = horizon
    half_bottom = w * rng.uniform(0.3, 0.45)
    kerb = w * rng.uniform(0.18, 0.3)
    _fill(img, label, np.array([[0, ground_top], [w, ground_top], [w, h], [0, h]]),
          _colour(rng, (150, 150, 145), 25), SIDEWALK)
    terrain = _colour(rng, (70, 150, 110), 25)
    _fill(img, label, np.array([[0, ground_top], [vp_x - 4, ground_top],
                                [-kerb * 2.5 + vp_x - half_bottom - kerb, h],
                                [0, h]]), terrain, TERRAIN)
    _fill(img, label, np.array([[vp_x + 4, ground_top], [w, ground_top], [w, h],
                                [vp_x + half_bottom + kerb * 3.5, h]]),
          terrain, TERRAIN)
    _fill(img, label, np.array([[vp_x - 2, ground_top], [vp_x + 2, ground_top],
                                [vp_x + half_bottom + kerb, h],
                                [vp_x - half_bottom - kerb, h]]),
          _colour(rng, (150, 150, 145), 25), SIDEWALK)
    road = _colour(rng, (90, 90, 90), 20)
    _fill(img, label, np.array([[vp_x - 1, ground_top], [vp_x + 1, ground_top],
                                [vp_x + half_bottom, h], [vp_x - half_bottom, h]]),
          road, ROAD)
    # Dashed centre line: still road in the label.
    for k in range(8):
        a, b = (k + 0.2) / 8, (k + 0.6) / 8
        ya, yb = horizon + (h - horizon) * a ** 2, horizon + (h - horizon) * b ** 2
        half = max(1.0, (yb - horizon) / (h - horizon) * w * 0.006)
        pts = np.array([[vp_x - half, ya], [vp_x + half, ya],
                        [vp_x + half, yb], [vp_x - half, yb]])
        cv2.fillPoly(img, [np.round(pts).astype(np.int32)], (235, 235, 235))

    def depth_scale(y: float) -> float:
        return (y - horizon) / (h - horizon)

    def road_half_width(y: float) -> float:
        return half_bottom * depth_scale(y)

    # Objects sorted far to near so nearer ones occlude farther ones.
    objects = []
    for _ in range(rng.integers(1, 5)):
        objects.append(('car', horizon + (h - horizon) * rng.uniform(0.15, 0.95)))
    for _ in range(rng.integers(0, 4)):
        objects.append(('person', horizon + (h - horizon) * rng.uniform(0.1, 0.9)))
    for _ in range(rng.integers(0, 3)):
        objects.append(('pole', horizon + (h - horizon) * rng.uniform(0.1, 0.8)))
    objects.sort(key=lambda o: o[1])
    for kind, y in objects:
        s = depth_scale(y)
        side = rng.choice([-1.0, 1.0])
        if kind == 'car':
            cw = w * 0.22 * s
            ch = cw * rng.uniform(0.55, 0.75)
            cx = vp_x + side * road_half_width(y) * rng.uniform(0.1, 0.6)
            body = _colour(rng, rng.choice([(40, 40, 200), (200, 60, 40),
                                            (30, 30, 30), (220, 220, 220)]), 30)
            _rect(img, label, cx - cw / 2, y - ch * 0.6, cx + cw / 2, y, body, CAR)
            _rect(img, label, cx - cw * 0.35, y - ch, cx + cw * 0.35, y - ch * 0.55,
                  body, CAR)
            _rect(img, None, cx - cw * 0.3, y - ch * 0.95, cx + cw * 0.3,
                  y - ch * 0.62, (60, 50, 40))
            for wx in (cx - cw * 0.3, cx + cw * 0.3):
                cv2.circle(img, (int(wx), int(y)), max(1, int(ch * 0.15)),
                           (20, 20, 20), -1)
                cv2.circle(label, (int(wx), int(y)), max(1, int(ch * 0.15)),
                           CAR, -1)
        elif kind == 'person':
            ph = h * 0.45 * s
            px = vp_x + side * (road_half_width(y) + kerb * s * rng.uniform(0.2, 0.8))
            shirt = _colour(rng, (80, 60, 160), 60)
            _rect(img, label, px - ph * 0.12, y - ph * 0.8, px + ph * 0.12, y,
                  shirt, PERSON)
            cv2.circle(img, (int(px), int(y - ph * 0.88)), max(1, int(ph * 0.1)),
                       _colour(rng, (140, 170, 210), 20), -1)
            cv2.circle(label, (int(px), int(y - ph * 0.88)), max(1, int(ph * 0.1)),
                       PERSON, -1)
        else:
            ph = h * 0.9 * s
            px = vp_x + side * (road_half_width(y) + kerb * s * 0.9)
            pw = max(1.0, w * 0.006 * s)
            _rect(img, label, px - pw, y - ph, px + pw, y, (70, 70, 70), POLE)
            sign = _colour(rng, (40, 200, 230), 25)
            _rect(img, label, px - pw * 4, y - ph, px + pw * 4, y - ph + pw * 6,
                  sign, TRAFFIC_SIGN)

    # Lighting and sensor noise vary per image.
    gain = rng.uniform(0.75, 1.2)
    noise = rng.normal(0.0, rng.uniform(2.0, 8.0), size=img.shape)
    img = np.clip(img.astype(np.float32) * gain + noise, 0, 255).astype(np.uint8)
    return img, label


def _write_one(args: tuple) -> None:
    out_dir, split, index, seed, size = args
    img, label = render_scene(image_rng(seed, split, index), size)
    stem = f'{CITY}_{index:06d}_000019'
    img_dir = osp.join(out_dir, 'leftImg8bit', split, CITY)
    gt_dir = osp.join(out_dir, 'gtFine', split, CITY)
    cv2.imwrite(osp.join(img_dir, f'{stem}_leftImg8bit.png'), img)
    cv2.imwrite(osp.join(gt_dir, f'{stem}_gtFine_labelTrainIds.png'), label)


def generate(out_dir: str, counts: dict[str, int], seed: int = 0,
             size: SceneSize = SceneSize(), workers: int | None = None,
             progress: Callable[[int, int], None] | None = None) -> None:
    """Write a data set in the Cityscapes layout under ``out_dir``.

    Args:
        out_dir: root of the data set (``data_root`` in a config).
        counts: number of images per split, e.g. ``{'train': 1000, 'val': 200}``.
        seed: the data set's seed; the same seed gives byte-identical files.
        size: image size.
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
    jobs = [(out_dir, split, i, seed, size)
            for split, n in counts.items() for i in range(n)]
    workers = workers or os.cpu_count() or 1
    pool = ProcessPoolExecutor(workers) if workers > 1 else nullcontext()
    with pool:
        results = (pool.map(_write_one, jobs, chunksize=16) if workers > 1
                   else map(_write_one, jobs))
        for done, _ in enumerate(results, 1):
            if progress:
                progress(done, len(jobs))
