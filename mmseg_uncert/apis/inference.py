"""Build a model for inference from a config and a checkpoint."""
from __future__ import annotations

from typing import Any

from mmengine.config import Config
from torch import nn

from ..models.segmentors.deployment import (deploy_model_config, deployed_model,
                                            student_state_dict)

__all__ = ['deploy_model_config', 'init_uncertainty_model', 'student_state_dict']


def init_uncertainty_model(config: str | Config, checkpoint: str | None = None,
                           cfg_options: dict[str, Any] | None = None
                           ) -> nn.Module:
    """The model of ``config`` in eval mode, on the CPU, with ``checkpoint``.

    Training wrappers (a distiller, ProDA) are deployed as the network they
    train (:func:`deploy_model_config`) and their checkpoints stripped of
    training-only keys (:func:`student_state_dict`); every other model loads
    its checkpoint strictly. An ensemble or MC-dropout config needs no
    checkpoint (its members name theirs). The checkpoint's ``dataset_meta``
    (classes, palette) is kept as ``model.dataset_meta``, else the
    ``METAINFO`` of the config's test dataset class.

    Raises:
        FileNotFoundError: the config or checkpoint does not exist.
        RuntimeError: the checkpoint does not fit the model (names the keys).
    """
    return deployed_model(config, checkpoint, cfg_options)
