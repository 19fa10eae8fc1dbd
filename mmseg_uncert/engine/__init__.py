from .hooks import PrototypeHook
from .runner import CompatRunner, build_runner, load_run_config

__all__ = ['CompatRunner', 'PrototypeHook', 'build_runner', 'load_run_config']
