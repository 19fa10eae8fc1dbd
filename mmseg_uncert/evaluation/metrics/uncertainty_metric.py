"""Calibration, misclassification, OOD and aleatoric-region metrics for mmseg."""
from __future__ import annotations

import functools
import json
import logging
import math
import mmap
import os
import os.path as osp
import threading
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
    """One long-lived pool per size, each thread with a single intra-op
    thread.

    The pool's threads are the parallelism: were their ops parallel too,
    every thread would start its own OpenMP team (more threads than cores,
    each with its own stack and allocator arena). ``torch.set_num_threads``
    sets the calling thread's OpenMP count and torch's default for threads
    not yet started, so each worker sets 1 for itself once and the caller's
    setting is put back after all of them have.
    """
    caller_threads = torch.get_num_threads()
    started = threading.Barrier(workers + 1)

    def single_threaded() -> None:
        torch.set_num_threads(1)
        started.wait()

    pool = ThreadPoolExecutor(workers, thread_name_prefix='uncertainty-metric',
                              initializer=single_threaded)
    for _ in range(workers):  # start every thread now
        pool.submit(lambda: None)
    started.wait()
    torch.set_num_threads(caller_threads)
    return pool


def _zeros_outside_heap(*size: int, dtype: torch.dtype = torch.float64
                        ) -> Tensor:
    """Zeros in a private memory map of their own.

    For the metric's long-lived buffers. Allocated on the C heap, they would
    sit among the model's large short-lived tensors and pin the heap's top,
    so that memory freed above them could not go back to the system. A map
    of its own is outside the heap and is unmapped when the tensor is freed.
    """
    numel = math.prod(size)
    nbytes = max(numel, 1) * torch.empty((), dtype=dtype).element_size()
    buffer = mmap.mmap(-1, nbytes)  # anonymous maps start zeroed
    return torch.frombuffer(buffer, dtype=dtype, count=numel).view(size)


def _class_dot(a: Tensor, b: Tensor) -> Tensor:
    """sum_c a_c * b_c over the class dim, one class map at a time (a
    product of the whole (C, H, W) maps would be a C x H x W temporary)."""
    out = a[0] * b[0]
    for c in range(1, a.shape[0]):
        out.addcmul_(a[c], b[c])
    return out


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

    Memory grows neither with the data set nor with the image size. Images
    are processed in stripes of about ``stripe_pixels`` pixels, shared out
    to one thread per intra-op thread of torch; each thread adds into its own
    sums in place and reuses its own buffers for the class × pixel maps, all
    allocated once, outside the C heap. With 19 classes and the default bins
    that is about 0.9 MiB of sums per thread plus 0.9 MiB of totals (see the
    benchmark in ``benchmarks/uncertainty_metric_vs_torchmetrics.py``).

    Under DDP each rank accumulates and the accumulators are summed; the one
    sample that mmengine's ``DefaultSampler`` repeats to even out ranks is
    recognised and dropped, so a multi-process run gives the numbers of a
    single process.

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
            the risk–coverage curves (PNG + JSON) of every score.
        collect_device, prefix: as in :class:`mmengine.evaluator.BaseMetric`.
    """

    #: pixels per stripe (rounded to whole patch rows): big enough that op
    #: overheads vanish, small enough that temporaries stay in cache and the
    #: per-thread buffers small (measured: 2**13 is 30% slower, 2**15 gains
    #: 10% for twice the memory)
    stripe_pixels: int = 2**14

    def __init__(self,
                 scores: Sequence[str] = BUILTIN_SCORES,
                 num_ece_bins: int = 15,
                 num_score_bins: int = 2**14,
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
        # Sums of the latest sample, one set per worker thread, kept apart
        # until the next sample arrives so that a sample repeated by the
        # sampler can be dropped. Allocated once and zeroed after each fold:
        # nothing of a histogram's size is allocated per sample or stripe.
        self._latest: list[dict[str, Tensor]] = []
        self._shapes: dict[str, tuple[int, ...]] = {}
        # per-worker buffers for the class x pixel maps of a stripe, reused
        # from stripe to stripe (the largest temporaries, kept off the heap)
        self._scratch: list[dict[str, Tensor]] = []

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

    def _layout(self, num_classes: int, extra: dict[str, Tensor]
                ) -> dict[str, tuple[int, ...]]:
        """Shape of every sum and histogram a sample contributes."""
        B, NB = self.num_ece_bins, self.num_score_bins
        layout: dict[str, tuple[int, ...]] = {
            key: (1, ) for key in ('n_pixels', 'n_valid', 'nll_sum', 'brier_sum')}
        # rows: wrong count, right count, confidence sum
        layout.update(ece=(3, B), ece_fine=(3, NB))
        # rows: count, probability sum, count of y = c; per class and bin
        layout['classwise'] = (3, num_classes, B)
        for name in self.scores:
            layout[f'score_sum/{name}'] = (1, )
            # row 0 counts the positives: wrong / inaccurate / OOD / ambiguous
            layout[f'mis/{name}'] = (2, NB)
            layout[f'patch/{name}'] = (2, NB)
            if 'gt_ood' in extra:
                layout[f'ood/{name}'] = (2, NB)
            if 'gt_aleatoric' in extra:
                layout[f'aleatoric/{name}'] = (2, NB)
        return layout

    def _latest_sums(self, workers: int, layout: dict[str, tuple[int, ...]],
                     img: str) -> list[dict[str, Tensor]]:
        """The per-worker sums of the latest sample, with every key of
        ``layout``. Each is flat with one spare element past its end, where
        pixels left out are sent (and dropped)."""
        known = self._shapes.get('classwise', layout['classwise'])
        if known != layout['classwise']:
            raise ValueError(
                f'UncertaintyMetric: seg_logits of image {img} have '
                f'{layout["classwise"][1]} classes, earlier images had '
                f'{known[1]}; evaluate one model on one data set per metric')
        self._shapes.update(layout)
        while len(self._latest) < workers:
            self._latest.append({})
            self._scratch.append({})
        for sums in self._latest[:workers]:
            for key, size in layout.items():
                if key not in sums:
                    sums[key] = _zeros_outside_heap(math.prod(size) + 1)
        return self._latest[:workers]

    def _fold_latest(self, keep: bool) -> None:
        """Add the latest sample's sums to this rank's totals (when ``keep``)
        and zero them for the next sample."""
        if keep and any(s.get('n_pixels', torch.zeros(1))[0] > 0
                        for s in self._latest):
            totals = self.results[0]
            for sums in self._latest:
                for key, size in self._shapes.items():
                    if key not in sums:  # a worker no sample has needed yet
                        continue
                    value = sums[key][:-1].view(size)
                    if key not in totals:
                        totals[key] = _zeros_outside_heap(*size)
                    totals[key] += value
        for sums in self._latest:
            for value in sums.values():
                value.zero_()

    def _add_sample(self, sample: dict) -> None:
        """Add one sample to the latest-sample sums, stripe by stripe so that
        temporary memory stays bounded whatever the image size."""
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
        # Whole patches per stripe, about ``stripe_pixels``: small, short-lived
        # temporaries. Ops on tensors this small run on one core, so stripes
        # are shared out to one thread per core, each with its own sums.
        rows = self.patch_size * max(
            1, self.stripe_pixels // (shape[1] * self.patch_size))
        stripes = [slice(y0, y0 + rows) for y0 in range(0, shape[0], rows)]
        workers = max(1, min(torch.get_num_threads(), len(stripes)))
        sums = self._latest_sums(workers, self._layout(logits.shape[0], extra),
                                 img)

        def run(worker: int) -> None:
            for part in stripes[worker::workers]:
                # the sum is finite iff every value is (but for overflow of
                # huge finite values, which the exact check then clears)
                if (not torch.isfinite(logits[:, part].sum())
                        and not torch.isfinite(logits[:, part]).all()):
                    raise ValueError(f'image {img}: seg_logits has NaN or Inf '
                                     f'values; the model diverged or its '
                                     f'output is broken')
                self._add_stripe(sums[worker], self._scratch[worker],
                                 logits[:, part], label[part],
                                 {k: v[part] for k, v in maps.items()},
                                 {k: v[part] for k, v in extra.items()})

        if workers == 1:
            run(0)
        else:
            list(_stripe_pool(workers).map(run, range(workers)))

    @staticmethod
    def _add(acc: dict[str, Tensor], key: str, index: Tensor,
             weights: Tensor | None = None, keep: Tensor | None = None) -> None:
        """acc[key][index] += weights (or 1), where ``keep`` is True.

        Pixels not kept go to the spare element past the end, which is
        dropped: cheaper than selecting them out of every map. Adding in
        place allocates nothing of the histogram's size.
        """
        target = acc[key]
        index = index.reshape(-1)
        if keep is not None:
            index = torch.where(keep.reshape(-1), index, target.numel() - 1)
        if weights is None:
            source = target.new_ones(()).expand(index.numel())
        else:
            source = weights.reshape(-1).to(torch.float64)
        target.index_add_(0, index, source)

    @staticmethod
    def _add_sum(acc: dict[str, Tensor], key: str, values: Tensor,
                 keep: Tensor | None = None) -> None:
        """acc[key] += the float64 sum of ``values`` (where ``keep``)."""
        acc[key][0] += (values if keep is None else values[keep]).double().sum()

    @staticmethod
    def _buffer(scratch: dict[str, Tensor], name: str, shape: torch.Size,
                dtype: torch.dtype) -> Tensor:
        """A reusable buffer of ``shape`` (contents undefined)."""
        numel = math.prod(shape)
        buffer = scratch.get(name)
        if buffer is None or buffer.numel() < numel or buffer.dtype != dtype:
            buffer = scratch[name] = _zeros_outside_heap(numel, dtype=dtype)
        return buffer[:numel].view(shape)

    def _add_stripe(self, acc: dict[str, Tensor], scratch: dict[str, Tensor],
                    logits: Tensor, label: Tensor, maps: dict[str, Tensor],
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
        # Per-pixel arithmetic in float32 (as the network's own output) on the
        # whole stripe; every sum and histogram accumulates in float64. The
        # class x pixel maps live in the worker's reused buffers; the smaller
        # temporaries are updated in place where they can, since the
        # allocator keeps, per thread, about what a stripe has allocated.
        logits = logits.float()
        shape = logits.shape
        prob = torch.softmax(logits, 0, out=self._buffer(
            scratch, 'prob', shape, torch.float32))
        # amax is a fast reduction over the class dim (max(0) with indices and
        # argmax are 10-30x slower); the prediction is then the first class
        # reaching it, as argmax picks: the largest of (C - c) where reached
        conf = prob.amax(0)
        rank_dtype = torch.uint8 if C < 256 else torch.int32
        first = torch.arange(C, 0, -1, dtype=rank_dtype).view(C, 1, 1)
        reached = torch.eq(prob, conf, out=self._buffer(
            scratch, 'mask', shape, torch.bool))
        pred = torch.mul(reached, first, out=self._buffer(
            scratch, 'rank', shape, rank_dtype)).amax(0).long().neg_().add_(C)
        y = torch.where(valid, label, 0).long()
        correct = pred == y
        # logsumexp z = z_pred - log p_pred, and p_pred >= 1/C keeps the log
        # tame: log p_y = z_y - logsumexp z is accurate for tiny p_y too
        log_sum_exp = logits.gather(0, pred[None])[0].sub_(conf.log())
        log_p_true = logits.gather(0, y[None])[0].sub_(log_sum_exp)
        p_true = prob.gather(0, y[None])[0]
        # Brier: sum_c (p_c - 1[y=c])^2 = sum_c p_c^2 - 2 p_y + 1
        brier = _class_dot(prob, prob).sub_(p_true, alpha=2).add_(1)
        scores = dict(maps)
        if 'max_prob' in self.scores:
            scores['max_prob'] = 1.0 - conf
        if 'entropy' in self.scores:
            # H = -sum_c p_c (z_c - logsumexp z) = logsumexp z - sum_c p_c z_c,
            # no log of C x N probabilities (the clamp removes float32
            # rounding below 0 where p is one-hot)
            scores['entropy'] = _class_dot(prob, logits).neg_().add_(
                log_sum_exp).clamp_(min=0)

        # no routing at all where every pixel is valid (the common case)
        keep = None if bool(valid.all()) else valid
        self._add_sum(acc, 'n_valid', valid.sum())
        self._add_sum(acc, 'nll_sum', log_p_true.neg_(), keep)
        self._add_sum(acc, 'brier_sum', brier, keep)
        conf64 = conf.double()
        for key, bins in (('ece', B), ('ece_fine', NB)):
            # rows: wrong count, right count, confidence sum
            idx = F.bin_index(conf, bins).add_(2 * bins)
            self._add(acc, key, idx, conf64, keep=keep)
            self._add(acc, key, idx.sub_(2 * bins).add_(correct, alpha=bins),
                      keep=keep)

        # Class-wise: count and probability sum per (class, bin). Most p_c
        # lie in bin 0 (below 1/B); only the others, about three per pixel,
        # are binned one by one, and bin 0 gets each class's totals minus
        # theirs (exact: integer counts, float64 sums).
        upper = torch.ge(prob, 1.0 / B, out=reached)  # its buffer, reused
        if keep is not None:
            upper &= keep
        at = torch.nonzero(upper.view(-1)).squeeze(1)  # = class * n + pixel
        upper_prob = prob.view(-1)[at]
        cls = at.div_(valid.numel(), rounding_mode='floor')
        idx = F.bin_index(upper_prob, B).add_(cls, alpha=B)
        upper_prob = upper_prob.double()
        self._add(acc, 'classwise', idx)
        self._add(acc, 'classwise', idx.add_(C * B), upper_prob)
        # (class by class: a float64 sum casts its input, one map at a time)
        n_kept = valid.numel() if keep is None else int(keep.sum())
        class_sums = torch.stack([
            (prob[c] if keep is None else prob[c][keep]).sum(dtype=torch.float64)
            for c in range(C)])
        classwise = acc['classwise']
        classwise[0:C * B:B] += n_kept - torch.bincount(cls, minlength=C)
        classwise[C * B:2 * C * B:B] += class_sums.sub_(
            torch.bincount(cls, weights=upper_prob, minlength=C))
        # and the count of y = c in the bin of p_y
        self._add(acc, 'classwise',
                  F.bin_index(p_true, B).add_(y, alpha=B).add_(2 * C * B),
                  keep=keep)

        wrong = ~correct & valid
        patch_acc, patch_valid = F.patch_means((~wrong).double(), valid,
                                               self.patch_size)
        accurate_patch = patch_acc >= 0.5
        in_dist = valid if ood is None else valid & ~ood
        for name in self.scores:
            score = scores[name]
            value_range = self._range(name, C)
            idx = F.bin_index(F.score_to_unit(score, value_range), NB)
            self._add_sum(acc, f'score_sum/{name}', score, keep)
            patch_score, _ = F.patch_means(score, valid, self.patch_size)
            patch_idx = F.bin_index(F.score_to_unit(patch_score, value_range), NB)
            # row 0 counts the positives: wrong / inaccurate / OOD / ambiguous
            self._add(acc, f'patch/{name}',
                      patch_idx.add_(accurate_patch, alpha=NB), keep=patch_valid)
            if ood is not None:
                self._add(acc, f'ood/{name}', idx, keep=ood)
                self._add(acc, f'ood/{name}', idx + NB, keep=valid & ~ood)
            if 'gt_aleatoric' in extra:
                clean = extra['gt_aleatoric'] <= 0
                self._add(acc, f'aleatoric/{name}',
                          idx + NB * clean.long(), keep=in_dist)
            self._add(acc, f'mis/{name}', idx.add_(correct, alpha=NB), keep=keep)

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Fold the previous sample into this rank's totals, then compute the
        sums of each new one."""
        if not self.results:
            self.results.append({})
            self._fold_latest(keep=False)
        for sample in data_samples:
            self._fold_latest(keep=True)
            self._add_sample(sample)

    def evaluate(self, size: int) -> dict:
        """Drop the sampler's repeated sample on this rank, then reduce."""
        if self.results:
            rank, world_size = get_dist_info()
            per_rank = -(-size // world_size)
            last_position = rank + (per_rank - 1) * world_size
            self._fold_latest(keep=last_position < size)
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
            curve = plot_risk_coverage(wrong, right, name, osp.join(
                self.output_dir, f'risk_coverage_{name}.png'))
            with open(osp.join(self.output_dir, f'risk_coverage_{name}.json'),
                      'w') as f:
                json.dump(curve, f)
