"""Calibration, misclassification, OOD and aleatoric-region metrics for mmseg."""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import os.path as osp
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import torch
from mmengine.dist import get_dist_info
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from torch import Tensor

from mmseg.registry import METRICS

from .. import functional as F
from ...visualization import plot_reliability_diagram, plot_risk_coverage

BUILTIN_SCORES = ('max_prob', 'entropy')


@functools.lru_cache(maxsize=None)
def _stripe_pool(workers: int) -> ThreadPoolExecutor:
    """One long-lived pool per size: threads (and their allocator arenas)
    are reused from image to image instead of being made anew."""
    return ThreadPoolExecutor(workers, thread_name_prefix='uncertainty-metric')


def _merge(into: dict[str, Tensor], other: dict[str, Tensor]) -> None:
    for key, value in other.items():
        if key in into:
            into[key] += value
        else:
            into[key] = value.clone()


@METRICS.register_module()
class UncertaintyMetric(BaseMetric):
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
    float32, as the network's output, and summed in float64, so ECE, NLL and
    Brier are exact sums; ranking metrics come from ``num_score_bins``
    histogram bins per score (see :mod:`mmseg_uncert.evaluation.functional`).
    Memory grows neither with the data set nor with the image size: images
    are processed in stripes of about 2**14 pixels. Under DDP each rank
    accumulates and the accumulators are summed; the one sample that mmengine's ``DefaultSampler``
    repeats to even out ranks is recognised and dropped, so a multi-process
    run gives the numbers of a single process.

    Args:
        scores: score names to evaluate.
        num_ece_bins: equal-width confidence bins for ECE/MCE/cwECE, and the
            number of equal-mass bins for aECE.
        num_score_bins: histogram bins per score (at least 2**14).
        score_ranges: known ``(low, high)`` range of a ``pred_uncertainty``
            score; others are mapped by the unbounded transform.
        pavpu_thresholds: uncertainty threshold per score; a score without one
            uses its mean over all valid pixels.
        patch_size: patch side for the patch-level PAvPU.
        ignore_index: label to leave out.
        output_dir: where to write the reliability diagram (PNG + JSON) and
            the risk–coverage curves (PNG) of every score.
        collect_device, prefix: as in :class:`mmengine.evaluator.BaseMetric`.
    """

    def __init__(self,
                 scores: Sequence[str] = BUILTIN_SCORES,
                 num_ece_bins: int = 15,
                 num_score_bins: int = 2**16,
                 score_ranges: dict[str, tuple[float, float]] | None = None,
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
        if num_score_bins < 2**14:
            raise ValueError(f'UncertaintyMetric: num_score_bins must be at '
                             f'least 2**14, got {num_score_bins}')
        if num_ece_bins < 1 or patch_size < 1:
            raise ValueError('UncertaintyMetric: num_ece_bins and patch_size '
                             'must be positive')
        self.scores = tuple(scores)
        self.num_ece_bins = num_ece_bins
        self.num_score_bins = num_score_bins
        self.score_ranges = dict(score_ranges or {})
        self.pavpu_thresholds = dict(pavpu_thresholds or {})
        self.patch_size = patch_size
        self.ignore_index = ignore_index
        self.output_dir = output_dir
        # the statistics of the latest sample are kept apart until the next
        # one arrives, so a sample repeated by the sampler can be dropped
        self._pending: dict[str, Tensor] | None = None

    # ------------------------------------------------------------ per sample
    def _score_maps(self, sample: dict, shape: tuple[int, int]) -> dict[str, Tensor]:
        """The requested ``pred_uncertainty`` channels, checked, (H, W)."""
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
        out = {}
        for name in self.scores:
            if name in BUILTIN_SCORES:
                continue
            value = available[name]
            value = value.squeeze(0) if value.dim() == 3 else value
            if tuple(value.shape) != shape:
                raise ValueError(
                    f'image {img}: pred_uncertainty[{name!r}] has shape '
                    f'{tuple(value.shape)}, the prediction has {shape}')
            if not torch.isfinite(value).all():
                raise ValueError(f'image {img}: pred_uncertainty[{name!r}] '
                                 f'has NaN or Inf values')
            out[name] = value
        return out

    def _range(self, score: str, num_classes: int) -> tuple[float, float] | None:
        if score == 'max_prob':
            return (0.0, 1.0)
        if score == 'entropy':
            return (0.0, math.log(num_classes))
        return self.score_ranges.get(score)

    def _sample_stats(self, sample: dict) -> dict[str, Tensor] | None:
        """Sums and histograms of one sample, computed stripe by stripe so
        that temporary memory stays bounded whatever the image size."""
        logits = sample['seg_logits']['data']
        img = sample.get('img_path', '<unknown image>')
        label = sample['gt_sem_seg']['data'].squeeze(0).to(logits.device)
        shape = tuple(logits.shape[1:])
        if tuple(label.shape) != shape:
            raise ValueError(f'image {img}: gt_sem_seg has shape '
                             f'{tuple(label.shape)}, seg_logits has {shape}')
        maps = self._score_maps(sample, shape)
        extra = {key: sample[key]['data'].squeeze(0)
                 for key in ('gt_ood', 'gt_aleatoric') if sample.get(key)}
        # Whole patches per stripe, about 2**14 pixels: bounded temporaries.
        # Ops on tensors this small run on one core, so stripes are shared
        # out to one thread per core, each with its own sums.
        rows = self.patch_size * max(1, 2**14 // (shape[1] * self.patch_size))
        stripes = [slice(y0, y0 + rows) for y0 in range(0, shape[0], rows)]
        workers = max(1, min(torch.get_num_threads(), len(stripes)))

        def run(part_of_stripes: list[slice]) -> dict[str, Tensor]:
            acc: dict[str, Tensor] = {}
            for part in part_of_stripes:
                if not torch.isfinite(logits[:, part]).all():
                    raise ValueError(f'image {img}: seg_logits has NaN or Inf '
                                     f'values; the model diverged or its '
                                     f'output is broken')
                self._add_stripe(acc, logits[:, part], label[part],
                                 {k: v[part] for k, v in maps.items()},
                                 {k: v[part] for k, v in extra.items()})
            return acc

        shares = [stripes[i::workers] for i in range(workers)]
        if workers == 1:
            parts = [run(shares[0])]
        else:
            parts = list(_stripe_pool(workers).map(run, shares))
        total: dict[str, Tensor] = {}
        for part in parts:
            _merge(total, part)
        return total if total.get('n_pixels', 0) > 0 else None

    @staticmethod
    def _add(acc: dict[str, Tensor], key: str, shape: tuple[int, ...],
             index: Tensor, weights: Tensor | None = None,
             keep: Tensor | None = None) -> None:
        """acc[key].flatten()[index] += weights (or 1), where ``keep`` is True.

        Pixels not kept go to a spare bin past the end, which is dropped:
        cheaper than selecting them out of every map.
        """
        if key not in acc:
            acc[key] = torch.zeros(shape, dtype=torch.float64)
        size = acc[key].numel()
        index = index.reshape(-1)
        if keep is not None:
            index = torch.where(keep.reshape(-1), index, size)
        counts = torch.bincount(
            index, weights=None if weights is None else weights.reshape(-1).double(),
            minlength=size + 1)
        acc[key].view(-1).add_(counts[:size])

    @staticmethod
    def _add_sum(acc: dict[str, Tensor], key: str, values: Tensor,
                 keep: Tensor | None = None) -> None:
        """acc[key] += the float64 sum of ``values`` (where ``keep``)."""
        total = (values if keep is None else values[keep]).double().sum()
        acc[key] = acc[key] + total if key in acc else total.reshape(1)

    def _add_stripe(self, acc: dict[str, Tensor], logits: Tensor,
                    label: Tensor, maps: dict[str, Tensor],
                    extra: dict[str, Tensor]) -> None:
        """Add one stripe of rows of a sample to its sums and histograms."""
        C = logits.shape[0]
        B, NB = self.num_ece_bins, self.num_score_bins
        valid = label != self.ignore_index
        ood = extra['gt_ood'].bool() if 'gt_ood' in extra else None
        n_pixels = valid.sum() + (ood.sum() if ood is not None else 0)
        if n_pixels == 0:
            return
        self._add_sum(acc, 'n_pixels', n_pixels)
        # per-pixel arithmetic in float32 (as the network's own output) on the
        # whole stripe; every sum and histogram accumulates in float64
        logits = logits.float()
        prob = torch.softmax(logits, dim=0)
        conf, pred = prob.max(0)
        scores = dict(maps)
        if 'max_prob' in self.scores:
            scores['max_prob'] = 1.0 - conf
        if 'entropy' in self.scores:
            scores['entropy'] = -(prob * torch.log(prob.clamp(min=1e-30))).sum(0)

        # calibration over valid pixels
        y = torch.where(valid, label, 0).long()
        correct = pred == y
        # NLL from log-softmax: accurate where p_y is close to 1
        log_p_true = torch.log_softmax(logits, 0).gather(0, y[None])[0]
        p_true = prob.gather(0, y[None])[0]
        # Brier: sum_c (p_c - 1[y=c])^2 = sum_c p_c^2 - 2 p_y + 1
        brier = (prob * prob).sum(0) - 2 * p_true + 1
        # no routing at all where every pixel is valid (the common case)
        keep = None if bool(valid.all()) else valid
        self._add_sum(acc, 'n_valid', valid.sum())
        self._add_sum(acc, 'nll_sum', -log_p_true, keep)
        self._add_sum(acc, 'brier_sum', brier, keep)
        for key, bins in (('ece', B), ('ece_fine', NB)):
            # rows: wrong count, right count, confidence sum
            idx = F.bin_index(conf, bins)
            self._add(acc, key, (3, bins), idx + bins * correct.long(), keep=keep)
            self._add(acc, key, (3, bins), idx + 2 * bins, conf, keep=keep)
        cw_idx = F.bin_index(prob, B) + (torch.arange(C) * B)[:, None, None]
        cw_keep = None if keep is None else keep.expand_as(cw_idx)
        self._add(acc, 'classwise', (3, C, B), cw_idx, keep=cw_keep)
        self._add(acc, 'classwise', (3, C, B), cw_idx + C * B, prob, keep=cw_keep)
        self._add(acc, 'classwise', (3, C, B),
                  cw_idx.gather(0, y[None]) + 2 * C * B,
                  keep=None if keep is None else keep[None])

        wrong = ~correct & valid
        patch_acc, patch_valid = F.patch_means((~wrong).double(), valid,
                                               self.patch_size)
        accurate_patch = (patch_acc >= 0.5).long()
        in_dist = valid if ood is None else valid & ~ood
        for name in self.scores:
            score = scores[name]
            value_range = self._range(name, C)
            idx = F.bin_index(F.score_to_unit(score, value_range), NB)
            # row 0 counts the positives: wrong / inaccurate / OOD / ambiguous
            self._add(acc, f'mis/{name}', (2, NB), idx + NB * correct.long(),
                      keep=keep)
            self._add_sum(acc, f'score_sum/{name}', score, keep)
            patch_score, _ = F.patch_means(score, valid, self.patch_size)
            patch_idx = F.bin_index(F.score_to_unit(patch_score, value_range), NB)
            self._add(acc, f'patch/{name}', (2, NB),
                      patch_idx + NB * accurate_patch, keep=patch_valid)
            if ood is not None:
                self._add(acc, f'ood/{name}', (2, NB), idx, keep=ood)
                self._add(acc, f'ood/{name}', (2, NB), idx + NB,
                          keep=valid & ~ood)
            if 'gt_aleatoric' in extra:
                clean = (extra['gt_aleatoric'] <= 0).long()
                self._add(acc, f'aleatoric/{name}', (2, NB), idx + NB * clean,
                          keep=in_dist)

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Fold each sample's sums and histograms into this rank's totals."""
        if not self.results:
            self.results.append({})
            self._pending = None
        for sample in data_samples:
            if self._pending is not None:
                _merge(self.results[0], self._pending)
            # a sample with no valid pixel adds nothing (but is still "latest")
            self._pending = self._sample_stats(sample) or {}

    def evaluate(self, size: int) -> dict:
        """Drop the sampler's repeated sample on this rank, then reduce."""
        if self.results:
            rank, world_size = get_dist_info()
            per_rank = -(-size // world_size)
            last_position = rank + (per_rank - 1) * world_size
            if self._pending is not None and last_position < size:
                _merge(self.results[0], self._pending)
            self._pending = None
        return super().evaluate(size)

    # -------------------------------------------------------------- reduction
    def compute_metrics(self, results: list) -> dict[str, float]:
        total: dict[str, Tensor] = {}
        for part in results:
            _merge(total, part)
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
        metrics['cwECE'] = float(torch.tensor(per_class).nanmean())
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
            unit = F.score_to_unit(torch.tensor(threshold),
                                   self._range(name, cw.shape[1]))
            t_bin = int(min(unit.item() * self.num_score_bins,
                            self.num_score_bins - 1))
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
            self._write_plots(total)
        return metrics

    @staticmethod
    def _ece_sums(rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(wrong, right, confidence sum) rows to (count, confidence sum,
        correct count) per bin."""
        wrong, right, conf_sum = rows
        return wrong + right, conf_sum, right

    def _write_plots(self, total: dict[str, Tensor]) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        count, conf_sum, correct_sum = self._ece_sums(total['ece'])
        diagram = plot_reliability_diagram(
            count, conf_sum, correct_sum,
            osp.join(self.output_dir, 'reliability_diagram.png'))
        with open(osp.join(self.output_dir, 'reliability_diagram.json'), 'w') as f:
            json.dump(diagram, f, indent=2)
        for name in self.scores:
            wrong, right = total[f'mis/{name}']
            plot_risk_coverage(wrong, right, name, osp.join(
                self.output_dir, f'risk_coverage_{name}.png'))
