from .calibration_plots import plot_reliability_diagram, plot_risk_coverage

__all__ = ['plot_reliability_diagram', 'plot_risk_coverage']
