from .dual_head import SUPPORTED_HEADS, DualHead
from .heteroscedastic_head import HeteroscedasticHead, tap_classifier

__all__ = ['DualHead', 'HeteroscedasticHead', 'SUPPORTED_HEADS', 'tap_classifier']
