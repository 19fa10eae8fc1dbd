"""Pure maths of the anomaly-segmentation benchmarks' own protocols.

:class:`~mmseg_uncert.evaluation.AnomalyMetric` reduces every image to the
small statistics below and adds them up over a run. Pixel-level curves come
from the score histograms of :mod:`mmseg_uncert.evaluation.functional` (``two_class_histogram``,
``binary_curve_metrics``); what is new here is what the benchmarks define
differently:

* :func:`fpr_at_nearest_tpr`: StreetHazards' FPR95, taken at the threshold
  whose recall is *nearest* 0.95 (SegmentMeIfYouCan and Fishyscapes take the
  first threshold whose recall reaches 0.95, ``binary_curve_metrics``'
  ``fpr95``);
* :func:`best_f1_threshold`: SegmentMeIfYouCan's choice of the threshold
  that binarises the scores for its component metrics, the best pixel F1 of
  the run's pooled curve, exact: from the histograms, then from the
  distinct scores of the few bins where it can lie (:func:`f1_candidate_bins`,
  :func:`merge_counts`);
* the component-level metrics of SegmentMeIfYouCan (sIoU, PPV, F1 over
  sIoU/PPV thresholds) on connected components, with scipy.

References:
    Chan et al., "SegmentMeIfYouCan: A Benchmark for Anomaly Segmentation",
    NeurIPS 2021 Datasets and Benchmarks; its evaluation code
    (``road_anomaly_benchmark/metrics/instance_segmentation.py`` and
    ``pixel_classification*.py`` of the road-anomaly-benchmark repository).
    Rottmann et al., "Prediction Error Meta Classification in Semantic
    Segmentation", ICMLA 2020 (the adjusted IoU, sIoU).
    Hendrycks et al., "Scaling Out-of-Distribution Detection for Real-World
    Settings", ICML 2022 (StreetHazards; ``eval_ood.py``/``anom_utils.py``
    of the anomaly-seg repository).
    Blum et al., "The Fishyscapes Benchmark: Measuring Blind Spots in Semantic
    Segmentation", IJCV 2021 (``bdlb/fishyscapes/benchmark.py``).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from . import functional as F

#: SegmentMeIfYouCan's sIoU/PPV thresholds τ for F1: 0.25, 0.30, ..., 0.75,
#: the benchmark's own ``np.linspace`` grid, so that a value on a grid point
#: compares exactly as there.
SIOU_THRESHOLDS: tuple[float, ...] = tuple(np.linspace(0.25, 0.75, 11).tolist())

#: 8-connectivity, as the benchmark labels components.
_CONNECTIVITY = np.ones((3, 3), dtype=np.uint8)


# ------------------------------------------------------------------ scores
def builtin_scores(logits: Tensor, names: Sequence[str],
                   stripe_pixels: int = 2**16) -> dict[str, Tensor]:
    """``max_prob`` = 1 − max_c p_c and ``entropy`` = −Σ_c p_c log p_c maps
    (H, W) of logits (C, H, W), on their device.

    Computed by :func:`~mmseg_uncert.evaluation.functional.pixel_statistics`
    (the values :class:`~mmseg_uncert.evaluation.UncertaintyMetric` scores),
    a stripe of rows at a time so that the C x pixels temporaries stay small
    whatever the image size.
    """
    C, H, W = logits.shape
    dtype = torch.promote_types(logits.dtype, torch.float32)
    out = {name: torch.empty(H, W, dtype=dtype, device=logits.device)
           for name in names}
    rows = max(1, stripe_pixels // W)
    for y0 in range(0, H, rows):
        part = logits[:, y0:y0 + rows]
        h = part.shape[1]
        # the label only feeds quantities not used here
        dummy = torch.zeros(h * W, dtype=torch.long, device=logits.device)
        px = F.pixel_statistics(part.reshape(C, -1), dummy,
                                with_entropy='entropy' in names)
        if 'max_prob' in out:
            out['max_prob'][y0:y0 + h] = px.max_prob.view(h, W)
        if 'entropy' in out:
            out['entropy'][y0:y0 + h] = px.entropy.view(h, W)
    return out


# ------------------------------------------------------------ pixel level
def _at_or_above(histogram: Tensor) -> Tensor:
    """Per bin b, the count of bin b and every bin above it."""
    return torch.flip(torch.cumsum(histogram.flip(0), 0), (0, ))


def _curve(pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
    """Cumulative (tp, fp) from the highest non-empty bin down."""
    tp = torch.cumsum(pos.flip(0), 0)
    fp = torch.cumsum(neg.flip(0), 0)
    filled = (pos.flip(0) + neg.flip(0)) > 0
    return tp[filled], fp[filled]


def fpr_at_nearest_tpr(pos: Tensor, neg: Tensor, tpr_level: float = 0.95) -> float:
    """StreetHazards' FPR95: the false-positive rate at the threshold whose
    true-positive rate is nearest ``tpr_level`` (``anom_utils.py``'s
    ``fpr_and_fdr_at_recall``: ``argmin |recall − 0.95|``, a tie going to
    the higher recall). NaN without positives or without negatives."""
    n_pos, n_neg = pos.sum().item(), neg.sum().item()
    if n_pos == 0 or n_neg == 0:
        return math.nan
    tp, fp = _curve(pos, neg)
    # the reference stops the curve where recall first reaches 1
    full = int(torch.nonzero(tp >= n_pos)[0, 0])
    tp, fp = tp[:full + 1], fp[:full + 1]
    distance = (tp / n_pos - tpr_level).abs()
    # thresholds run from high to low, so recall rises: the last of the
    # nearest points is the one with the higher recall
    nearest = torch.nonzero(distance == distance.min())[-1, 0]
    return (fp[nearest] / n_neg).item()


def f1_candidate_bins(pos: Tensor, neg: Tensor) -> Tensor:
    """The bins inside which a threshold may reach the best pixel F1 of the
    pooled curve: those whose F1 bound 2 TP(b) / (TP(b) + FP(b + 1) + #anomaly)
    (every positive of the bin kept, none of its negatives) is at least the
    best F1 of the bin edges. ``pos``/``neg``: the pooled histograms of the
    anomaly and the in-distribution pixels. Empty without anomaly pixels."""
    n_pos = pos.sum()
    if n_pos == 0:
        return torch.zeros(0, dtype=torch.long)
    tp, fp = _at_or_above(pos), _at_or_above(neg)  # with bin b and above
    filled = (pos + neg) > 0
    f1_edges = torch.where(filled, 2 * tp / (tp + fp + n_pos), -1.0)
    fp_above = torch.cat([fp[1:], fp.new_zeros(1)])
    bound = 2 * tp / (tp + fp_above + n_pos)
    return torch.nonzero(filled & (bound >= f1_edges.max())).squeeze(1)


def best_f1_threshold(pos: Tensor, neg: Tensor, values: np.ndarray,
                      num_anomaly: np.ndarray, num_other: np.ndarray,
                      signed: bool = True) -> float:
    """SegmentMeIfYouCan's threshold for the component metrics, exactly: the
    score t whose prediction ``score >= t`` has the best pixel F1 =
    2 TP / (2 TP + FP + FN) on the run's pooled curve, every distinct score a
    threshold, the highest t among equal F1 (the benchmark's ``nanargmax``
    over thresholds from high to low).

    ``pos``/``neg``: the pooled score histograms; ``values``: every distinct
    score in :func:`f1_candidate_bins`, the only bins where the best
    threshold can lie, with ``num_anomaly``/``num_other`` pixels each (the
    counts of the bins above come from the histograms; ``signed``: their
    layout, see :func:`~mmseg_uncert.evaluation.functional.score_bins`). A
    float32 bin holds at most 2**17 distinct values, so this stays small
    whatever the data set. NaN without anomaly pixels.
    """
    n_pos = float(pos.sum())
    if n_pos == 0:
        return math.nan
    # TP and FP of the bins above b
    tp_above = torch.cat([_at_or_above(pos)[1:], pos.new_zeros(1)]).numpy()
    fp_above = torch.cat([_at_or_above(neg)[1:], neg.new_zeros(1)]).numpy()
    order = np.argsort(-values, kind='stable')
    values, num_anomaly, num_other = values[order], num_anomaly[order], num_other[order]
    bins = F.score_bins(torch.from_numpy(values), signed).numpy()
    # counts within each bin down to each score, from the bin's highest
    first = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    start = np.repeat(first, np.diff(np.r_[first, bins.size]))
    cum_pos, cum_neg = np.cumsum(num_anomaly), np.cumsum(num_other)
    tp = tp_above[bins] + cum_pos - cum_pos[start] + num_anomaly[start]
    fp = fp_above[bins] + cum_neg - cum_neg[start] + num_other[start]
    f1 = 2 * tp / (tp + fp + n_pos)
    return float(values[int(np.argmax(f1))])  # the first best: the highest t


def merge_counts(*parts: tuple[np.ndarray, np.ndarray, np.ndarray]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge ``(values, anomaly counts, other counts)`` triples into one of
    distinct values (a triple of pixels counts 1 or 0 per pixel)."""
    values = np.concatenate([p[0] for p in parts])
    distinct, index = np.unique(values, return_inverse=True)
    return (distinct,
            np.bincount(index, np.concatenate([p[1] for p in parts]), distinct.size),
            np.bincount(index, np.concatenate([p[2] for p in parts]), distinct.size))


# ------------------------------------------------------- component level
def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean mask: (ids (H, W) int32, count)."""
    ids, count = ndimage.label(mask, structure=_CONNECTIVITY)
    return ids.astype(np.int32, copy=False), int(count)


class GroundTruthComponents(NamedTuple):
    """The ground truth of one image, as the component metrics see it."""
    #: (N,) component id (1..n) of each evaluated pixel, 0 off anomalies
    ids: np.ndarray
    #: (N,) flat indices of the evaluated pixels in the (H, W) image
    roi: np.ndarray
    #: (H, W) bool, the pixels not void (predictions keep only these)
    valid: np.ndarray
    #: n, the components evaluated
    count: int


def ground_truth_components(label: np.ndarray, min_size: int = 0,
                            void_index: int = 255) -> GroundTruthComponents:
    """Components of the anomaly pixels (``label == 1``) of a (H, W) map of
    0 / 1 / ``void_index``.

    As the benchmark does, components smaller than ``min_size`` pixels become
    void (left out of everything), and the evaluated region is every other
    pixel not labelled void. (The benchmark's loop over component ids also
    visits id 0, the non-anomaly pixels, which would void them all in an image
    with fewer than ``min_size`` of them; that never happens on real images
    and is not copied.)
    """
    ids, count = label_components(label == 1)
    sizes = np.bincount(ids.ravel(), minlength=count + 1)
    kept = sizes >= min_size
    kept[0] = False
    renumber = np.zeros(count + 1, dtype=np.int32)
    renumber[kept] = np.arange(1, int(kept.sum()) + 1, dtype=np.int32)
    void = label == void_index
    evaluated = ~void & (kept[ids] | (ids == 0))
    roi = np.flatnonzero(evaluated)
    return GroundTruthComponents(ids=renumber[ids].ravel()[roi], roi=roi,
                                 valid=~void, count=int(kept.sum()))


class ComponentScores(NamedTuple):
    """sIoU of each ground-truth component, PPV of each predicted one."""
    siou: np.ndarray
    ppv: np.ndarray


def component_scores(gt: GroundTruthComponents, prediction: np.ndarray,
                     min_size: int = 0) -> ComponentScores:
    """sIoU and PPV of a binary prediction (H, W) against ``gt``.

    As SegmentMeIfYouCan defines them: void pixels are removed from the
    prediction, its 8-connected components K̂ are found, those smaller than
    ``min_size`` pixels dropped, and everything is counted on the evaluated
    pixels. For a ground-truth component k, with K̂(k) the predicted
    components that meet k and A(k) the pixels of the other ground-truth
    components,

        sIoU(k) = |k ∩ ∪K̂(k)| / |(k ∪ ∪K̂(k)) \\ A(k)|,

    so a prediction that spans two objects is not charged for the other one.
    That is |k ∩ P| / (|k| + Σ_{k̂ ∈ K̂(k)} |k̂ \\ G|), with P the predicted
    and G the ground-truth anomaly pixels. For a predicted component k̂,
    PPV(k̂) = |k̂ ∩ G| / |k̂|.
    """
    ids, count = label_components(prediction & gt.valid)
    if count:
        sizes = np.bincount(ids.ravel(), minlength=count + 1)
        kept = sizes >= min_size
        kept[0] = False
        renumber = np.zeros(count + 1, dtype=np.int64)
        count = int(kept.sum())
        renumber[kept] = np.arange(1, count + 1)
        predicted = renumber[ids.ravel()[gt.roi]]
    else:
        predicted = np.zeros(gt.roi.size, dtype=np.int64)
    # pixels per (ground-truth id, predicted id) pair, 0 = none
    table = np.bincount(gt.ids.astype(np.int64) * (count + 1) + predicted,
                        minlength=(gt.count + 1) * (count + 1)
                        ).reshape(gt.count + 1, count + 1)
    pred_size = table[:, 1:].sum(0)
    on_anomaly = table[1:, 1:].sum(0)
    meets = table[1:, 1:] > 0
    intersection = table[1:, 1:].sum(1)
    gt_size = table[1:].sum(1)
    siou = intersection / (gt_size + meets @ (pred_size - on_anomaly))
    # a predicted component wholly outside the evaluated region is not one
    present = pred_size > 0
    ppv = on_anomaly[present] / pred_size[present]
    return ComponentScores(siou=siou.astype(np.float64), ppv=ppv.astype(np.float64))


def component_counts(scores: ComponentScores,
                     thresholds: Sequence[float] = SIOU_THRESHOLDS) -> np.ndarray:
    """One image's additive statistics, float64:
    ``[Σ sIoU, Σ PPV, #predicted, TP_τ..., FP_τ...]`` with
    TP_τ = #{k : sIoU(k) ≥ τ} and FP_τ = #{k̂ : PPV(k̂) < τ} for each τ
    (FN_τ = #ground-truth components − TP_τ)."""
    tau = np.asarray(thresholds, dtype=np.float64)
    tp = (scores.siou[:, None] >= tau[None]).sum(0)
    fp = (scores.ppv[:, None] < tau[None]).sum(0)
    head = [scores.siou.sum(), scores.ppv.sum(), scores.ppv.size]
    return np.concatenate([head, tp, fp]).astype(np.float64)


def component_metrics(counts: Tensor, num_gt: float) -> dict[str, float]:
    """``sIoU`` (mean over all ground-truth components of the run), ``PPV``
    (mean over all predicted components) and ``mean_F1`` = mean over τ of
    F1_τ = 2 TP_τ / (2 TP_τ + FN_τ + FP_τ), counts summed over the run, from
    the sum of :func:`component_counts` rows. NaN where a mean is empty."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    num_tau = (counts.numel() - 3) // 2
    tp, fp = counts[3:3 + num_tau], counts[3 + num_tau:]
    fn = num_gt - tp
    denominator = 2 * tp + fn + fp
    f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1),
                     torch.full_like(tp, math.nan))
    return dict(sIoU=counts[0].item() / num_gt if num_gt else math.nan,
                PPV=(counts[1] / counts[2]).item() if counts[2] else math.nan,
                mean_F1=f1.mean().item())
