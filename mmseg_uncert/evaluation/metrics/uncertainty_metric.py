"""Calibration, misclassification, OOD and aleatoric-region metrics for mmseg."""
from __future__ import annotations

import json
import logging
import math
import os
import os.path as osp
from typing import Sequence

import torch
from mmengine.logging import print_log
from torch import Tensor

from mmseg.registry import METRICS

from .. import functional as F
from ..functional import BUILTIN_SCORES
from .sample_checks import check_values, checked_maps
from .summed_metric import SummedMetric
from ..curves import reliability_diagram, risk_coverage_curve


@METRICS.register_module()
class UncertaintyMetric(SummedMetric):
    """Uncertainty quality of a segmentor, on every valid pixel.

    Reads each data sample's ``seg_logits`` (softmax gives p̄; an ensemble's
    ``log p̄`` works the same), ``gt_sem_seg``, and where present
    ``pred_uncertainty`` (named per-pixel score maps), ``gt_ood`` and
    ``gt_aleatoric``. Pixels labelled ``ignore_index`` are left out.

    Result keys (``s`` = each score name in ``scores``):

    * calibration: ``ECE``, ``MCE`` (top label, ``num_ece_bins`` equal bins:
      ECE = Σ_b n_b/N |acc_b − conf_b|, MCE = max_b |acc_b − conf_b|),
      ``cwECE`` (class-wise: mean over classes of the ECE of p_c against
      1[y = c]), ``aECE`` (equal-mass bins), ``NLL`` = −mean log p̄_y,
      ``Brier`` = mean Σ_c (p̄_c − 1[y = c])²;
    * misclassification detection, positive = wrong pixel: ``auroc/s``,
      ``aupr/s``, ``fpr95/s``, ``aurc/s``, ``eaurc/s``;
      ``pavpu/s``, ``p_accurate_certain/s``, ``p_uncertain_inaccurate/s`` on
      pixels and ``patch_pavpu/s`` … on 4×4 patches (a patch is accurate when
      at least half its valid pixels are, uncertain when its mean score is
      above the threshold);
    * with ``gt_ood``, positive = OOD pixel against valid in-distribution
      pixels: ``ood_auroc/s``, ``ood_aupr/s``, ``ood_fpr95/s`` (only when the
      run has OOD pixels);
    * with ``gt_aleatoric``, positive = ambiguous pixel (true label entropy
      > 0) against clean ones: ``aleatoric_auroc/s``.

    Scores: ``max_prob`` = 1 − max_c p̄_c, ``entropy`` = −Σ_c p̄_c log p̄_c,
    and any channel of ``pred_uncertainty`` (e.g. ``epistemic``, ``std``);
    a higher score means more uncertain.

    Every valid pixel counts (no sampling). Per-pixel values are computed in
    float32, as the network's output (float64 when given it), and summed in
    float64, so ECE, NLL and Brier are exact sums; ``max_prob`` and
    ``entropy`` keep their relative precision however confident the model
    (from the odds against the prediction, not as 1 − p). Ranking metrics
    come from score histograms whose bins are 2**-10 wide *relative* to the
    score from 9e-13 to 1.7e7 (2**-6 from float32's smallest normal number,
    1.2e-38, to 9e-13), and below 0 alike (see
    :func:`~mmseg_uncert.evaluation.functional.score_bins`); pixels in one
    bin tie, as equal scores do in scikit-learn. PAvPU calls a pixel
    uncertain when its score's bin lies above the threshold's bin.

    Any device: each sample is reduced where its tensors are (the GPU the
    model ran on, or the CPU), stripe by stripe
    (:func:`~mmseg_uncert.evaluation.functional.add_stripe_sums`), and only its
    sums and histograms (a score histogram row is 0.55 MiB for the built-in
    scores, 1.1 MiB for a model's map)
    move to the CPU, where the run's totals are kept, as mmseg's
    ``IoUMetric`` does with its per-sample histograms. Memory grows neither
    with the data set nor with the image size (see
    ``benchmarks/uncertainty_metric_vs_torchmetrics.py``).

    Under DDP each rank accumulates and the accumulators are summed; the one
    sample that mmengine's ``DefaultSampler`` repeats to even out ranks is
    recognised and dropped, so a multi-process run gives the numbers of a
    single process.

    Args:
        scores: score names to evaluate.
        num_ece_bins: equal-width confidence bins for ECE/MCE/cwECE, and the
            number of equal-mass bins for aECE.
        pavpu_thresholds: uncertainty threshold per score; a score without one
            uses its mean over all valid pixels.
        patch_size: patch side for the patch-level PAvPU.
        ignore_index: label to leave out.
        output_dir: where to write the reliability diagram's and every
            score's risk–coverage curve's data (JSON;
            :func:`mmseg_uncert.visualization.plot_metric_curves` draws them,
            as this package's ``tools/test.py --out`` does).
        collect_device, prefix: as in :class:`mmengine.evaluator.BaseMetric`.
    """

    #: pixels per stripe (rounded to whole patch rows): big enough that op
    #: overheads vanish and torch's elementwise ops run on every core, small
    #: enough that the class x pixel temporaries stay small (19 classes: about
    #: 5 MiB each). Measured on 2 cores: 2**15 is 15% slower; 2**17 was no
    #: faster and raised the benchmark's peak memory to 84 MiB (2**16: 44 to
    #: 58 MiB over four runs).
    stripe_pixels: int = 2**16

    def __init__(self,
                 scores: Sequence[str] = BUILTIN_SCORES,
                 num_ece_bins: int = 15,
                 pavpu_thresholds: dict[str, float] | None = None,
                 patch_size: int = 4,
                 ignore_index: int = 255,
                 output_dir: str | None = None,
                 collect_device: str = 'cpu',
                 prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if not scores:
            raise ValueError('UncertaintyMetric: scores is empty; give at least '
                             f'one of {BUILTIN_SCORES} or a pred_uncertainty '
                             'channel name')
        if num_ece_bins < 1 or patch_size < 1:
            raise ValueError('UncertaintyMetric: num_ece_bins and patch_size '
                             'must be positive')
        self.scores = tuple(scores)
        self.num_ece_bins = num_ece_bins
        self.pavpu_thresholds = dict(pavpu_thresholds or {})
        self.patch_size = patch_size
        self.ignore_index = ignore_index
        self.output_dir = output_dir
        self._num_classes: int | None = None

    # ------------------------------------------------------------ per sample
    def _score_maps(self, sample: dict, shape: tuple[int, int],
                    device: torch.device) -> dict[str, Tensor]:
        """The requested ``pred_uncertainty`` channels, checked, (H, W), on
        ``device``."""
        maps = sample.get('pred_uncertainty') or {}
        img = sample.get('img_path', '<unknown image>')
        available = {name: value for name, value in maps.items()
                     if isinstance(value, Tensor)}
        missing = [s for s in self.scores
                   if s not in BUILTIN_SCORES and s not in available]
        if missing:
            raise ValueError(
                f'UncertaintyMetric: unknown score(s) {missing} for image {img}; '
                f'available: {sorted(set(BUILTIN_SCORES) | set(available))}')
        return checked_maps(available, [s for s in self.scores if s not in BUILTIN_SCORES],
                            shape, img, device, 'the prediction')

    def sample_sums(self, sample: dict) -> dict[str, Tensor]:
        """The sums and histograms of one data sample, on the CPU.

        Computed where the sample's ``seg_logits`` are (labels and maps on
        another device are brought there), stripe by stripe so that
        temporary memory stays bounded whatever the image size.
        """
        logits = sample['seg_logits']['data']
        img = sample.get('img_path', '<unknown image>')
        num_classes, *shape = logits.shape
        shape = tuple(shape)
        if self._num_classes is not None and num_classes != self._num_classes:
            raise ValueError(
                f'UncertaintyMetric: seg_logits of image {img} have '
                f'{num_classes} classes, earlier images had '
                f'{self._num_classes}; evaluate one model on one data set per '
                f'metric')
        self._num_classes = num_classes
        label = sample['gt_sem_seg']['data'].squeeze(0).to(logits.device)
        if tuple(label.shape) != shape:
            raise ValueError(f'image {img}: gt_sem_seg has shape '
                             f'{tuple(label.shape)}, seg_logits has {shape}')
        check_values(label, ((label < 0) | (label >= num_classes))
                     & (label != self.ignore_index), img, 'gt_sem_seg has labels',
                     f'outside [0, {num_classes}) that are not ignore_index '
                     f'({self.ignore_index})', 'set ignore_index to the ignore label '
                     'of your data set or fix the annotations')
        maps = self._score_maps(sample, shape, logits.device)
        extra = {key: sample[key]['data'].squeeze(0).to(logits.device)
                 for key in ('gt_ood', 'gt_aleatoric') if sample.get(key)}
        # once for the image: a stripe is a strided view, which the check
        # copied first (2.4x as long in all, 2 CPU cores)
        if not F.all_finite(logits):
            raise ValueError(f'image {img}: seg_logits has NaN or Inf '
                             f'values; the model diverged or its output '
                             f'is broken')
        rows = self.patch_size * max(
            1, self.stripe_pixels // (shape[1] * self.patch_size))
        total: dict[str, Tensor] = {}
        for y0 in range(0, shape[0], rows):
            part = slice(y0, y0 + rows)
            F.add_stripe_sums(
                total, logits[:, part], label[part],
                {k: v[part] for k, v in maps.items()},
                extra['gt_ood'][part] if 'gt_ood' in extra else None,
                extra['gt_aleatoric'][part] if 'gt_aleatoric' in extra else None,
                scores=self.scores, num_ece_bins=self.num_ece_bins,
                patch_size=self.patch_size, ignore_index=self.ignore_index)
        F.per_score_histograms(total, self.scores)
        return {key: value.cpu() for key, value in total.items()}

    # -------------------------------------------------------------- reduction
    def compute_metrics(self, results: list) -> dict[str, float]:
        total = self.merged(results)
        if not total or total.get('n_valid', 0) == 0:
            print_log('UncertaintyMetric: no valid pixel in the whole run; '
                      'every metric is NaN', logger='current',
                      level=logging.WARNING)
            return {'ECE': math.nan, 'NLL': math.nan}
        n = total['n_valid']
        metrics: dict[str, float] = {}
        metrics['ECE'], metrics['MCE'] = F.calibration_errors(
            *self._ece_sums(total['ece']))
        cw = total['classwise']
        per_class = [F.calibration_errors(cw[0, c], cw[1, c], cw[2, c])[0]
                     for c in range(cw.shape[1])]
        metrics['cwECE'] = float(torch.tensor(per_class, dtype=torch.float64).nanmean())
        metrics['aECE'] = F.adaptive_calibration_error(
            *self._ece_sums(total['ece_fine']), num_bins=self.num_ece_bins)
        metrics['NLL'] = (total['nll_sum'] / n).item()
        metrics['Brier'] = (total['brier_sum'] / n).item()
        for name in self.scores:
            wrong, right = total[f'mis/{name}']
            for key, value in F.binary_curve_metrics(wrong, right).items():
                metrics[f'{key}/{name}'] = value
            for key, value in F.risk_coverage(wrong, right).items():
                metrics[f'{key}/{name}'] = value
            threshold = self.pavpu_thresholds.get(
                name, (total[f'score_sum/{name}'] / n).item())
            t_bin = int(F.score_bins(torch.tensor([threshold]), F.is_signed(name))[0])
            for key, value in F.pavpu(right, wrong, t_bin).items():
                metrics[f'{key}/{name}'] = value
            bad, good = total[f'patch/{name}']
            for key, value in F.pavpu(good, bad, t_bin).items():
                metrics[f'patch_{key}/{name}'] = value
            metrics[f'pavpu_threshold/{name}'] = threshold
            if f'ood/{name}' in total and total[f'ood/{name}'][0].sum() > 0:
                pos, neg = total[f'ood/{name}']
                for key, value in F.binary_curve_metrics(pos, neg).items():
                    metrics[f'ood_{key}/{name}'] = value
            if f'aleatoric/{name}' in total:
                pos, neg = total[f'aleatoric/{name}']
                metrics[f'aleatoric_auroc/{name}'] = F.binary_curve_metrics(
                    pos, neg)['auroc']
        if self.output_dir:
            self._write_curves(total)
        return metrics

    @staticmethod
    def _ece_sums(rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(wrong, right, confidence sum) rows to (count, confidence sum,
        correct count) per bin."""
        wrong, right, conf_sum = rows
        return wrong + right, conf_sum, right

    def _write_curves(self, total: dict[str, Tensor]) -> None:
        """The reliability diagram's and each score's risk–coverage data, as
        JSON in ``output_dir`` (drawn by
        :func:`mmseg_uncert.visualization.plot_metric_curves`)."""
        os.makedirs(self.output_dir, exist_ok=True)
        curves = {'reliability_diagram': reliability_diagram(*self._ece_sums(total['ece']))}
        for name in self.scores:
            curves[f'risk_coverage_{name}'] = risk_coverage_curve(*total[f'mis/{name}'])
        for file, data in curves.items():
            with open(osp.join(self.output_dir, f'{file}.json'), 'w') as f:
                json.dump(data, f, indent=2 if file == 'reliability_diagram' else None)
