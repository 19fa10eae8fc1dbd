"""Build a segmentor from a config file (plain or ``mmseg::`` path) or an
inline model dict, and load its checkpoint: how ensemble members, MC-dropout
models and distillation teachers are declared."""
from __future__ import annotations

import copy
import os.path as osp
from typing import Any

from mmengine.config import Config, ConfigDict
from mmengine.hub import get_config
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint
from torch import nn

from mmseg.registry import MODELS


def mmseg_scope():
    """Build in mmseg's scope when no scope is set (outside a runner), so that
    nested parts such as ``SegDataPreProcessor`` are found."""
    current = DefaultScope.get_current_instance()
    return DefaultScope.overwrite_default_scope(None if current else 'mmseg')


def load_config(path: str) -> Config:
    """A config from a file path or a ``package::path`` inside an installed
    OpenMMLab package (e.g. ``mmseg::deeplabv3plus/...py``)."""
    if '::' in path:
        return get_config(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'config {path} does not exist')
    return Config.fromfile(path)


def drop_pretrained(model_cfg: ConfigDict) -> None:
    """Remove a model config's pretrained-weight initialisers (mmseg's
    ``pretrained='open-mmlab://...'`` and the parts' ``init_cfg``), which
    would download: a checkpoint replaces every weight, or the model is
    meant to start from random initialisation."""
    model_cfg.pop('pretrained', None)
    for part in ('backbone', 'decode_head', 'neck'):
        if isinstance(model_cfg.get(part), dict):
            model_cfg[part].pop('init_cfg', None)
            model_cfg[part].pop('pretrained', None)


def build_member(spec: dict[str, Any] | str, role: str,
                 test_cfg: dict | None = None) -> tuple[nn.Module, dict]:
    """Build one model from ``spec`` and load its checkpoint.

    ``spec`` is ``dict(config=PATH, checkpoint=PATH)``, ``dict(model=DICT,
    checkpoint=PATH or None)`` or a config path alone (random weights, for
    tests). ``role`` names the model in errors, e.g. ``'ensemble member 2'``.
    ``test_cfg``, when given, replaces the model's (as a ``test_cfg`` key of
    ``spec`` does).

    Returns the model (in eval mode) and what is known of it:
    ``dict(num_classes, classes, source, data_preprocessor)``; ``classes`` is
    read from the checkpoint's ``dataset_meta`` when it has one.
    """
    spec = dict(config=spec) if isinstance(spec, str) else dict(spec)
    if test_cfg is not None:
        spec['test_cfg'] = test_cfg
    unknown = set(spec) - {'config', 'model', 'checkpoint', 'test_cfg'}
    if unknown or ('config' in spec) == ('model' in spec):
        raise ValueError(
            f'{role}: give dict(config=PATH, checkpoint=PATH) or '
            f'dict(model=DICT, checkpoint=PATH), got keys {sorted(spec)}')
    checkpoint = spec.get('checkpoint')
    if 'config' in spec:
        source = spec['config']
        try:
            model_cfg = copy.deepcopy(load_config(source).model)
        except FileNotFoundError as error:
            raise FileNotFoundError(f'{role}: {error}') from error
    else:
        source = f"inline {spec['model'].get('type', 'model')}"
        model_cfg = ConfigDict(copy.deepcopy(spec['model']))
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise FileNotFoundError(
            f'{role}: checkpoint {checkpoint} does not exist; train it (for an '
            f'ensemble: tools/train_ensemble.py) or fix the path')
    if checkpoint is not None:
        drop_pretrained(model_cfg)
    if spec.get('test_cfg') is not None:
        model_cfg['test_cfg'] = spec['test_cfg']
    data_preprocessor = model_cfg.get('data_preprocessor')
    with mmseg_scope():
        model = MODELS.build(model_cfg)
    classes = None
    if checkpoint is not None:
        loaded = load_checkpoint(model, checkpoint, map_location='cpu',
                                 strict=True)
        meta = loaded.get('meta', {}) if isinstance(loaded, dict) else {}
        classes = (meta.get('dataset_meta') or {}).get('classes')
    model.eval()
    # EncoderDecoder and CascadeEncoderDecoder both set it (a cascade from
    # its last stage)
    num_classes = getattr(model, 'num_classes', None)
    return model, dict(num_classes=num_classes,
                       classes=tuple(classes) if classes else None,
                       source=source, checkpoint=checkpoint,
                       data_preprocessor=data_preprocessor)
