"""Side-by-side pictures of one image: the image, its labels, the prediction
and uncertainty maps, each panel titled, written as one PNG."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import matplotlib

matplotlib.use('Agg')  # files only: no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

#: panel kinds: an RGB image, a label map (coloured by the palette), a
#: non-negative map (colour scale from 0 and a colour bar), a 0/1 mask
KINDS = ('image', 'label', 'map', 'mask')


@dataclass
class Panel:
    """One picture of the row: ``title``, its ``data`` (H, W[, 3]) and its
    ``kind`` (one of :data:`KINDS`). Maps with the same ``scale`` name (one
    quantity, e.g. a student's and its teacher's epistemic maps) share one
    colour scale."""
    title: str
    data: np.ndarray
    kind: str
    scale: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f'panel {self.title!r}: kind {self.kind!r} is not '
                             f'one of {KINDS}')
        if self.scale is not None and self.kind != 'map':
            raise ValueError(f'panel {self.title!r}: only a map has a colour scale to '
                             f'share, not a {self.kind!r} (scale={self.scale!r})')


def colorize_labels(label: np.ndarray, palette: Sequence[Sequence[int]],
                    ignore_index: int = 255) -> np.ndarray:
    """(H, W) class indices to (H, W, 3) uint8 colours; ``ignore_index`` and
    indices outside the palette are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    colours = np.asarray(palette, dtype=np.uint8)[:256]
    lut[:len(colours)] = colours
    lut[ignore_index] = 0
    return lut[np.clip(label, 0, 255).astype(np.uint8)]


def colour_limits(panels: Sequence[Panel], percentile: float = 99.5) -> list[float | None]:
    """The top of each map panel's colour scale (None for other kinds): its
    ``percentile``-th percentile, or the largest of them over the maps that
    share its ``scale`` name; 1 where that is 0 (an all-zero map)."""
    own = [float(np.percentile(p.data, percentile)) if p.kind == 'map' else None
           for p in panels]
    shared: dict[str, float] = {}
    for panel, top in zip(panels, own):
        if top is not None and panel.scale is not None:
            shared[panel.scale] = max(shared.get(panel.scale, 0.0), top)
    return [None if top is None else
            (shared[panel.scale] if panel.scale is not None else top) or 1.0
            for panel, top in zip(panels, own)]


def draw_panels(panels: Sequence[Panel], path: str,
                palette: Sequence[Sequence[int]] | None = None,
                title: str | None = None, columns: int = 4,
                ignore_index: int = 255) -> None:
    """Draw ``panels`` in rows of ``columns`` and save them to ``path``.

    Each map's colour scale runs from 0 to its 99.5th percentile (a few
    extreme pixels would wash the rest out), with a colour bar. Maps of one
    quantity (the same ``scale`` name) share the scale, the largest of their
    percentiles, so that a student's map and its teacher's can be compared
    by eye; maps of different quantities (a std, entropies in nats) keep
    their own.
    """
    if not panels:
        raise ValueError(f'{path}: no panel to draw')
    tops = colour_limits(panels)
    rows = -(-len(panels) // columns)
    height, width = panels[0].data.shape[:2]
    scale = 4.0 / width  # 4 inches per panel
    fig, axes = plt.subplots(rows, columns, squeeze=False, figsize=(
        4 * columns, rows * (height * scale + 0.5)))
    for ax in axes.flat:
        ax.axis('off')
    for ax, panel, top in zip(axes.flat, panels, tops):
        ax.set_title(panel.title, fontsize=10)
        if panel.kind == 'image':
            ax.imshow(panel.data)
        elif panel.kind == 'label':
            if palette is None:
                raise ValueError(f'panel {panel.title!r}: a label panel needs '
                                 f'the palette (dataset_meta["palette"])')
            ax.imshow(colorize_labels(panel.data, palette, ignore_index),
                      interpolation='nearest')
        elif panel.kind == 'mask':
            ax.imshow(panel.data, cmap='gray', vmin=0, vmax=1,
                      interpolation='nearest')
        else:
            shown = ax.imshow(panel.data, cmap='magma', vmin=0, vmax=top)
            fig.colorbar(shown, ax=ax, fraction=0.025, pad=0.01)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
