from .metrics import UncertaintyMetric

__all__ = ['UncertaintyMetric']
