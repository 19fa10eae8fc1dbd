from .bootstrap_sampler import BootstrapSampler

__all__ = ['BootstrapSampler']
