"""Streaming maths of the uncertainty metrics: sums and histograms, no pixels kept.

:func:`stripe_sums` reduces a stripe of an image (whole rows) to the sums and
histograms that :class:`~mmseg_uncert.evaluation.UncertaintyMetric` adds up
over a run, on the stripe's device; the functions below it turn the totals
into metrics.

Calibration sums are exact. Ranking metrics (AUROC, AUPR, FPR95, AURC,
PAvPU) are computed from fine histograms of the score: pixels whose scores
fall in one bin count as tied, exactly as tied scores count in
scikit-learn's ``roc_curve``/``average_precision_score``. Scores are mapped to
[0, 1] before binning: linearly for a known range, and by the order-keeping
``u = 1/2 + s / (2 (1 + |s|))`` for unbounded ones (e.g. a learnt variance),
so every real score has a bin and the ranking is unchanged.

References:
    Guo et al., "On Calibration of Modern Neural Networks", ICML 2017 (ECE, MCE).
    Nixon et al., "Measuring Calibration in Deep Learning", CVPRW 2019
    (adaptive/equal-mass ECE); Kull et al., NeurIPS 2019 (class-wise ECE).
    Geifman et al., "Bias-Reduced Uncertainty Estimation for Deep Neural
    Classifiers", ICLR 2019 (AURC, E-AURC).
    Mukhoti & Gal, "Evaluating Bayesian Deep Learning Methods for Semantic
    Segmentation", 2018 (PAvPU).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

#: the scores computed from the probabilities themselves
BUILTIN_SCORES = ('max_prob', 'entropy')


def score_to_unit(score: Tensor, value_range: tuple[float, float] | None) -> Tensor:
    """Map a score to [0, 1] keeping its order (see the module docstring)."""
    unit = score.to(torch.float64, copy=True)  # the one allocation
    if value_range is None:
        return unit.div_(unit.abs().add_(1.0)).mul_(0.5).add_(0.5)
    lo, hi = value_range
    return unit.sub_(lo).div_(hi - lo).clamp_(0.0, 1.0)


def bin_index(unit_score: Tensor, num_bins: int) -> Tensor:
    """Bin of each [0, 1] score among ``num_bins`` equal bins (1.0 in the last)."""
    return (unit_score * num_bins).long().clamp_(0, num_bins - 1)


def counts(index: Tensor, size: int, weights: Tensor | None = None) -> Tensor:
    """Float64 counts (or sums of ``weights``) of every index in [0, size):
    ``bincount`` with a fixed length, which also runs on any device."""
    out = torch.zeros(size, dtype=torch.float64, device=index.device)
    values = (out.new_ones(()).expand(index.numel()) if weights is None
              else weights.reshape(-1).to(torch.float64))
    return out.index_add_(0, index.reshape(-1), values)


def histogram(unit_score: Tensor, num_bins: int,
              weights: Tensor | None = None) -> Tensor:
    """Counts (or weight sums) of [0, 1] scores in ``num_bins`` equal bins."""
    return counts(bin_index(unit_score, num_bins), num_bins, weights)


def two_class_histogram(unit_score: Tensor, positive: Tensor, num_bins: int
                        ) -> Tensor:
    """Histograms (2, num_bins) of [0, 1] scores: row 0 of the positive
    pixels, row 1 of the others."""
    index = bin_index(unit_score, num_bins).add_((~positive).long(), alpha=num_bins)
    return counts(index, 2 * num_bins).view(2, num_bins)


class PixelStatistics(NamedTuple):
    """Per-pixel quantities of p = softmax(z) against labels y (each (N,))."""
    prob: Tensor        #: (C, N) the probabilities
    confidence: Tensor  #: max_c p_c
    correct: Tensor     #: argmax_c p_c == y (the first class among ties)
    log_p_true: Tensor  #: log p_y
    p_true: Tensor      #: p_y
    brier: Tensor       #: Σ_c (p_c − 1[y = c])²
    entropy: Tensor | None  #: −Σ_c p_c log p_c (None unless asked for)


def pixel_statistics(logits: Tensor, label: Tensor,
                     with_entropy: bool = True) -> PixelStatistics:
    """:class:`PixelStatistics` of logits (C, N) and labels (N,) in [0, C).

    Computed in float32 (as the network's output) or float64 when given it.
    log p_y = z_y − logsumexp z is accurate for tiny p_y too; logsumexp z is
    z_ĉ − log p_ĉ at the prediction ĉ, where p_ĉ ≥ 1/C keeps the log tame.
    The entropy is H = logsumexp z − Σ_c p_c z_c (no log of C x N
    probabilities; the clamp removes rounding below 0 where p is one-hot).
    """
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    prob = torch.softmax(logits, 0)
    confidence, prediction = prob.max(0)
    y = label.long()
    log_sum_exp = logits.gather(0, prediction[None])[0] - confidence.log()
    p_true = prob.gather(0, y[None])[0]
    # Brier: Σ_c (p_c − 1[y = c])² = Σ_c p_c² − 2 p_y + 1
    brier = (prob * prob).sum(0) - 2 * p_true + 1
    entropy = None
    if with_entropy:
        entropy = (log_sum_exp - (prob * logits).sum(0)).clamp_(min=0)
    return PixelStatistics(
        prob=prob, confidence=confidence, correct=prediction == y,
        log_p_true=logits.gather(0, y[None])[0] - log_sum_exp, p_true=p_true,
        brier=brier, entropy=entropy)


def calibration_histogram(confidence: Tensor, correct: Tensor, num_bins: int
                          ) -> Tensor:
    """(3, num_bins) per confidence bin: wrong count, right count,
    confidence sum."""
    bins = bin_index(confidence, num_bins)
    hits = counts(bins + num_bins * correct.long(), 2 * num_bins).view(2, num_bins)
    return torch.cat([hits, counts(bins, num_bins, confidence)[None]])


def classwise_histogram(prob: Tensor, label: Tensor, num_bins: int) -> Tensor:
    """(3, C, num_bins) per class c and bin of p_c: count, sum of p_c, and
    count of pixels labelled c (the last binned by p_y).

    Most p_c lie in bin 0 (below 1/num_bins); only the others, a few per
    pixel, are binned one by one, and bin 0 gets each class's totals minus
    theirs (exact: integer counts, float64 sums). Binning all C x N values
    would cost several times the rest of the metric.
    """
    C, n = prob.shape
    upper = torch.nonzero(prob.reshape(-1) >= 1.0 / num_bins).squeeze(1)
    upper_prob = prob.reshape(-1)[upper]
    cls = upper.div_(n, rounding_mode='floor')
    index = bin_index(upper_prob, num_bins).add_(cls, alpha=num_bins)
    number = counts(index, C * num_bins, None).view(C, num_bins)
    prob_sum = counts(index, C * num_bins, upper_prob).view(C, num_bins)
    number[:, 0] += n - counts(cls, C)
    prob_sum[:, 0] += prob.sum(1, dtype=torch.float64) - counts(cls, C, upper_prob)
    p_true = prob.gather(0, label.long()[None])[0]
    labelled = counts(bin_index(p_true, num_bins).add_(label.long(), alpha=num_bins),
                      C * num_bins).view(C, num_bins)
    return torch.stack([number, prob_sum, labelled])


def stripe_sums(logits: Tensor, label: Tensor, maps: dict[str, Tensor],
                ood: Tensor | None, aleatoric: Tensor | None, *,
                scores: tuple[str, ...],
                score_ranges: dict[str, tuple[float, float] | None],
                num_ece_bins: int, num_score_bins: int, patch_size: int,
                ignore_index: int) -> dict[str, Tensor]:
    """Sums and histograms of one stripe of an image, on its device.

    Args:
        logits: (C, h, W) of any floating type.
        label: (h, W) class indices or ``ignore_index``.
        maps: (h, W) per-pixel scores named in ``scores`` beyond
            :data:`BUILTIN_SCORES`.
        ood: (h, W), nonzero at out-of-distribution pixels, or None.
        aleatoric: (h, W) true label entropy, or None.
        scores: the score names; ``score_ranges`` the known range of each
            (None: unbounded, see :func:`score_to_unit`).
        patch_size: side of the PAvPU patches; ``h`` is a multiple of it
            except in an image's last stripe.

    Returns:
        ``n_valid``, ``nll_sum``, ``brier_sum`` (float64
        scalars); ``ece`` and ``ece_fine`` (3, bins: wrong, right, confidence
        sum); ``classwise`` (3, C, bins, see :func:`classwise_histogram`);
        per score s: ``score_sum/s`` and two-row histograms (positives
        first) ``mis/s`` (wrong pixels), ``patch/s`` (inaccurate patches),
        ``ood/s`` (OOD against valid in-distribution pixels) and
        ``aleatoric/s`` (ambiguous against clean, in-distribution).
    """
    C, h, w = logits.shape
    valid = label != ignore_index
    ood = None if ood is None else ood.bool()
    y = torch.where(valid, label, 0)
    px = pixel_statistics(logits.reshape(C, -1), y.reshape(-1),
                          with_entropy='entropy' in scores)
    flat_valid = valid.reshape(-1)
    all_valid = bool(flat_valid.all())

    def kept(value: Tensor) -> Tensor:  # the valid pixels' values
        value = value.reshape(-1)
        return value if all_valid else value[flat_valid]

    sums = dict(
        n_valid=flat_valid.sum(dtype=torch.float64),
        nll_sum=-kept(px.log_p_true).sum(dtype=torch.float64),
        brier_sum=kept(px.brier).sum(dtype=torch.float64))
    confidence, correct = kept(px.confidence), kept(px.correct)
    sums['ece'] = calibration_histogram(confidence, correct, num_ece_bins)
    sums['ece_fine'] = calibration_histogram(confidence, correct, num_score_bins)
    prob = px.prob if all_valid else px.prob[:, flat_valid]
    sums['classwise'] = classwise_histogram(prob, kept(y), num_ece_bins)

    accurate = px.correct.view(h, w) | ~valid
    patch_accuracy, patch_valid = patch_means(accurate.double(), valid, patch_size)
    accurate_patch = patch_accuracy[patch_valid] >= 0.5
    in_distribution = valid if ood is None else valid & ~ood
    builtin = dict(max_prob=lambda: 1.0 - px.confidence.view(h, w),
                   entropy=lambda: px.entropy.view(h, w))
    for name in scores:
        score = maps[name] if name in maps else builtin[name]()
        value_range = score_ranges[name]
        unit = score_to_unit(score, value_range)
        sums[f'score_sum/{name}'] = kept(score).sum(dtype=torch.float64)
        sums[f'mis/{name}'] = two_class_histogram(kept(unit), ~correct, num_score_bins)
        patch_score, _ = patch_means(score, valid, patch_size)
        sums[f'patch/{name}'] = two_class_histogram(
            score_to_unit(patch_score[patch_valid], value_range), ~accurate_patch,
            num_score_bins)
        if ood is not None:
            scored = ood | in_distribution
            sums[f'ood/{name}'] = two_class_histogram(unit[scored], ood[scored],
                                                      num_score_bins)
        if aleatoric is not None:
            sums[f'aleatoric/{name}'] = two_class_histogram(
                unit[in_distribution], ~(aleatoric[in_distribution] <= 0),
                num_score_bins)
    return sums


def binary_curve_metrics(pos: Tensor, neg: Tensor,
                         tpr_level: float = 0.95) -> dict[str, float]:
    """AUROC, AUPR (average precision) and FPR at ``tpr_level`` TPR.

    ``pos``/``neg``: histograms of the score of positive and negative pixels;
    a higher score means "more likely positive". Each bin is one threshold,
    as each distinct score is in scikit-learn.
    """
    n_pos, n_neg = pos.sum().item(), neg.sum().item()
    if n_pos == 0 or n_neg == 0:
        return dict(auroc=math.nan, aupr=math.nan, fpr95=math.nan)
    # thresholds from the highest bin down
    tp = torch.cumsum(pos.flip(0), 0)
    fp = torch.cumsum(neg.flip(0), 0)
    keep = (pos.flip(0) + neg.flip(0)) > 0
    tp, fp = tp[keep], fp[keep]
    tpr = torch.cat([tp.new_zeros(1), tp / n_pos])
    fpr = torch.cat([fp.new_zeros(1), fp / n_neg])
    auroc = torch.trapezoid(tpr, fpr).item()
    precision = tp / (tp + fp)
    aupr = torch.sum((tpr[1:] - tpr[:-1]) * precision).item()
    reached = torch.nonzero(tpr[1:] >= tpr_level - 1e-12)
    fpr95 = fpr[1:][reached[0, 0]].item()
    return dict(auroc=auroc, aupr=aupr, fpr95=fpr95)


def _harmonic(n: Tensor) -> Tensor:
    """H_n = sum_{j<=n} 1/j for real n >= 0 (digamma form)."""
    return torch.special.digamma(n + 1.0) + 0.5772156649015329


def risk_coverage(wrong: Tensor, right: Tensor) -> dict[str, float]:
    """AURC and E-AURC from histograms of the score of wrong and right pixels.

    Pixels are kept most certain first (lowest score); AURC is the mean, over
    every coverage k/N, of the error rate among the k kept pixels. Within a
    bin the order of pixels is random, so the expected risk is used, in
    closed form: for a bin of n pixels with e errors after K kept pixels with
    E errors, sum_{j=1..n} (E + j e/n)/(K + j) = e + (E - K e/n)(H_{K+n} - H_K).
    E-AURC subtracts the AURC of a perfect ranking (errors last):
    AURC* = (1/N)(E - (N - E)(H_N - H_{N-E})).
    """
    n_bin = wrong + right
    total, errors = n_bin.sum(), wrong.sum()
    if total == 0:
        return dict(aurc=math.nan, eaurc=math.nan)
    keep = n_bin > 0
    n_bin, e_bin = n_bin[keep], wrong[keep]
    k_before = torch.cumsum(n_bin, 0) - n_bin
    e_before = torch.cumsum(e_bin, 0) - e_bin
    rate = e_bin / n_bin
    risk_sum = e_bin + (e_before - k_before * rate) * (
        _harmonic(k_before + n_bin) - _harmonic(k_before))
    aurc = (risk_sum.sum() / total).item()
    optimal = (errors - (total - errors) * (_harmonic(total) - _harmonic(
        total - errors))) / total
    return dict(aurc=aurc, eaurc=aurc - optimal.item())


def pavpu(accurate: Tensor, inaccurate: Tensor,
          threshold_bin: int) -> dict[str, float]:
    """PAvPU, p(accurate | certain) and p(uncertain | inaccurate).

    Histograms of the score of accurate and inaccurate pixels (or patches);
    a pixel is uncertain when its score lies in a bin above ``threshold_bin``.
    PAvPU = (n_ac + n_iu) / (n_ac + n_au + n_ic + n_iu).
    """
    n_ac = accurate[:threshold_bin + 1].sum()
    n_au = accurate[threshold_bin + 1:].sum()
    n_ic = inaccurate[:threshold_bin + 1].sum()
    n_iu = inaccurate[threshold_bin + 1:].sum()
    total = n_ac + n_au + n_ic + n_iu

    def ratio(a: Tensor, b: Tensor) -> float:
        return (a / b).item() if b > 0 else math.nan

    return dict(pavpu=ratio(n_ac + n_iu, total),
                p_accurate_certain=ratio(n_ac, n_ac + n_ic),
                p_uncertain_inaccurate=ratio(n_iu, n_ic + n_iu))


def calibration_errors(count: Tensor, conf_sum: Tensor,
                       correct_sum: Tensor) -> tuple[float, float]:
    """ECE = sum_b (n_b / N) |acc_b - conf_b| and MCE = max_b |acc_b - conf_b|
    over non-empty bins, from per-bin sums."""
    total = count.sum()
    if total == 0:
        return math.nan, math.nan
    filled = count > 0
    gap = (correct_sum[filled] - conf_sum[filled]).abs() / count[filled]
    ece = ((count[filled] / total) * gap).sum().item()
    return ece, gap.max().item()


def adaptive_calibration_error(count: Tensor, conf_sum: Tensor,
                               correct_sum: Tensor, num_bins: int) -> float:
    """Equal-mass ECE: fine bins grouped into ``num_bins`` bins of about equal
    pixel count (group edges fall on fine-bin edges)."""
    total = count.sum()
    if total == 0:
        return math.nan
    cum = torch.cumsum(count, 0)
    group = torch.clamp((((cum - count / 2) / total) * num_bins).long(), 0,
                        num_bins - 1)
    n = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, group, count)
    c = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, group, conf_sum)
    a = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, group, correct_sum)
    return calibration_errors(n, c, a)[0]


def patch_means(values: Tensor, valid: Tensor, patch: int) -> tuple[Tensor, Tensor]:
    """Means of ``values`` over the valid pixels of each patch×patch patch.

    Returns ``(means, has_valid)`` for every patch (the last row/column of
    patches may be partial).
    """
    h, w = values.shape
    ph, pw = -(-h // patch), -(-w // patch)
    pad = (0, pw * patch - w, 0, ph * patch - h)
    v = torch.nn.functional.pad((values * valid).double(), pad)
    m = torch.nn.functional.pad(valid.double(), pad)
    sums = v.reshape(ph, patch, pw, patch).sum((1, 3))
    counts = m.reshape(ph, patch, pw, patch).sum((1, 3))
    has_valid = counts > 0
    return sums / counts.clamp(min=1), has_valid
