"""Streaming maths of the uncertainty metrics: sums and histograms, no pixels kept.

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

import torch
from torch import Tensor


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


def histogram(unit_score: Tensor, num_bins: int,
              weights: Tensor | None = None) -> Tensor:
    """Counts (or weight sums) of [0, 1] scores in ``num_bins`` equal bins."""
    return torch.bincount(bin_index(unit_score, num_bins),
                          weights=None if weights is None else weights.double(),
                          minlength=num_bins).double()


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
