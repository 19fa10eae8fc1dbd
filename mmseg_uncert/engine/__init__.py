from .hooks import ClassBalancedThresholdHook, PrototypeHook
from .runner import CompatRunner, build_runner, load_run_config

__all__ = ['ClassBalancedThresholdHook', 'CompatRunner', 'PrototypeHook', 'build_runner',
           'load_run_config']
