"""Start a distillation student from a plain segmentor's checkpoint (e.g. one
ensemble member): its backbone, neck and decode head by their keys."""
from __future__ import annotations

import os.path as osp
from typing import Any

from mmengine.runner import CheckpointLoader
from torch import Tensor, nn

#: parts of a student that a plain segmentor does not have: they start fresh
#: (an uncertainty branch and its losses; the distillation losses' weights)
FRESH_PARTS = ('uncertainty_branch.', 'loss_uncertainty.', 'loss_distribution.')
DISTILLATION_LOSSES = ('kd_loss', 'pairwise_loss', 'mimic_loss')


def drop_distillation_weights(module: nn.Module, state_dict: dict, prefix: str,
                              *args: Any) -> None:
    """load_state_dict pre-hook of a student built for inference (no
    distillation losses): a training checkpoint's loss weights (a mimic
    adapter) are left out instead of reported as unexpected keys."""
    for key in [k for k in state_dict
                if k.startswith(tuple(f'{prefix}{loss}.' for loss in DISTILLATION_LOSSES))]:
        del state_dict[key]


def load_student_checkpoint(student: nn.Module, path: str) -> None:
    """Copy the checkpoint at ``path`` into ``student`` (see
    :func:`load_student_state`)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{type(student).__name__}: student_init checkpoint '
                                f'{path} does not exist')
    checkpoint = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    load_student_state(student, checkpoint.get('state_dict', checkpoint),
                       f'student_init {path}')


def load_student_state(student: nn.Module, source: dict[str, Tensor], origin: str) -> None:
    """Copy a plain segmentor's weights into ``student``, whose final head
    (``decode_head.`` or a cascade's ``decode_head.<n>.``) may wrap the
    segmentation head as ``head`` (DualHead, DirichletHead): the source's
    ``decode_head.X`` becomes ``decode_head.head.X``. Every student weight
    but those of :data:`FRESH_PARTS` and the distillation losses must be
    found with its shape; ``origin`` names the source in the error."""
    head = student.decode_head
    final = ('decode_head.' if not isinstance(head, nn.ModuleList)
             else f'decode_head.{len(head) - 1}.')
    final_module = head[-1] if isinstance(head, nn.ModuleList) else head
    wrapped = isinstance(getattr(final_module, 'head', None), nn.Module)
    fresh = tuple(final + part for part in FRESH_PARTS) + tuple(
        f'{loss}.' for loss in DISTILLATION_LOSSES)
    loaded, missing = {}, []
    for key, value in student.state_dict().items():
        if key.startswith(fresh):
            continue
        theirs = (key.replace(final + 'head.', final, 1)
                  if wrapped and key.startswith(final + 'head.') else key)
        if theirs not in source or source[theirs].shape != value.shape:
            missing.append(theirs)
        else:
            loaded[key] = source[theirs]
    if missing:
        raise KeyError(f'{type(student).__name__}: {origin} is not a checkpoint of the student\'s '
                       f'architecture: {len(missing)} weights absent or of another '
                       f'shape, e.g. {missing[:3]}')
    student.load_state_dict(loaded, strict=False)
