"""Side-by-side pictures of one image: the image, its labels, the prediction
and uncertainty maps, each panel titled.

One renderer (:func:`render_panels`) draws the panels into an RGB array;
:func:`draw_panels` writes that array to a file, and
:class:`~mmseg_uncert.visualization.UncertaintyVisualizer` hands it to
mmengine's vis backends, so ``tools/visualize_uncertainty.py``, the demo's
pictures and ``tools/test.py --show-dir`` draw the same picture. Figures have
their own Agg canvas (:mod:`.canvas`): no pyplot, no global backend switched.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import mmcv
import numpy as np

from .canvas import figure_to_rgb, new_figure

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


#: the colour map of every map panel (perceptually uniform, black at 0)
MAP_COLORMAP = 'magma'
#: dots per inch of the rendered pictures
DPI = 80


@dataclass(frozen=True)
class PanelsPicture:
    """A rendered picture of panels.

    ``image``: (H, W, 3) uint8 RGB. ``boxes``: per panel, in the order drawn,
    the pixel rectangle ``(x0, y0, x1, y1)`` of its picture inside ``image``
    (x1, y1 exclusive; colour bars and titles are outside it), where a
    pixel of the panel's data at fractional position (u, v) ∈ [0, 1)² lands
    at (x0 + u·(x1 − x0), y0 + v·(y1 − y0)).
    """
    image: np.ndarray
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)


def render_panels(panels: Sequence[Panel],
                  palette: Sequence[Sequence[int]] | None = None,
                  title: str | None = None, columns: int = 4,
                  ignore_index: int = 255,
                  classes: Sequence[str] | None = None,
                  panel_width: float = 4.0) -> PanelsPicture:
    """Draw ``panels`` in rows of ``columns`` into an RGB array.

    Each panel is ``panel_width`` inches wide at :data:`DPI` dots per inch.
    Each map's colour scale (:data:`MAP_COLORMAP`) runs from 0 to its 99.5th
    percentile (a few extreme pixels would wash the rest out), with a colour
    bar. Maps of one quantity (the same ``scale`` name) share the scale, the
    largest of their percentiles, so that a student's map and its teacher's
    can be compared by eye; maps of different quantities (a std, entropies
    in nats) keep their own (see :func:`colour_limits`). Label panels are
    coloured by ``palette``; with ``classes`` each class present is named at
    the point of its region farthest from the region's border.

    Raises:
        ValueError: no panel; a label panel without a palette; a map with
            NaN or infinite values (names the panel); ``columns`` < 1.
    """
    if not panels:
        raise ValueError('no panel to draw')
    if columns < 1:
        raise ValueError(f'columns={columns}: give at least 1')
    for panel in panels:
        if panel.kind == 'map' and not np.isfinite(panel.data).all():
            raise ValueError(f'panel {panel.title!r}: the map has NaN or infinite '
                             f'values; a colour scale needs finite ones')
        if panel.kind == 'label' and palette is None:
            raise ValueError(f'panel {panel.title!r}: a label panel needs '
                             f'the palette (dataset_meta["palette"])')
    columns = min(columns, len(panels))
    tops = colour_limits(panels)
    rows = -(-len(panels) // columns)
    height, width = panels[0].data.shape[:2]
    scale = panel_width / width
    fig = new_figure((panel_width * columns,
                      rows * (height * scale + 0.5)), dpi=DPI)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis('off')
    for ax, panel, top in zip(axes.flat, panels, tops):
        ax.set_title(panel.title, fontsize=10)
        if panel.kind == 'image':
            ax.imshow(panel.data)
        elif panel.kind == 'label':
            ax.imshow(colorize_labels(panel.data, palette, ignore_index),
                      interpolation='nearest')
            if classes is not None:
                _name_regions(ax, panel.data, classes, palette, ignore_index)
        elif panel.kind == 'mask':
            ax.imshow(panel.data, cmap='gray', vmin=0, vmax=1,
                      interpolation='nearest')
        else:
            shown = ax.imshow(panel.data, cmap=MAP_COLORMAP, vmin=0, vmax=top)
            fig.colorbar(shown, ax=ax, fraction=0.025, pad=0.01)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    image = figure_to_rgb(fig)
    return PanelsPicture(image, [_pixel_box(ax, image.shape[0])
                                 for ax in list(axes.flat)[:len(panels)]])


def draw_panels(panels: Sequence[Panel], path: str,
                palette: Sequence[Sequence[int]] | None = None,
                title: str | None = None, columns: int = 4,
                ignore_index: int = 255,
                classes: Sequence[str] | None = None) -> None:
    """Draw ``panels`` (see :func:`render_panels`) and write the picture to
    ``path`` (its extension picks the format; folders are created)."""
    try:
        picture = render_panels(panels, palette, title, columns, ignore_index,
                                classes)
    except ValueError as error:
        raise ValueError(f'{path}: {error}') from error
    mmcv.imwrite(mmcv.rgb2bgr(picture.image), path)


def _pixel_box(ax, image_height: int) -> tuple[int, int, int, int]:
    """The axes' rectangle in image pixels, y from the top. Valid after the
    figure was drawn: drawing applies the image's aspect ratio."""
    x0, y0, x1, y1 = ax.get_window_extent().extents
    return (int(round(x0)), int(round(image_height - y1)),
            int(round(x1)), int(round(image_height - y0)))


def _name_regions(ax, label: np.ndarray, classes: Sequence[str],
                  palette: Sequence[Sequence[int]], ignore_index: int) -> None:
    """Write each class's name on its region, at the region's pixel farthest
    from its border (inside the region even when it is not convex), as
    mmseg's SegLocalVisualizer names the classes it draws."""
    for index in np.unique(label):
        # a class without a colour is drawn black (colorize_labels): no box
        if index == ignore_index or not 0 <= index < min(len(classes), len(palette)):
            continue
        region = np.pad((label == index).astype(np.uint8), 1)
        depth = cv2.distanceTransform(region, cv2.DIST_L2, 3)[1:-1, 1:-1]
        # of the deepest pixels (a ridge in an elongated region), the middle one
        ys, xs = np.nonzero(depth == depth.max())
        middle = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
        y, x = ys[middle], xs[middle]
        colour = np.asarray(palette[index], dtype=float) / 255
        ax.text(x, y, classes[index], fontsize=7, color='white',
                ha='center', va='center',
                bbox=dict(facecolor=colour, edgecolor='black', linewidth=0.5,
                          pad=1.0), clip_on=True)
