"""Paste patches of procedural noise into training images, label ignored."""
from __future__ import annotations

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class PasteNoisePatches(BaseTransform):
    """Paste up to ``max_patches`` patches of procedural colour noise, each
    with probability ``prob``, and label them ``ignore_index``.

    A student distilled only on training scenes never sees a pixel where its
    teachers disagree for a reason: they were all fitted on those scenes. On
    a patch of noise they do disagree, so the distiller's uncertainty term
    (over every pixel, ignored ones included) teaches the student what
    "unlike anything in training" looks like, with the teachers deciding how
    unsure to be; no label is invented (the patch is ignored by CE). This is
    the synthetic-outlier idea of outlier exposure (Hendrycks et al., ICLR
    2019) and of pasted anomalies in road-anomaly work (e.g. Chan et al.,
    "Entropy Maximization and Meta Classification for Out-of-Distribution
    Detection in Semantic Segmentation", ICCV 2021), here without an
    outlier label: the ensemble's own uncertainty is the target.

    Each patch is an ellipse or a random convex polygon of area drawn
    log-uniformly from ``area_range`` (fractions of the image), filled with
    smooth random colour noise (a coarse random colour grid, bicubically
    upsampled) plus fine Gaussian grain. It uses numpy's global random
    stream, which mmengine seeds per worker, as mmseg's transforms do.

    Required keys: ``img``, ``gt_seg_map``. Modified keys: ``img``,
    ``gt_seg_map`` (and ``gt_ood``, set to 1, if present).

    Args:
        prob: probability of each patch.
        max_patches: patches tried per image.
        area_range: (low, high) area of a patch, fractions of the image.
        ignore_index: the label written under a patch.
    """

    def __init__(self, prob: float = 0.5, max_patches: int = 3,
                 area_range: tuple[float, float] = (0.005, 0.08),
                 ignore_index: int = 255) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f'PasteNoisePatches: prob must lie in [0, 1], got {prob}')
        if max_patches < 0:
            raise ValueError(f'PasteNoisePatches: max_patches must be >= 0, got '
                             f'{max_patches}')
        low, high = area_range
        if not 0.0 < low <= high < 1.0:
            raise ValueError(f'PasteNoisePatches: area_range must satisfy '
                             f'0 < low <= high < 1, got {area_range}')
        self.prob = prob
        self.max_patches = max_patches
        self.area_range = (float(low), float(high))
        self.ignore_index = ignore_index

    def _mask(self, h: int, w: int) -> np.ndarray:
        area = h * w * np.exp(np.random.uniform(*np.log(self.area_range)))
        aspect = np.exp(np.random.uniform(np.log(0.5), np.log(2.0)))
        ry, rx = np.sqrt(area / np.pi / aspect), np.sqrt(area / np.pi * aspect)
        cy, cx = np.random.uniform(0, h), np.random.uniform(0, w)
        mask = np.zeros((h, w), np.uint8)
        if np.random.rand() < 0.5:
            cv2.ellipse(mask, (int(cx), int(cy)), (max(1, int(rx)), max(1, int(ry))),
                        float(np.random.uniform(0, 180)), 0, 360, 1, -1)
        else:
            angles = np.random.uniform(0, 2 * np.pi, 12)
            radii = np.random.uniform(0.6, 1.4, 12)
            pts = np.stack([cx + rx * radii * np.cos(angles),
                            cy + ry * radii * np.sin(angles)], 1)
            hull = cv2.convexHull(np.round(pts).astype(np.int32))
            cv2.fillPoly(mask, [hull], 1)
        return mask > 0

    @staticmethod
    def _texture(h: int, w: int, channels: int) -> np.ndarray:
        cells = np.random.randint(2, 9)
        coarse = np.random.uniform(0, 255, (cells, cells, channels)).astype(np.float32)
        smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        smooth = smooth.reshape(h, w, channels)
        grain = np.random.normal(0, np.random.uniform(0, 25), (h, w, channels))
        return np.clip(smooth + grain, 0, 255)

    def transform(self, results: dict) -> dict:
        if 'gt_seg_map' not in results:
            raise KeyError(f'PasteNoisePatches: image {results.get("img_path", "?")} '
                           f'has no gt_seg_map; put LoadAnnotations before it')
        img = results['img']
        h, w = img.shape[:2]
        channels = 1 if img.ndim == 2 else img.shape[2]
        for _ in range(self.max_patches):
            if np.random.rand() >= self.prob:
                continue
            mask = self._mask(h, w)
            texture = self._texture(h, w, channels).astype(img.dtype)
            img[mask] = texture.reshape(img.shape)[mask]
            results['gt_seg_map'][mask] = self.ignore_index
            if 'gt_ood' in results:
                results['gt_ood'][mask] = 1
        results['img'] = img
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(prob={self.prob}, max_patches='
                f'{self.max_patches}, area_range={self.area_range}, '
                f'ignore_index={self.ignore_index})')
