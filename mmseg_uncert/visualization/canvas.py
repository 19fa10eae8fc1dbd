"""Figures drawn off screen, without pyplot and without a global backend.

A ``matplotlib.figure.Figure`` with its own ``FigureCanvasAgg`` renders to
pixels whatever backend the user chose (``MPLBACKEND``, ``matplotlib.use``),
so drawing here never switches it, and importing this package never imports
matplotlib: the imports are inside the functions.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(figsize: tuple[float, float], dpi: float = 100) -> Figure:
    """A figure of ``figsize`` inches at ``dpi`` with an Agg canvas of its own."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    return fig


def figure_to_rgb(fig: Figure) -> np.ndarray:
    """The figure drawn at its own dpi, as an (H, W, 3) uint8 RGB array."""
    fig.canvas.draw()
    # the figure's face is opaque, so dropping alpha loses nothing
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
