from .calibration_plots import (plot_reliability_diagram,
                                plot_reliability_diagrams, plot_risk_coverage,
                                plot_risk_coverage_curves, risk_coverage_curve)
from .uncertainty_panels import Panel, colorize_labels, colour_limits, draw_panels

__all__ = ['plot_reliability_diagram', 'plot_reliability_diagrams',
           'plot_risk_coverage', 'plot_risk_coverage_curves',
           'risk_coverage_curve', 'Panel', 'colorize_labels', 'colour_limits', 'draw_panels']
