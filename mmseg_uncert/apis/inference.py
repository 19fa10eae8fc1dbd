"""Build a model for inference from a config and a checkpoint.

A training config may wrap the network that is deployed: a distillation
config trains a student beside a frozen teacher (``EnsembleDistiller``), a
domain-adaptation config a segmentor beside a pseudo-labeller
(``ProDASegmentor``). For inference only the network itself is wanted, so
such wrappers are replaced by the plain segmentor with the same backbone,
neck and heads; teachers are neither built nor loaded.
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

from ..compat import load_local_checkpoint
from ..models.segmentors import build_member, load_config

#: segmentors that only exist for training: their deployable network is
#: the EncoderDecoder inside them
TRAINING_WRAPPERS = ('EnsembleDistiller', 'ProDASegmentor')
#: checkpoint keys that belong to training only (teachers, losses with
#: parameters)
TRAINING_ONLY_PREFIXES = ('teacher.', 'distiller.', 'kd_loss.',
                          'pairwise_loss.', 'mimic_loss.')
#: decode heads that predict named uncertainty maps beside the logits
UNCERTAINTY_HEADS = ('DualHead', 'DirichletHead', 'HeteroscedasticHead')
#: where other distillation code keeps the student (mmrazor: architecture.)
STUDENT_PREFIXES = ('student.', 'architecture.')


def deploy_model_config(model_cfg: dict) -> ConfigDict:
    """The inference model of ``model_cfg``.

    A training wrapper (:data:`TRAINING_WRAPPERS`) becomes an
    ``UncertaintyEncoderDecoder`` with the wrapper's EncoderDecoder arguments
    (backbone, neck, heads, test_cfg, data preprocessor), or, for a cascade
    student (a list of decode heads, e.g. OCRNet), an
    ``UncertaintyCascadeEncoderDecoder``; any other model config is returned
    unchanged.
    """
    model_cfg = ConfigDict(copy.deepcopy(dict(model_cfg)))
    if model_cfg.get('type') not in TRAINING_WRAPPERS:
        return model_cfg
    kept = set(inspect.signature(EncoderDecoder.__init__).parameters) - {'self'}
    deployed = ConfigDict({k: v for k, v in model_cfg.items() if k in kept})
    heads = deployed.get('decode_head')
    cascade = isinstance(heads, (list, tuple))
    final = heads[-1] if cascade else heads
    # a DualHead's (or other uncertainty head's) maps come out through the
    # uncertainty segmentors; a plain head's student is a plain mmseg model
    with_maps = isinstance(final, dict) and final.get('type') in UNCERTAINTY_HEADS
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
    are kept without it; without such keys, everything but the
    :data:`TRAINING_ONLY_PREFIXES` is kept as is.
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
    return {k: v for k, v in state.items()
            if not k.startswith(TRAINING_ONLY_PREFIXES)}


def init_uncertainty_model(config: str | Config, checkpoint: str | None = None,
                           cfg_options: dict[str, Any] | None = None
                           ) -> nn.Module:
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
    wrapped = cfg.model.get('type') in TRAINING_WRAPPERS
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
    from ..models.segmentors import mmseg_scope
    dataset = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    with mmseg_scope():
        cls = DATASETS.get(dataset.get('type', '')) if dataset.get('type') else None
    meta = getattr(cls, 'METAINFO', None)
    return dict(meta) if meta else None
