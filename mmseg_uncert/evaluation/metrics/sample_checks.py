"""Checks of a data sample's maps and labels that the metrics share: a clear
error naming the image, the key and the fix."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .. import functional as F


def check_values(values: Tensor, outside: Tensor, img: str, what: str, expected: str,
                 fix: str) -> None:
    """Where ``outside`` holds, ``values`` are not what the metric reads: an
    error naming the image, up to ten of them, what was expected and the
    fix."""
    if outside.any():
        found = values[outside].unique().tolist()[:10]
        raise ValueError(f'image {img}: {what} {found} {expected}; {fix}')


def checked_maps(maps: dict[str, Tensor], names: Sequence[str], shape: tuple[int, int],
                 img: str, device: torch.device, against: str) -> dict[str, Tensor]:
    """The ``pred_uncertainty`` maps ``names`` as (H, W) on ``device``, each
    checked to have ``against``'s ``shape`` and finite values (the image
    ``img`` named otherwise)."""
    out = {}
    for name in names:
        value = maps[name]
        value = value.squeeze(0) if value.dim() == 3 else value
        if tuple(value.shape) != shape:
            raise ValueError(
                f'image {img}: pred_uncertainty[{name!r}] has shape '
                f'{tuple(value.shape)}, {against} has {shape}')
        if not F.all_finite(value):
            raise ValueError(f'image {img}: pred_uncertainty[{name!r}] '
                             f'has NaN or Inf values')
        out[name] = value.to(device)
    return out


