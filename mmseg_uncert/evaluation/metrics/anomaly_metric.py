"""Anomaly segmentation as SegmentMeIfYouCan, Fishyscapes and StreetHazards
evaluate it."""
from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np
import torch
from mmengine.logging import print_log
from torch import Tensor

from mmseg.registry import METRICS

from .. import anomaly_functional as A
from .. import functional as F
from ..functional import BUILTIN_SCORES
from .summed_metric import SummedMetric
from .uncertainty_metric import checked_maps

#: protocol name -> the benchmark it follows
PROTOCOLS = ('smiyc', 'fishyscapes', 'streethazards')


@METRICS.register_module()
class AnomalyMetric(SummedMetric):
    """Anomaly segmentation metrics, each benchmark's own definitions.

    Reads each data sample's ``gt_ood`` (0 = in-distribution, 1 = anomaly,
    ``void_index`` = not evaluated) and an anomaly score per pixel, higher =
    more anomalous: ``max_prob`` = 1 − max_c p_c or ``entropy`` = −Σ_c p_c
    log p_c of ``seg_logits``, or any ``pred_uncertainty`` channel. The data
    sets of this package (``SegmentMeIfYouCanDataset``,
    ``FishyscapesLostAndFoundDataset``, ``StreetHazardsDataset``) give
    ``gt_ood`` through ``LoadUncertaintyAnnotations(keys=('ood',))`` and
    ``PackSegUncertaintyInputs``.

    Result keys are ``<protocol>/<metric>/<score>``:

    * ``protocol='smiyc'`` (Chan et al., "SegmentMeIfYouCan: A Benchmark for
      Anomaly Segmentation", NeurIPS 2021 Datasets and Benchmarks): pixels of
      the whole run pooled; ``AUPRC`` by the trapezoid rule over the
      precision-recall points (the benchmark's ``np.trapz(precision,
      recall)``, not scikit-learn's step-wise average precision; see
      :func:`~mmseg_uncert.evaluation.anomaly_functional.trapezoid_auprc`)
      and ``FPR95``, the false-positive rate at the first threshold (from
      the top) whose recall reaches 95% (the benchmark's
      ``searchsorted(tpr, 0.95)``, as ``binary_curve_metrics``' ``fpr95``);
      then the component-level ``sIoU`` (mean over every ground-truth
      component of the run), ``PPV`` (mean over every predicted component)
      and ``mean_F1`` (mean of F1_τ, τ = 0.25, 0.30, ..., 0.75, over counts
      summed over the run), and ``threshold``, the score δ that binarised the
      prediction for them (see
      :func:`~mmseg_uncert.evaluation.anomaly_functional.component_scores`).
    * ``protocol='fishyscapes'`` (Blum et al., "The Fishyscapes Benchmark",
      IJCV 2021; its ``bdlb`` evaluation): pixels pooled the same way;
      ``AP`` = Σ_n (R_n − R_{n−1}) P_n (scikit-learn's
      ``average_precision_score``, what ``bdlb`` computes), ``AUROC``
      (trapezoid) and ``FPR95`` (first threshold with recall ≥ 95%), plus the
      same component-level keys, with which SegmentMeIfYouCan also scores
      Fishyscapes Lost & Found.
    * ``protocol='streethazards'`` (Hendrycks et al., "Scaling
      Out-of-Distribution Detection for Real-World Settings", ICML 2022; its
      ``eval_ood.py``): ``AUROC`` (scikit-learn's ``roc_auc_score``),
      ``AUPR`` (``average_precision_score``) and ``FPR95`` (at the threshold
      whose recall is *nearest* 95%, ``anom_utils.fpr_and_fdr_at_recall``)
      of each image that has both anomaly and in-distribution pixels,
      averaged over those images; ``streethazards/num_images`` counts them.

    The threshold δ of the component metrics: SegmentMeIfYouCan
    (``MetricSegment.get_thresh_p_from_curve``) takes the threshold of the
    best pixel-level F1 on the run's pooled precision-recall curve and calls
    ``score > δ`` anomalous. One pass cannot know that threshold before the
    last image, so every image is scored at ``num_threshold_candidates``
    candidates δ_k = k / (K + 1) of the [0, 1]-mapped score (pixel called
    anomalous when its mapped score is ≥ δ_k), their component counts are
    added up, and the candidate with the best pooled pixel F1 is reported (the
    highest one among equals, as the benchmark's ``nanargmax`` over
    descending thresholds). ``component_thresholds`` fixes δ instead
    (``score > δ``, e.g. one chosen on a validation set). As in the
    benchmark, predicted components under ``min_pred_component_size`` pixels
    are dropped and ground-truth components under ``min_gt_component_size``
    pixels are void: 500 and 100 in its anomaly track (RoadAnomaly21,
    Fishyscapes Lost & Found), 50 and 10 in its obstacle track
    (RoadObstacle21).

    Pixel-level curves come from ``num_score_bins``-bin score histograms,
    pixels in one bin tying as equal scores do in scikit-learn (see
    :mod:`mmseg_uncert.evaluation.functional`; ``score_ranges`` as in
    :class:`~mmseg_uncert.evaluation.UncertaintyMetric`). Any device: scores
    and histograms are computed where the tensors are; only the histograms,
    the ground truth and, for the component metrics, one uint8 map per score
    (the number of candidates each pixel exceeds) move to the CPU, where
    scipy labels the components. The run keeps sums only, so memory does not
    grow with the data set; under DDP the sample that mmengine's
    ``DefaultSampler`` repeats to even out ranks is dropped, as
    :class:`~mmseg_uncert.evaluation.UncertaintyMetric` drops it.

    Args:
        protocol: ``'smiyc'``, ``'fishyscapes'`` or ``'streethazards'``.
        scores: score names to evaluate.
        component_metrics: compute sIoU, PPV and mean F1 (smiyc/fishyscapes;
            the costly part: connected components per candidate threshold).
        component_thresholds: a fixed δ per score name, in the score's units;
            scores without one get the benchmark's best-F1 choice.
        num_threshold_candidates: candidates for that choice (at most 255).
        min_gt_component_size: smaller ground-truth components are void.
        min_pred_component_size: smaller predicted components are dropped.
        num_score_bins: histogram bins per score (at least 2**14).
        score_ranges: known ``(low, high)`` range of a ``pred_uncertainty``
            score; others are mapped by the unbounded transform.
        void_index: the ``gt_ood`` value of pixels not evaluated.
        collect_device, prefix: as in :class:`mmengine.evaluator.BaseMetric`.
    """

    stripe_pixels: int = 2**16

    def __init__(self,
                 protocol: str = 'smiyc',
                 scores: Sequence[str] = BUILTIN_SCORES,
                 component_metrics: bool = True,
                 component_thresholds: dict[str, float] | None = None,
                 num_threshold_candidates: int = 50,
                 min_gt_component_size: int = 100,
                 min_pred_component_size: int = 500,
                 num_score_bins: int = 2**14,
                 score_ranges: dict[str, tuple[float, float]] | None = None,
                 void_index: int = 255,
                 collect_device: str = 'cpu',
                 prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if protocol not in PROTOCOLS:
            raise ValueError(f'AnomalyMetric: unknown protocol {protocol!r}; '
                             f'choose from {PROTOCOLS}')
        if not scores:
            raise ValueError('AnomalyMetric: scores is empty; give at least '
                             f'one of {BUILTIN_SCORES} or a pred_uncertainty '
                             'channel name')
        if num_score_bins < 2**14:
            raise ValueError(f'AnomalyMetric: num_score_bins must be at least '
                             f'2**14, got {num_score_bins}')
        if not 1 <= num_threshold_candidates <= 255:
            raise ValueError('AnomalyMetric: num_threshold_candidates must be '
                             f'in [1, 255] (a uint8 map per image holds them), '
                             f'got {num_threshold_candidates}')
        if void_index in (0, 1):
            raise ValueError(f'AnomalyMetric: void_index {void_index} is a '
                             f'gt_ood class (0 = in-distribution, 1 = '
                             f'anomaly); use e.g. 255')
        self.protocol = protocol
        self.scores = tuple(scores)
        self.component_metrics = component_metrics and protocol != 'streethazards'
        self.component_thresholds = dict(component_thresholds or {})
        unknown = set(self.component_thresholds) - set(self.scores)
        if unknown:
            raise ValueError(f'AnomalyMetric: component_thresholds names '
                             f'{sorted(unknown)}, which are not in scores '
                             f'{list(self.scores)}')
        self.min_gt_component_size = min_gt_component_size
        self.min_pred_component_size = min_pred_component_size
        self.num_score_bins = num_score_bins
        self.score_ranges = dict(score_ranges or {})
        self.void_index = void_index
        self.candidates = A.candidate_bins(num_threshold_candidates,
                                           num_score_bins)
        self._num_classes: int | None = None

    # ------------------------------------------------------------ per sample
    def _range(self, score: str) -> tuple[float, float] | None:
        if score == 'max_prob':
            return (0.0, 1.0)
        if score == 'entropy':
            return (0.0, math.log(self._num_classes))
        return self.score_ranges.get(score)

    def _ground_truth(self, sample: dict, img: str) -> Tensor:
        if not sample.get('gt_ood'):
            raise ValueError(
                f'AnomalyMetric: image {img} has no gt_ood; use a data set that '
                f'provides it (SegmentMeIfYouCanDataset, '
                f'FishyscapesLostAndFoundDataset, StreetHazardsDataset, '
                f'SyntheticStreetsDataset) with '
                f"dict(type='LoadUncertaintyAnnotations', keys=('ood', )) and "
                f"dict(type='PackSegUncertaintyInputs') in the test pipeline")
        gt = sample['gt_ood']['data']
        gt = gt.squeeze(0) if gt.dim() == 3 else gt
        outside = (gt != 0) & (gt != 1) & (gt != self.void_index)
        if outside.any():
            values = gt[outside].unique().tolist()[:10]
            raise ValueError(
                f'image {img}: gt_ood has values {values}; expected 0 '
                f'(in-distribution), 1 (anomaly) or void_index '
                f'({self.void_index}). Set void_index to the void value of '
                f'your masks or fix them')
        return gt

    def _scores(self, sample: dict, shape: tuple[int, int], img: str,
                device: torch.device) -> dict[str, Tensor]:
        """Every requested score map, (H, W), checked, on ``device``."""
        maps = sample.get('pred_uncertainty') or {}
        available = {name: value for name, value in maps.items()
                     if isinstance(value, Tensor)}
        logits = (sample.get('seg_logits') or {}).get('data')
        builtin = set(BUILTIN_SCORES) if logits is not None else set()
        missing = [s for s in self.scores if s not in builtin and s not in available]
        if missing:
            raise ValueError(
                f'AnomalyMetric: unknown score(s) {missing} for image {img}; '
                f'available: {sorted(builtin | set(available))}')
        out: dict[str, Tensor] = {}
        wanted = [s for s in self.scores if s in BUILTIN_SCORES]
        if wanted:
            num_classes = logits.shape[0]
            if self._num_classes is not None and num_classes != self._num_classes:
                raise ValueError(
                    f'AnomalyMetric: seg_logits of image {img} have '
                    f'{num_classes} classes, earlier images had '
                    f'{self._num_classes}; evaluate one model per metric')
            self._num_classes = num_classes
            if tuple(logits.shape[1:]) != shape:
                raise ValueError(f'image {img}: seg_logits has shape '
                                 f'{tuple(logits.shape[1:])}, gt_ood has {shape}')
            if not torch.isfinite(logits).all():
                raise ValueError(f'image {img}: seg_logits has NaN or Inf '
                                 f'values; the model diverged or its output '
                                 f'is broken')
            out.update(A.builtin_scores(logits, wanted, self.stripe_pixels))
        out.update(checked_maps(available, [s for s in self.scores if s not in out],
                                shape, img, device, 'gt_ood'))
        return out

    def _levels(self, name: str, score: Tensor, unit: Tensor) -> Tensor:
        """uint8 map: how many candidate thresholds each pixel reaches (a
        fixed δ: 1 where score > δ)."""
        if name in self.component_thresholds:
            return (score > self.component_thresholds[name]).to(torch.uint8)
        bins = F.bin_index(unit, self.num_score_bins)
        return torch.bucketize(bins, self.candidates.to(bins.device),
                               right=True).to(torch.uint8)

    def sample_sums(self, sample: dict) -> dict[str, Tensor]:
        """The additive statistics of one data sample, on the CPU."""
        img = sample.get('img_path', '<unknown image>')
        logits = (sample.get('seg_logits') or {}).get('data')
        gt = self._ground_truth(sample, img)
        device = logits.device if logits is not None else gt.device
        gt = gt.to(device)
        shape = tuple(gt.shape)
        scores = self._scores(sample, shape, img, device)
        valid = gt != self.void_index
        anomaly = gt == 1
        sums: dict[str, Tensor] = {}
        gt_components = None
        if self.component_metrics:
            gt_components = A.ground_truth_components(
                gt.to(torch.uint8).cpu().numpy(), self.min_gt_component_size,
                self.void_index)
            sums['num_gt_components'] = torch.tensor(float(gt_components.count),
                                                     dtype=torch.float64)
        both = bool(anomaly.any()) and bool((valid & ~anomaly).any())
        for name in self.scores:
            unit = F.score_to_unit(scores[name], self._range(name))
            histogram = F.two_class_histogram(unit[valid], anomaly[valid],
                                              self.num_score_bins)
            if self.protocol == 'streethazards':
                if both:
                    pos, neg = histogram
                    curve = F.binary_curve_metrics(pos, neg)
                    sums[f'per_image/{name}'] = torch.tensor(
                        [curve['auroc'], curve['aupr'],
                         A.fpr_at_nearest_tpr(pos, neg), 1.0],
                        dtype=torch.float64)
                continue
            sums[f'pixel/{name}'] = histogram.cpu()
            if gt_components is not None:
                levels = self._levels(name, scores[name], unit).cpu().numpy()
                sums[f'components/{name}'] = torch.from_numpy(
                    self._component_rows(gt_components, levels,
                                         1 if name in self.component_thresholds
                                         else len(self.candidates)))
        sums['num_samples'] = torch.ones((), dtype=torch.float64)
        return sums

    def _component_rows(self, gt: A.GroundTruthComponents, levels: np.ndarray,
                        count: int) -> np.ndarray:
        """:func:`~mmseg_uncert.evaluation.anomaly_functional.component_counts`
        at each threshold (prediction = ``levels > k``)."""
        rows = []
        empty = None
        for k in range(count):
            prediction = levels > k
            if not prediction.any():
                # masks shrink as k grows: every later one is empty too
                if empty is None:
                    empty = A.component_counts(
                        A.component_scores(gt, prediction,
                                           self.min_pred_component_size))
                rows.extend([empty] * (count - k))
                break
            rows.append(A.component_counts(A.component_scores(
                gt, prediction, self.min_pred_component_size)))
        return np.stack(rows)

    # -------------------------------------------------------------- reduction
    def compute_metrics(self, results: list) -> dict[str, float]:
        total = self.merged(results)
        p = self.protocol
        if not total or total.get('num_samples', 0) == 0:
            print_log('AnomalyMetric: no sample in the run; every metric is '
                      'NaN', logger='current', level=logging.WARNING)
            return {f'{p}/FPR95/{name}': math.nan for name in self.scores}
        metrics: dict[str, float] = {}
        if p == 'streethazards':
            count = 0.0
            for name in self.scores:
                sums = total.get(f'per_image/{name}')
                count = 0.0 if sums is None else sums[3].item()
                for i, key in enumerate(('AUROC', 'AUPR', 'FPR95')):
                    metrics[f'{p}/{key}/{name}'] = (
                        sums[i].item() / count if count else math.nan)
            metrics[f'{p}/num_images'] = count
            if not count:
                print_log('AnomalyMetric: no image has both anomaly and '
                          'in-distribution pixels; the StreetHazards metrics '
                          'are NaN', logger='current', level=logging.WARNING)
            return metrics
        for name in self.scores:
            pos, neg = total[f'pixel/{name}']
            curve = F.binary_curve_metrics(pos, neg)
            if p == 'smiyc':
                metrics[f'{p}/AUPRC/{name}'] = A.trapezoid_auprc(pos, neg)
            else:
                metrics[f'{p}/AP/{name}'] = curve['aupr']
                metrics[f'{p}/AUROC/{name}'] = curve['auroc']
            metrics[f'{p}/FPR95/{name}'] = curve['fpr95']
            if self.component_metrics:
                metrics.update({f'{p}/{key}/{name}': value for key, value in
                                self._components(total, name, pos, neg).items()})
        return metrics

    def _components(self, total: dict[str, Tensor], name: str, pos: Tensor,
                    neg: Tensor) -> dict[str, float]:
        """The component metrics at the fixed or best-F1 threshold."""
        rows = total[f'components/{name}']
        if name in self.component_thresholds:
            best, threshold = 0, self.component_thresholds[name]
        else:
            best = A.best_f1_candidate(A.pixel_f1(pos, neg, self.candidates))
            if best < 0:
                return dict(sIoU=math.nan, PPV=math.nan, mean_F1=math.nan,
                            threshold=math.nan)
            threshold = A.unit_to_score(
                self.candidates[best].item() / self.num_score_bins,
                self._range(name))
        out = A.component_metrics(rows[best], total['num_gt_components'].item())
        out['threshold'] = threshold
        return out
