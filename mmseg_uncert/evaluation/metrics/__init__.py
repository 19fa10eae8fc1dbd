from .uncertainty_metric import UncertaintyMetric

__all__ = ['UncertaintyMetric']
