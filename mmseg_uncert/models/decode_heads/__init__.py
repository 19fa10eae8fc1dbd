from .heteroscedastic_head import HeteroscedasticHead, tap_classifier

__all__ = ['HeteroscedasticHead', 'tap_classifier']
