"""What every loss of the package shares: a weight and a checked name."""
from __future__ import annotations

from torch import nn


class NamedLoss(nn.Module):
    """Base of the package's losses: ``loss_weight`` multiplies the value and
    ``loss_name`` is its key in the loss dict, where mmengine back-propagates
    only keys containing ``loss`` (mmseg's convention: start with ``loss_``).
    """

    def __init__(self, loss_weight: float, loss_name: str) -> None:
        super().__init__()
        if not loss_name.startswith('loss_'):
            raise ValueError(f"{type(self).__name__}: loss_name must start with "
                             f"'loss_' for the runner to back-propagate it, got "
                             f"{loss_name!r}")
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name
