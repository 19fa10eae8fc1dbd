from .calibration_plots import (plot_metric_curves, plot_reliability_diagram,
                                plot_reliability_diagrams, plot_risk_coverage_curves)
from .uncertainty_panels import (Panel, PanelsPicture, colorize_labels,
                                 colour_limits, draw_panels, render_panels)
from .uncertainty_visualizer import UncertaintyVisualizer, map_names

__all__ = ['plot_metric_curves', 'plot_reliability_diagram', 'plot_reliability_diagrams',
           'plot_risk_coverage_curves', 'Panel', 'PanelsPicture', 'colorize_labels',
           'colour_limits', 'draw_panels', 'render_panels',
           'UncertaintyVisualizer', 'map_names']
