from .runner import CompatRunner, build_runner

__all__ = ['CompatRunner', 'build_runner']
