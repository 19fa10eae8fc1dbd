from .anomaly_metric import AnomalyMetric
from .uncertainty_metric import UncertaintyMetric

__all__ = ['AnomalyMetric', 'UncertaintyMetric']
