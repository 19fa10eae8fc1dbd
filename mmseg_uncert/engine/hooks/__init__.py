from .class_balanced_threshold_hook import ClassBalancedThresholdHook
from .prototype_hook import PrototypeHook

__all__ = ['ClassBalancedThresholdHook', 'PrototypeHook']
