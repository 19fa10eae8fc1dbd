from .dirichlet_head import DirichletHead
from .dual_head import DualHead
from .head_taps import ClassifierTap, HeadTap, UnsupportedHeadError, tap_head
from .heteroscedastic_head import HeteroscedasticHead
from .uncertainty_head import UncertaintyHead, split_outputs, uncertainty_names

__all__ = ['ClassifierTap', 'DirichletHead', 'DualHead', 'HeadTap', 'HeteroscedasticHead',
           'UncertaintyHead', 'UnsupportedHeadError', 'split_outputs', 'tap_head',
           'uncertainty_names']
