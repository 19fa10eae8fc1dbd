from .calibration import *  # noqa: F401,F403
from .data_preprocessors import *  # noqa: F401,F403
from .decode_heads import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .segmentors import *  # noqa: F401,F403
from .frozen import FrozenChildren, TrainableOptimWrapperConstructor
from .prototypes import (PrototypeBank, class_feature_sums, ema_prototypes,
                         prototype_logits)
from .uncertainty import (UNCERTAINTY_NAMES, PredictiveStatistics,
                          dirichlet_uncertainty, entropy)

__all__ = ['FrozenChildren', 'TrainableOptimWrapperConstructor', 'UNCERTAINTY_NAMES', 'PredictiveStatistics', 'PrototypeBank',
           'class_feature_sums', 'dirichlet_uncertainty', 'ema_prototypes', 'entropy', 'prototype_logits']
