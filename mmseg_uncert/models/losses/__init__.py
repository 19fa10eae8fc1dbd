from .attenuated_cross_entropy_loss import (AttenuatedCrossEntropyLoss,
                                            attenuated_cross_entropy)
from .attenuated_regression_loss import (AttenuatedRegressionLoss,
                                         attenuated_regression)
from .class_weighted_cross_entropy_loss import ClassWeightedCrossEntropyLoss
from .ensemble_distribution_distillation_loss import (
    EnsembleDistributionDistillationLoss, dirichlet_nll)
from .feature_mimic_loss import FeatureMimicLoss
from .pairwise_kd_loss import PairwiseKDLoss, affinity
from .pixel_kd_loss import PixelKDLoss, pixel_kd
from .symmetric_cross_entropy_loss import (SymmetricCrossEntropyLoss,
                                           symmetric_cross_entropy)
from .uncertainty_regression_loss import UncertaintyRegressionLoss

__all__ = ['AttenuatedCrossEntropyLoss', 'AttenuatedRegressionLoss',
           'ClassWeightedCrossEntropyLoss',
           'EnsembleDistributionDistillationLoss', 'FeatureMimicLoss', 'PairwiseKDLoss', 'PixelKDLoss',
           'SymmetricCrossEntropyLoss', 'UncertaintyRegressionLoss', 'affinity', 'attenuated_cross_entropy',
           'attenuated_regression', 'dirichlet_nll', 'pixel_kd', 'symmetric_cross_entropy']
