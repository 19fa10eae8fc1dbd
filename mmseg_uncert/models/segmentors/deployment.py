"""Deploying a model for inference from its config and checkpoint.

A training config may wrap the network that is deployed: a distillation
config trains a student beside a frozen teacher (``EnsembleDistiller``), a
domain-adaptation config a segmentor beside a pseudo-labeller
(``ProDASegmentor``). Such segmentors are :class:`TrainingWrapper` s: for
inference only the network itself is wanted, so they are replaced by the
plain segmentor with the same backbone, neck and heads; teachers are neither
built nor loaded. The public entry point is
:func:`mmseg_uncert.apis.init_uncertainty_model`.
"""
from __future__ import annotations

import copy
import inspect
import os.path as osp
from typing import Any

from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log
from mmengine.runner import load_checkpoint
from torch import nn

from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS

from ...compat import load_local_checkpoint
from ..decode_heads.uncertainty_head import UncertaintyHead
from ..data_preprocessors import source_target_preprocessor
from .members import build_member, load_config, mmseg_scope

#: where other distillation code keeps its teacher-side parts (mmrazor)
FOREIGN_TRAINING_PREFIXES = ('distiller.', )


class TrainingWrapper:
    """Mixin marking a segmentor that trains the ``EncoderDecoder`` it is
    (its backbone, neck and heads) beside parts used in training only: a
    distillation teacher and its losses, a pseudo-labeller. Deployment
    (:func:`mmseg_uncert.apis.deploy_model_config`) builds the plain
    segmentor from the same arguments, and drops the checkpoint keys under
    :attr:`training_only_parts`."""

    #: attributes (checkpoint key prefixes) that training alone uses
    training_only_parts: tuple[str, ...] = ()
    #: built with ``train_cfg=None`` (as ``mmseg.apis.init_model`` builds
    #: models): the network alone, none of the training-only parts
    for_inference: bool

    def _init_network(self, train_cfg: dict | None, data_preprocessor: dict | None,
                      **network: Any) -> None:
        """Build the segmentor this wrapper trains (the next base's
        ``__init__`` with the ``network`` arguments) in mmseg's scope, its
        preprocessor able to take source/target batches."""
        # a copy: a default train_cfg is shared between instances
        with mmseg_scope():
            super().__init__(train_cfg=None if train_cfg is None else dict(train_cfg),
                             data_preprocessor=source_target_preprocessor(data_preprocessor),
                             **network)
        self.for_inference = train_cfg is None

    def _check_trainable(self, missing: str) -> None:
        """The error of a training step on a model built for inference;
        ``missing`` says what it lacks."""
        if self.for_inference:
            raise RuntimeError(
                f'{type(self).__name__} was built for inference (model.train_cfg=None, '
                f'as mmseg.apis.init_model builds it): it has no {missing}; train '
                f'with the config\'s own model (train_cfg left out)')


def is_training_wrapper(model_type: str | None) -> bool:
    """Whether the registered segmentor type ``model_type`` is a
    :class:`TrainingWrapper`."""
    if not isinstance(model_type, str):
        return False
    with mmseg_scope():
        cls = MODELS.get(model_type)
    return isinstance(cls, type) and issubclass(cls, TrainingWrapper)


def training_only_prefixes() -> tuple[str, ...]:
    """Checkpoint key prefixes of every training wrapper's training-only
    parts, and of other distillation code's."""
    parts = {part for cls in _subclasses(TrainingWrapper) for part in cls.training_only_parts}
    return tuple(f'{part}.' for part in sorted(parts)) + FOREIGN_TRAINING_PREFIXES


def _subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


#: where other distillation code keeps the student (mmrazor: architecture.)
STUDENT_PREFIXES = ('student.', 'architecture.')


def deploy_model_config(model_cfg: dict) -> ConfigDict:
    """The inference model of ``model_cfg``.

    A training wrapper
    (:class:`~mmseg_uncert.models.segmentors.training_wrapper.TrainingWrapper`)
    becomes an
    ``UncertaintyEncoderDecoder`` with the wrapper's EncoderDecoder arguments
    (backbone, neck, heads, test_cfg, data preprocessor), or, for a cascade
    student (a list of decode heads, e.g. OCRNet), an
    ``UncertaintyCascadeEncoderDecoder``; any other model config is returned
    unchanged.
    """
    model_cfg = ConfigDict(copy.deepcopy(dict(model_cfg)))
    if not is_training_wrapper(model_cfg.get('type')):
        return model_cfg
    kept = set(inspect.signature(EncoderDecoder.__init__).parameters) - {'self'}
    deployed = ConfigDict({k: v for k, v in model_cfg.items() if k in kept})
    heads = deployed.get('decode_head')
    cascade = isinstance(heads, (list, tuple))
    final = heads[-1] if cascade else heads
    # an uncertainty head's maps come out through the uncertainty
    # segmentors; a plain head's student is a plain mmseg model
    with mmseg_scope():
        head_cls = MODELS.get(final.get('type')) if isinstance(final, dict) else None
    with_maps = isinstance(head_cls, type) and issubclass(head_cls, UncertaintyHead)
    deployed.type = {(True, True): 'UncertaintyCascadeEncoderDecoder',
                     (True, False): 'UncertaintyEncoderDecoder',
                     (False, True): 'CascadeEncoderDecoder',
                     (False, False): 'EncoderDecoder'}[with_maps, cascade]
    if cascade:
        deployed.num_stages = len(heads)
    deployed.train_cfg = None
    return deployed


def student_state_dict(state: dict, prefix: str | None = None) -> dict:
    """The deployable network's tensors of a training checkpoint's ``state``.

    Keys under a student prefix (``prefix``, else :data:`STUDENT_PREFIXES`)
    are kept without it; without such keys, everything but the training
    wrappers' training-only parts is kept as is.
    """
    prefixes = (prefix, ) if prefix else STUDENT_PREFIXES
    prefixed = {k: v for k, v in state.items() if k.startswith(prefixes)}
    if prefixed:
        out = {}
        for key, value in prefixed.items():
            p = next(p for p in prefixes if key.startswith(p))
            out[key[len(p):]] = value
        return out
    if prefix:
        raise KeyError(f'no checkpoint key starts with {prefix!r}; keys look '
                       f'like {sorted(state)[:5]}')
    dropped = training_only_prefixes()
    return {k: v for k, v in state.items() if not k.startswith(dropped)}


def deployed_model(config: str | Config, checkpoint: str | None = None,
                   cfg_options: dict[str, Any] | None = None) -> nn.Module:
    """The model of ``config`` in eval mode, on the CPU, with ``checkpoint``.

    Training wrappers are deployed (:func:`deploy_model_config`) and their
    checkpoints stripped of training-only keys (:func:`student_state_dict`);
    every other model loads its checkpoint strictly. An ensemble or MC-dropout
    config needs no checkpoint (its members name theirs). The checkpoint's
    ``dataset_meta`` (classes, palette) is kept as ``model.dataset_meta``,
    else the ``METAINFO`` of the config's test dataset class.

    Raises:
        FileNotFoundError: the config or checkpoint does not exist.
        RuntimeError: the checkpoint does not fit the model (names the keys).
    """
    cfg = config if isinstance(config, Config) else load_config(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model_cfg = deploy_model_config(cfg.model)
    wrapped = is_training_wrapper(cfg.model.get('type'))
    role = f'model of {getattr(cfg, "filename", None) or "the config"}'
    model, _ = build_member(dict(model=model_cfg, checkpoint=None), role)
    meta: dict = {}
    if checkpoint is not None:
        if not osp.isfile(checkpoint):
            raise FileNotFoundError(f'checkpoint {checkpoint} does not exist')
        if wrapped:
            loaded = load_local_checkpoint(checkpoint, map_location='cpu')
            state = student_state_dict(loaded.get('state_dict', loaded))
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise RuntimeError(
                    f'checkpoint {checkpoint} does not fit the {model_cfg.type} '
                    f'deployed from {cfg.model.type}: missing keys '
                    f'{missing[:5]}, unexpected keys {unexpected[:5]}')
            print_log(f'{checkpoint}: {len(state)} tensors of the '
                      f'{cfg.model.type} loaded into its {model_cfg.type}',
                      logger='current')
        else:
            loaded = load_checkpoint(model, checkpoint, map_location='cpu',
                                     strict=True)
        meta = loaded.get('meta', {}) or {}
    dataset_meta = meta.get('dataset_meta')
    if not dataset_meta:
        dataset_meta = _config_dataset_meta(cfg)
    model.dataset_meta = dataset_meta
    model.cfg = cfg
    return model.eval()


def _config_dataset_meta(cfg: Config) -> dict | None:
    """classes and palette of the config's test dataset class (without
    building the dataset: its files may be absent)."""
    from mmseg.registry import DATASETS
    dataset = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    with mmseg_scope():
        cls = DATASETS.get(dataset.get('type', '')) if dataset.get('type') else None
    meta = getattr(cls, 'METAINFO', None)
    return dict(meta) if meta else None
