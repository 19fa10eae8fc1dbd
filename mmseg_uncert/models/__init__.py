from .decode_heads import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .segmentors import *  # noqa: F401,F403
from .uncertainty import UNCERTAINTY_NAMES, PredictiveStatistics, entropy

__all__ = ['UNCERTAINTY_NAMES', 'PredictiveStatistics', 'entropy']
