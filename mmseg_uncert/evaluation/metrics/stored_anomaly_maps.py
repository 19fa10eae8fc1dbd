"""The score maps an anomaly metric keeps until the run's best-F1 threshold is
known: SegmentMeIfYouCan computes its component metrics at that threshold,
on every frame's stored scores."""
from __future__ import annotations

import math
import os
import os.path as osp
import tempfile
from typing import Sequence

import numpy as np
import torch
from mmengine.dist import all_gather_object, all_reduce
from torch import Tensor

from .. import anomaly_functional as A
from .. import functional as F


class StoredAnomalyMaps:
    """One rank's samples' ground truth (uint8) and float32 score maps, in a
    temporary directory (under ``TMPDIR``; 1 byte per pixel for the ground
    truth and 4 per score), until :meth:`component_rows` has used them.

    Args:
        names: the scores whose threshold is the run's best F1.
        void_index: the ``gt_ood`` value of pixels not evaluated.
        min_gt_component_size, min_pred_component_size: as the benchmark's.
    """

    def __init__(self, names: Sequence[str], void_index: int,
                 min_gt_component_size: int, min_pred_component_size: int) -> None:
        self.names = tuple(names)
        self.void_index = void_index
        self.min_gt_component_size = min_gt_component_size
        self.min_pred_component_size = min_pred_component_size
        self._dir: tempfile.TemporaryDirectory | None = None
        self._paths: list[str] = []
        self._latest: str | None = None

    def reset(self) -> None:
        """Forget (and delete) every stored map."""
        self._paths, self._latest = [], None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def store(self, gt: np.ndarray, scores: dict[str, Tensor]) -> None:
        """Write one sample's ground truth and scores; it counts once
        :meth:`fold_latest` keeps it."""
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix='anomaly_metric_')
        path = osp.join(self._dir.name, f'{len(self._paths)}.npz')
        np.savez(path, gt=gt, **{name: scores[name].to(torch.float32).cpu().numpy()
                                 for name in self.names})
        self._latest = path

    def fold_latest(self, keep: bool) -> None:
        """Keep the latest sample's maps, or drop them (the sampler's repeat
        of a sample, whose sums are dropped too)."""
        if self._latest is not None:
            if keep:
                self._paths.append(self._latest)
            else:
                os.remove(self._latest)
            self._latest = None

    def best_f1_thresholds(self, totals: dict[str, Tensor]) -> dict[str, float]:
        """Per score, the exact best-F1 threshold t of the run (``score >= t``):
        every rank's pixel histograms (``pixel/<name>`` of ``totals``) summed
        name the bins where it can lie, and the distinct scores of every
        rank's stored pixels in those bins, with their counts, give it (a
        collective op)."""
        pooled, candidates = {}, {}
        for name in self.names:
            size = F.num_score_bins(F.is_signed(name))
            # a copy: this rank's own histograms are collected as they are
            pooled[name] = totals.get(f'pixel/{name}',
                                      torch.zeros(2, size, dtype=torch.float64)).clone()
            all_reduce(pooled[name], op='sum')
            candidates[name] = np.zeros(size, dtype=bool)
            candidates[name][A.f1_candidate_bins(*pooled[name]).numpy()] = True
        mine = {name: (np.zeros(0, np.float32), np.zeros(0), np.zeros(0))
                for name in self.names}
        for path in self._paths:
            with np.load(path) as stored:
                valid = stored['gt'] != self.void_index
                for name in self.names:
                    bins = F.score_bins(torch.from_numpy(stored[name]), F.is_signed(name))
                    keep = valid & candidates[name][bins.numpy()]
                    anomaly = (stored['gt'][keep] == 1).astype(np.float64)
                    mine[name] = A.merge_counts(
                        mine[name], (stored[name][keep], anomaly, 1.0 - anomaly))
        every = all_gather_object(mine)
        thresholds = {}
        for name in self.names:
            values, num_anomaly, num_other = A.merge_counts(*(rank[name] for rank in every))
            thresholds[name] = A.best_f1_threshold(*pooled[name], values, num_anomaly,
                                                   num_other, F.is_signed(name))
        return thresholds

    def component_rows(self, thresholds: dict[str, float]) -> dict[str, np.ndarray]:
        """Per score, the component counts of the stored samples segmented at
        its threshold (``score >= t``; none where t is NaN: no anomaly pixel
        in the run)."""
        rows: dict[str, np.ndarray] = {}
        for path in self._paths:
            with np.load(path) as stored:
                gt = A.ground_truth_components(stored['gt'], self.min_gt_component_size,
                                               self.void_index)
                for name, t in thresholds.items():
                    if math.isnan(t):
                        continue
                    row = A.component_counts(A.component_scores(
                        gt, stored[name] >= np.float32(t), self.min_pred_component_size))
                    rows[name] = rows[name] + row if name in rows else row
        return rows
