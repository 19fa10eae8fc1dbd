from .classifier_tap import pop_tapped, take_tapped, tap_classifier
from .dirichlet_head import DirichletHead
from .dual_head import DualHead
from .head_taps import HeadTap, UnsupportedHeadError, tap_head
from .heteroscedastic_head import HeteroscedasticHead

__all__ = ['DirichletHead', 'DualHead', 'HeadTap', 'HeteroscedasticHead',
           'UnsupportedHeadError', 'pop_tapped', 'take_tapped', 'tap_classifier',
           'tap_head']
