"""Small segmentors saved as checkpoints, to build ensembles and MC-dropout
models from in tests."""
from __future__ import annotations

import copy
import os.path as osp

import torch
from mmengine.config import Config

from mmseg.registry import MODELS

from mmseg_uncert.models.segmentors import drop_pretrained, load_config, mmseg_scope

from helpers.tiny_config import PROJECT_CONFIG


def member_model_cfg(num_classes: int = 5, dropout_ratio: float = 0.1) -> dict:
    """The project's MobileNetV3-small + FCN model, with fewer classes."""
    cfg = copy.deepcopy(Config.fromfile(PROJECT_CONFIG).model.to_dict())
    cfg['decode_head'].update(num_classes=num_classes, dropout_ratio=dropout_ratio)
    return cfg


def save_member(path: str, seed: int, num_classes: int = 5,
                classes: list[str] | None = None,
                dropout_ratio: float = 0.1) -> str:
    """A randomly initialised member (seeded), saved as an mmengine checkpoint
    with ``dataset_meta`` when ``classes`` is given."""
    torch.manual_seed(seed)
    with mmseg_scope():
        model = MODELS.build(member_model_cfg(num_classes, dropout_ratio))
    model.init_weights()
    # a few BN statistics away from their defaults, as a trained model has
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.9, 1.1)
    meta = dict(dataset_meta=dict(classes=classes)) if classes else {}
    torch.save(dict(state_dict=model.state_dict(), meta=meta), path)
    return path


def member_specs(tmp_path, count: int, num_classes: int = 5) -> list[dict]:
    return [dict(model=member_model_cfg(num_classes),
                 checkpoint=save_member(osp.join(str(tmp_path), f'member_{i}.pth'),
                                        seed=i, num_classes=num_classes))
            for i in range(count)]


def save_config_model(config: str, path: str, seed: int) -> str:
    """The model of ``config`` (a file or a ``package::path`` such as
    ``mmseg::deeplabv3plus/...py``) randomly initialised (seeded), saved as
    an mmengine checkpoint. Its pretrained-weight initialisers (mmseg's
    ``pretrained='open-mmlab://...'``) are removed: they would download."""
    torch.manual_seed(seed)
    model_cfg = load_config(config).model
    drop_pretrained(model_cfg)
    with mmseg_scope():
        model = MODELS.build(model_cfg)
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict(), meta={}), path)
    return path
