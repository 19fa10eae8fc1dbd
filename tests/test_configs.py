"""Every config under configs/ builds its model (new configs are picked up)."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope

import mmseg_uncert  # noqa: F401
from mmseg.datasets import CityscapesDataset
from mmseg.registry import MODELS

from conftest import ROOT

CONFIGS = sorted(
    p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p.split(osp.sep))


def test_there_are_configs():
    assert CONFIGS


@pytest.mark.parametrize('path', CONFIGS,
                         ids=[osp.relpath(p, ROOT) for p in CONFIGS])
def test_config_builds_its_model(path):
    text = open(path).read()
    if 'mmpretrain' in text:
        try:
            import mmpretrain  # noqa: F401
        except Exception as err:  # torchvision built for another torch, ...
            pytest.skip(f'{osp.basename(path)} needs mmpretrain, which cannot '
                        f'be imported here ({type(err).__name__}: {err}); it '
                        'is the optional extra `EXTRAS=tests,mim,mmpretrain '
                        'make setup` and needs a torchvision matching torch')
    cfg = Config.fromfile(path)
    assert 'mmseg_uncert' in cfg.custom_imports['imports']
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model_cfg = cfg.model
    # ensembles, MC dropout and distillation teachers point at trained
    # checkpoints that a fresh clone does not have: random weights instead
    _without_checkpoints(model_cfg)
    # ImageNet weights of mmseg's configs would be downloaded: no network here
    model_cfg.pop('pretrained', None)
    if isinstance(model_cfg.get('backbone'), dict):
        model_cfg.backbone.pop('init_cfg', None)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmseg')):
        model = MODELS.build(model_cfg)
    model.init_weights()
    model.eval()
    # The head predicts one map per class of the data set the config trains on.
    num_classes = getattr(model, 'num_classes', None) or model.decode_head.num_classes
    dataset_type = cfg.train_dataloader.dataset.type
    if dataset_type == 'CityscapesDataset':
        assert num_classes == len(CityscapesDataset.METAINFO['classes']) == 19
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 64, 128), mode='tensor')
    # heads with uncertainty maps add them after the class logits
    assert logits.shape[1] == getattr(model, 'out_channels', num_classes)
    assert torch.isfinite(logits).all()


def _without_checkpoints(cfg) -> None:
    if isinstance(cfg, dict):
        for key in ('checkpoint', 'student_init'):  # trained members: not in a clone
            if key in cfg:
                cfg[key] = None
        for value in cfg.values():
            _without_checkpoints(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            _without_checkpoints(value)
