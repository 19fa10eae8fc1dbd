"""Reliability diagrams and risk–coverage curves, written as PNG.

Drawn on figures with their own Agg canvas (:mod:`.canvas`): no pyplot, and
the user's matplotlib backend is left as it is.
"""
from __future__ import annotations

import glob
import json
import os.path as osp

from .canvas import new_figure


def plot_reliability_diagram(diagram: dict, path: str) -> None:
    """Per-bin accuracy against confidence, with the pixel count of each bin,
    from :func:`~mmseg_uncert.evaluation.curves.reliability_diagram`'s data."""
    edges = diagram['bin_edges']
    width = edges[1] - edges[0]
    acc = [0.0 if a is None else a for a in diagram['accuracy']]
    fig = new_figure((5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True,
                               gridspec_kw=dict(height_ratios=[3, 1]))
    top.bar(edges[:-1], acc, width=width, align='edge',
            edgecolor='black', color='tab:blue', label='accuracy')
    top.plot([0, 1], [0, 1], '--', color='grey', label='perfect calibration')
    top.set_ylabel('accuracy')
    top.set_ylim(0, 1)
    top.legend(loc='upper left')
    bottom.bar(edges[:-1], diagram['count'], width=width, align='edge',
               edgecolor='black', color='tab:grey')
    bottom.set_yscale('log')
    bottom.set_xlabel('confidence (max probability)')
    bottom.set_ylabel('pixels')
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_metric_curves(folder: str) -> list[str]:
    """PNGs beside the curves an :class:`~mmseg_uncert.evaluation.UncertaintyMetric`
    with ``output_dir`` wrote: ``reliability_diagram.png`` and
    ``risk_coverage_<score>.png``. Returns the paths written."""
    written = []
    path = osp.join(folder, 'reliability_diagram.json')
    if osp.isfile(path):
        with open(path) as f:
            plot_reliability_diagram(json.load(f), path[:-len('.json')] + '.png')
        written.append(path[:-len('.json')] + '.png')
    for path in sorted(glob.glob(osp.join(folder, 'risk_coverage_*.json'))):
        score = osp.basename(path)[len('risk_coverage_'):-len('.json')]
        with open(path) as f:
            plot_risk_coverage_curves({score: json.load(f)}, path[:-len('.json')] + '.png',
                                      title=f'risk-coverage, score: {score}')
        written.append(path[:-len('.json')] + '.png')
    return written


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
    """Reliability diagrams side by side, one per label, from
    :func:`~mmseg_uncert.evaluation.curves.reliability_diagram`'s data."""
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
