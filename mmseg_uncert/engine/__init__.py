from .runner import CompatRunner, build_runner, load_run_config

__all__ = ['CompatRunner', 'build_runner', 'load_run_config']
