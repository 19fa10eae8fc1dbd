"""Overconfident logits cached as a calibration split, and the naive NLL."""
from __future__ import annotations

import numpy as np
import torch
from scipy.special import log_softmax

from mmseg_uncert.models.calibration import CalibrationSet


def _overconfident(seed: int, images: int = 3, classes: int = 4, size=(12, 16),
                   sharpness: float = 4.0, ignore_fraction: float = 0.2,
                   noise: float = 1.0):
    """Logits that favour the true class in 70% of pixels, too sharply; a
    fifth of the pixels labelled 255 and given wild logits."""
    g = np.random.default_rng(seed)
    out = []
    for _ in range(images):
        label = g.integers(0, classes, size)
        guess = np.where(g.random(size) < 0.7, label, g.integers(0, classes, size))
        logits = g.normal(0, noise, (classes, *size)) + sharpness * np.eye(classes)[guess].transpose(2, 0, 1)
        ignored = g.random(size) < ignore_fraction
        label[ignored] = 255
        logits[:, ignored] = g.normal(0, 50, (classes, ignored.sum()))
        image = g.normal(0, 1, (3, *size))
        out.append((logits.astype(np.float32), label, image.astype(np.float32)))
    return out


def _cache(tmp_path, images, name='val') -> CalibrationSet:
    data = CalibrationSet(str(tmp_path / name), name)
    for logits, label, image in images:
        data.add(torch.from_numpy(logits), torch.from_numpy(label), torch.from_numpy(image))
    return data


def _valid(images):
    """The valid pixels' logits (N, C) and labels, over every image."""
    z = np.concatenate([lg.reshape(lg.shape[0], -1).T[lb.reshape(-1) != 255]
                        for lg, lb, _ in images]).astype(np.float64)
    y = np.concatenate([lb.reshape(-1)[lb.reshape(-1) != 255] for _, lb, _ in images])
    return z, y


def _naive_nll(z, y):
    return -log_softmax(z, 1)[np.arange(len(y)), y].mean()
