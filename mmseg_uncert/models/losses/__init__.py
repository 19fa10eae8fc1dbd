from .attenuated_cross_entropy_loss import (AttenuatedCrossEntropyLoss,
                                            attenuated_cross_entropy)
from .attenuated_regression_loss import (AttenuatedRegressionLoss,
                                         attenuated_regression)

__all__ = ['AttenuatedCrossEntropyLoss', 'AttenuatedRegressionLoss',
           'attenuated_cross_entropy', 'attenuated_regression']
