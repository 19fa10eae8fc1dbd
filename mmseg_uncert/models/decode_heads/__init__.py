from .classifier_tap import pop_tapped, take_tapped, tap_classifier
from .dirichlet_head import DirichletHead
from .dual_head import SUPPORTED_HEADS, DualHead
from .heteroscedastic_head import HeteroscedasticHead

__all__ = ['DirichletHead', 'DualHead', 'HeteroscedasticHead', 'SUPPORTED_HEADS', 'pop_tapped',
           'take_tapped', 'tap_classifier']
