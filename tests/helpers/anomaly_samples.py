"""Data samples with one anomaly score map, and AnomalyMetric runs over them."""
import numpy as np
import torch

import mmseg_uncert  # noqa: F401
from mmseg_uncert.evaluation import AnomalyMetric

VOID = 255


def _sample(gt: np.ndarray, score: np.ndarray, name: str = 'u',
            img: str = 'frame.png') -> dict:
    """A data sample as mmseg hands it to a metric, with one score map."""
    return dict(img_path=img,
                gt_ood=dict(data=torch.from_numpy(gt.astype(np.uint8))[None]),
                pred_uncertainty={name: torch.from_numpy(
                    score.astype(np.float32))})


def _metric(**kwargs) -> AnomalyMetric:
    kwargs.setdefault('scores', ['u'])
    kwargs.setdefault('min_gt_component_size', 0)
    kwargs.setdefault('min_pred_component_size', 0)
    return AnomalyMetric(**kwargs)


def _run(metric: AnomalyMetric, samples: list[dict]) -> dict:
    for sample in samples:
        metric.process({}, [sample])
    return metric.evaluate(len(samples))


def _random_run(seed: int, num_images: int = 4, shape=(24, 32)):
    """Images with void pixels and scores on multiples of 1/1024 (each its
    own histogram bin, so histogram curves equal exact ones)."""
    rng = np.random.default_rng(seed)
    gts, scores = [], []
    for _ in range(num_images):
        gt = (rng.random(shape) < 0.2).astype(np.uint8)
        gt[rng.random(shape) < 0.1] = VOID
        base = np.where(gt == 1, rng.integers(300, 1024, shape),
                        rng.integers(0, 800, shape))
        gts.append(gt)
        scores.append(base / 1024.0)
    return gts, scores
