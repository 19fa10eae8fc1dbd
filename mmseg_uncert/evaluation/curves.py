"""The data of a reliability diagram and of a risk–coverage curve, from the
histograms :class:`~mmseg_uncert.evaluation.UncertaintyMetric` sums (drawn
by :mod:`mmseg_uncert.visualization.calibration_plots`)."""
from __future__ import annotations

import torch
from torch import Tensor


def reliability_diagram(count: Tensor, conf_sum: Tensor, correct_sum: Tensor) -> dict:
    """Per equal-width confidence bin: the edges, the pixel count, the mean
    confidence and the accuracy (None for empty bins)."""
    edges = torch.linspace(0, 1, count.numel() + 1)
    filled = count > 0
    conf = torch.where(filled, conf_sum / count.clamp(min=1), torch.nan)
    acc = torch.where(filled, correct_sum / count.clamp(min=1), torch.nan)

    def listed(t: Tensor) -> list:
        return [None if v != v else float(v) for v in t.tolist()]

    return dict(bin_edges=edges.tolist(), count=[int(c) for c in count.tolist()],
                confidence=listed(conf), accuracy=listed(acc))


def risk_coverage_curve(wrong: Tensor, right: Tensor,
                        max_points: int = 256) -> dict[str, list[float]]:
    """Coverage and risk of the kept pixels as the most uncertain are
    rejected, from histograms of the score (lowest score kept first), at
    most ``max_points`` points (evenly spaced in the histogram's filled bins,
    the full-coverage end always included)."""
    kept = torch.cumsum(wrong + right, 0)
    errors = torch.cumsum(wrong, 0)
    keep = (wrong + right) > 0
    total = kept[-1].clamp(min=1)
    coverage = kept[keep] / total
    risk = errors[keep] / kept[keep].clamp(min=1)
    if coverage.numel() > max_points:
        index = torch.linspace(0, coverage.numel() - 1, max_points).round().long()
        coverage, risk = coverage[index], risk[index]
    return dict(coverage=coverage.tolist(), risk=risk.tolist())
