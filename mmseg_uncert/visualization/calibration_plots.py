"""Reliability diagrams and risk–coverage curves, written as PNG.

Drawn on figures with their own Agg canvas (:mod:`.canvas`): no pyplot, and
the user's matplotlib backend is left as it is.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .canvas import new_figure


def plot_reliability_diagram(count: Tensor, conf_sum: Tensor,
                             correct_sum: Tensor, path: str) -> dict:
    """Per-bin accuracy against confidence, with the pixel count of each bin.

    Returns the diagram's data (bin edges, counts, mean confidence and
    accuracy per bin; None for empty bins), as written next to the PNG.
    """
    num_bins = count.numel()
    edges = torch.linspace(0, 1, num_bins + 1)
    filled = count > 0
    conf = torch.where(filled, conf_sum / count.clamp(min=1), torch.nan)
    acc = torch.where(filled, correct_sum / count.clamp(min=1), torch.nan)
    fig = new_figure((5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True,
                               gridspec_kw=dict(height_ratios=[3, 1]))
    width = 1.0 / num_bins
    top.bar(edges[:-1], acc.nan_to_num(0).numpy(), width=width, align='edge',
            edgecolor='black', color='tab:blue', label='accuracy')
    top.plot([0, 1], [0, 1], '--', color='grey', label='perfect calibration')
    top.set_ylabel('accuracy')
    top.set_ylim(0, 1)
    top.legend(loc='upper left')
    bottom.bar(edges[:-1], count.numpy(), width=width, align='edge',
               edgecolor='black', color='tab:grey')
    bottom.set_yscale('log')
    bottom.set_xlabel('confidence (max probability)')
    bottom.set_ylabel('pixels')
    fig.tight_layout()
    fig.savefig(path, dpi=100)

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


def plot_risk_coverage(wrong: Tensor, right: Tensor, score_name: str,
                       path: str) -> dict[str, list[float]]:
    """Error rate of the kept pixels as the most uncertain are rejected.

    Returns the curve (see :func:`risk_coverage_curve`)."""
    curve = risk_coverage_curve(wrong, right)
    plot_risk_coverage_curves({score_name: curve}, path,
                              title=f'risk-coverage, score: {score_name}')
    return curve


def plot_risk_coverage_curves(curves: dict[str, dict], path: str,
                              title: str = 'risk-coverage') -> None:
    """Several risk–coverage curves (label -> ``dict(coverage, risk)``) in
    one plot; a lower curve ranks its errors better."""
    fig = new_figure((5, 4))
    ax = fig.subplots()
    for label, curve in curves.items():
        ax.plot(curve['coverage'], curve['risk'], label=label)
    ax.set_xlabel('coverage (fraction of pixels kept)')
    ax.set_ylabel('risk (error rate of kept pixels)')
    ax.set_title(title)
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    if len(curves) > 1:
        ax.legend(loc='upper left', fontsize='small')
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_reliability_diagrams(diagrams: dict[str, dict], path: str) -> None:
    """Reliability diagrams side by side, one per label, from the data
    :func:`plot_reliability_diagram` returns."""
    fig = new_figure((4 * len(diagrams), 4))
    axes = fig.subplots(1, len(diagrams), squeeze=False)
    for ax, (label, diagram) in zip(axes[0], diagrams.items()):
        edges = diagram['bin_edges']
        width = edges[1] - edges[0]
        acc = [0.0 if a is None else a for a in diagram['accuracy']]
        ax.bar(edges[:-1], acc, width=width, align='edge', edgecolor='black',
               color='tab:blue', label='accuracy')
        ax.plot([0, 1], [0, 1], '--', color='grey', label='perfect calibration')
        ax.set_title(label)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel('confidence (max probability)')
    axes[0][0].set_ylabel('accuracy')
    axes[0][0].legend(loc='upper left', fontsize='small')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
