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
from .stored_anomaly_maps import StoredAnomalyMaps
from .sample_checks import check_values, checked_maps
from .summed_metric import SummedMetric

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
      the whole run pooled; ``AUPRC`` = Σ_n (R_n − R_{n−1}) P_n from the
      (recall 0, precision 1) point, i.e. average precision, as the
      benchmark's code computes it since August 2023 (road-anomaly-benchmark
      commit 5a08be0; before, ``np.trapz(precision, recall)``), and ``FPR95``,
      the false-positive rate at the first threshold (from the top) whose
      recall reaches 95% (the benchmark's ``searchsorted(tpr, 0.95)``); then
      the component-level ``sIoU`` (mean over every ground-truth component of
      the run), ``PPV`` (mean over every predicted component) and ``mean_F1``
      (mean of F1_τ, τ = 0.25, 0.30, ..., 0.75, over counts summed over the
      run), and ``threshold``, the δ of the prediction ``score > δ`` they were
      computed on (see
      :func:`~mmseg_uncert.evaluation.anomaly_functional.component_scores`).
    * ``protocol='fishyscapes'`` (Blum et al., "The Fishyscapes Benchmark",
      IJCV 2021; its ``bdlb`` evaluation): pixels pooled the same way;
      ``AP`` (average precision, scikit-learn's ``average_precision_score``,
      as ``bdlb`` computes it), ``AUROC`` (trapezoid) and ``FPR95`` (first
      threshold with recall ≥ 95%), plus the same component-level keys, with
      which SegmentMeIfYouCan also scores Fishyscapes Lost & Found.
    * ``protocol='streethazards'`` (Hendrycks et al., "Scaling
      Out-of-Distribution Detection for Real-World Settings", ICML 2022; its
      ``eval_ood.py``): ``AUROC`` (scikit-learn's ``roc_auc_score``),
      ``AUPR`` (``average_precision_score``) and ``FPR95`` (at the threshold
      whose recall is *nearest* 95%, ``anom_utils.fpr_and_fdr_at_recall``)
      of each image that has both anomaly and in-distribution pixels,
      averaged over those images; ``streethazards/num_images`` counts them.

    The components' threshold δ is SegmentMeIfYouCan's: the best pixel F1 on
    the run's pooled curve (the highest among equals), known after the last
    image, so each image's ground truth and scores wait in a temporary
    directory (``TMPDIR``) until then; ``component_thresholds`` fixes δ and
    stores nothing. Components under ``min_pred_component_size`` (predicted)
    or ``min_gt_component_size`` (ground truth, void) pixels are left out, as
    in the benchmark (500 and 100 in its anomaly track, 50 and 10 in its
    obstacle track). Pixel curves come from relative-width score histograms
    (:func:`~mmseg_uncert.evaluation.functional.score_bins`); a run without
    anomaly pixels gives NaN with a warning; DDP's repeated sample is
    dropped. Details: docs/components/anomaly_metric.md.

    Args:
        protocol: ``'smiyc'``, ``'fishyscapes'`` or ``'streethazards'``.
        scores: score names to evaluate.
        component_metrics: compute sIoU, PPV and mean F1 (smiyc/fishyscapes;
            the costly part: connected components, and the stored maps).
        component_thresholds: a fixed δ per score name, in the score's units;
            scores without one get the benchmark's best-F1 choice.
        min_gt_component_size: smaller ground-truth components are void.
        min_pred_component_size: smaller predicted components are dropped.
        void_index: the ``gt_ood`` value of pixels not evaluated.
        collect_device, prefix: as in :class:`mmengine.evaluator.BaseMetric`.
    """

    stripe_pixels: int = 2**16

    def __init__(self,
                 protocol: str = 'smiyc',
                 scores: Sequence[str] = BUILTIN_SCORES,
                 component_metrics: bool = True,
                 component_thresholds: dict[str, float] | None = None,
                 min_gt_component_size: int = 100,
                 min_pred_component_size: int = 500,
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
        self.void_index = void_index
        self._num_classes: int | None = None
        #: the scores whose component threshold is the run's best F1
        self._curve_chosen = tuple(s for s in self.scores
                                   if s not in self.component_thresholds)
        # the stored maps of this rank's samples (see the class docstring)
        self._stored = StoredAnomalyMaps(self._curve_chosen, void_index,
                                         min_gt_component_size, min_pred_component_size)
        #: per score, the run's exact best-F1 threshold t (``score >= t``)
        self._best_thresholds: dict[str, float] = {}

    # ------------------------------------------------------------ per sample
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
        check_values(gt, (gt != 0) & (gt != 1) & (gt != self.void_index), img,
                     'gt_ood has values', f'(expected 0: in-distribution, 1: anomaly, '
                     f'or void_index {self.void_index})', 'set void_index to the void '
                     'value of your masks or fix them')
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
            if not F.all_finite(logits):
                raise ValueError(f'image {img}: seg_logits has NaN or Inf '
                                 f'values; the model diverged or its output '
                                 f'is broken')
            out.update(A.builtin_scores(logits, wanted, self.stripe_pixels))
        out.update(checked_maps(available, [s for s in self.scores if s not in out],
                                shape, img, device, 'gt_ood'))
        return out

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
            gt_numpy = gt.to(torch.uint8).cpu().numpy()
            gt_components = A.ground_truth_components(
                gt_numpy, self.min_gt_component_size, self.void_index)
            sums['num_gt_components'] = torch.tensor(float(gt_components.count),
                                                     dtype=torch.float64)
        both = bool(anomaly.any()) and bool((valid & ~anomaly).any())
        for name in self.scores:
            histogram = F.two_class_histogram(scores[name][valid], anomaly[valid],
                                              F.is_signed(name))
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
            if gt_components is not None and name in self.component_thresholds:
                prediction = (scores[name] > self.component_thresholds[name]).cpu().numpy()
                sums[f'components/{name}'] = torch.from_numpy(A.component_counts(
                    A.component_scores(gt_components, prediction,
                                       self.min_pred_component_size)))
        if self.component_metrics and self._curve_chosen:
            self._stored.store(gt_numpy, scores)
        sums['num_samples'] = torch.ones((), dtype=torch.float64)
        return sums

    # ------------------------------------------- the best-F1 threshold's maps
    def start_run(self) -> None:
        super().start_run()
        self._stored.reset()

    def _fold_latest(self, keep: bool) -> None:
        self._stored.fold_latest(keep)  # the sampler's repeat: its maps go too
        super()._fold_latest(keep)

    def finish_rank(self) -> None:
        """Component counts of this rank's stored samples at the best-F1
        threshold of the run's pooled curve (every rank's pixels)."""
        if not (self.component_metrics and self._curve_chosen):
            return
        totals = self.results[0] if self.results else {}
        self._best_thresholds = self._stored.best_f1_thresholds(totals)
        for name, row in self._stored.component_rows(self._best_thresholds).items():
            totals[f'components/{name}'] = torch.from_numpy(row)
        self._stored.reset()  # the maps are used: delete them

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
            if pos.sum() == 0:
                print_log(f'AnomalyMetric: no anomaly pixel (gt_ood == 1) in the '
                          f'run; the {p} metrics of {name!r} are NaN',
                          logger='current', level=logging.WARNING)
            curve = F.binary_curve_metrics(pos, neg)
            if p == 'smiyc':
                metrics[f'{p}/AUPRC/{name}'] = curve['aupr']
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
        if name in self.component_thresholds:
            threshold = self.component_thresholds[name]
        else:  # reported so that `score > δ` is `score >= t`
            t = np.float32(self._best_thresholds.get(name, math.nan))
            threshold = float(np.nextafter(t, np.float32(-np.inf)))
        row = total.get(f'components/{name}')
        if row is None:
            return dict(sIoU=math.nan, PPV=math.nan, mean_F1=math.nan,
                        threshold=threshold)
        out = A.component_metrics(row, total['num_gt_components'].item())
        out['threshold'] = threshold
        return out
