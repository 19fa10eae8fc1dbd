from .metrics import AnomalyMetric, UncertaintyMetric

__all__ = ['AnomalyMetric', 'UncertaintyMetric']
