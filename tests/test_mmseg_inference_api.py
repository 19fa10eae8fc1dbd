"""mmseg's own inference API on every config under configs/: ``init_model`` +
``inference_model`` and ``MMSegInferencer`` give ``pred_uncertainty``.

Distillation and domain-adaptation configs deploy as the student alone:
``init_model`` (which sets ``model.train_cfg = None``) builds no teacher and
no pseudo-labeller, so their checkpoints need not exist, and its predictions
equal those of the whole training model with the same student weights.
Ensemble and MC-dropout configs need no checkpoint (their members carry
theirs; random weights here). Real-data configs run on a small image: the
test checks the API path, not the resolution.
"""
from __future__ import annotations

import copy
import glob
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope

import mmseg_uncert  # noqa: F401
from mmseg.apis import MMSegInferencer, inference_model, init_model
from mmseg.datasets import CityscapesDataset
from mmseg.registry import MODELS
from mmseg_uncert.models.uncertainty import UNCERTAINTY_NAMES

from conftest import ROOT
from test_configs import _without_checkpoints

CONFIGS = sorted(
    p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p.split(osp.sep))
#: models that carry their members' weights: no checkpoint of their own
WITHOUT_CHECKPOINT = ('EnsembleSegmentor', 'MCDropoutSegmentor')
#: models that train beside a frozen model and deploy without it
TRAINING_WRAPPERS = {'EnsembleDistiller': 'teacher', 'ProDASegmentor': 'pseudo_labeller'}
IMAGE_SHAPE = (64, 128)  # (H, W) of the test image and of every test resize


def _small(cfg: Config) -> Config:
    """The config with random-weight members (a clone has no trained ones),
    no downloads and every test resize at the test image's size."""
    cfg = copy.deepcopy(cfg)
    _without_checkpoints(cfg.model)
    if isinstance(cfg.model.get('backbone'), dict):
        cfg.model.backbone.pop('init_cfg', None)
    cfg.model.pop('pretrained', None)
    for pipeline in (cfg.test_pipeline, cfg.test_dataloader.dataset.pipeline):
        for transform in pipeline:
            if transform['type'] == 'Resize':
                transform['scale'] = IMAGE_SHAPE[::-1]
    return cfg


def _training_model(cfg: Config) -> torch.nn.Module:
    """The config's model as training builds it (teachers included)."""
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    torch.manual_seed(0)  # random members: the same ones as every build below
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmseg')):
        model = MODELS.build(copy.deepcopy(cfg.model))
    if cfg.model.type not in WITHOUT_CHECKPOINT:
        model.init_weights()
    return model.eval()


@pytest.fixture(scope='module')
def image(tmp_path_factory) -> str:
    rng = np.random.default_rng(3)
    path = str(tmp_path_factory.mktemp('images') / 'street.png')
    cv2.imwrite(path, rng.integers(0, 256, (*IMAGE_SHAPE, 3), dtype=np.uint8))
    return path


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.relpath(p, ROOT) for p in CONFIGS])
def test_init_model_inference_model_and_inferencer(path, image, tmp_path):
    if 'mmpretrain' in open(path).read():
        pytest.importorskip('mmpretrain', reason='optional extra, see test_configs')
    cfg = _small(Config.fromfile(path))
    kind = cfg.model.type
    trained = _training_model(cfg)
    checkpoint = None
    if kind not in WITHOUT_CHECKPOINT:
        # what a training run saves: the trainable part, frozen children left out
        checkpoint = str(tmp_path / 'iter_1.pth')
        torch.save(dict(state_dict=trained.state_dict(),
                        meta=dict(dataset_meta=dict(CityscapesDataset.METAINFO))),
                   checkpoint)
    with torch.no_grad():
        expected = trained.test_step(_data(trained, cfg, image))[0]

    torch.manual_seed(0)
    model = init_model(copy.deepcopy(cfg), checkpoint, device='cpu')
    if kind in TRAINING_WRAPPERS:
        # the student alone: no teacher (or pseudo-labeller) was built
        assert getattr(model, TRAINING_WRAPPERS[kind]) is None
        assert not any(TRAINING_WRAPPERS[kind] in name for name, _ in model.named_modules())
    result = inference_model(model, image)
    assert torch.equal(result.pred_sem_seg.data, expected.pred_sem_seg.data)
    torch.testing.assert_close(result.seg_logits.data, expected.seg_logits.data)
    names = _uncertainty_names(trained)
    if not names:  # a plain mmseg model: nothing added
        assert 'pred_uncertainty' not in result
    else:
        assert sorted(result.pred_uncertainty.keys()) == sorted(names)
    for name in names:
        torch.testing.assert_close(result.pred_uncertainty.get(name),
                                   expected.pred_uncertainty.get(name))
        assert result.pred_uncertainty.get(name).shape == (1, *IMAGE_SHAPE)
    if kind in WITHOUT_CHECKPOINT:
        # seg_logits is log p̄: the total map is its entropy, H[p̄]
        p = result.seg_logits.data.softmax(0)
        total = -(p * p.clamp_min(1e-30).log()).sum(0, keepdim=True)
        torch.testing.assert_close(result.pred_uncertainty.total, total,
                                   atol=1e-5, rtol=1e-5)

    if kind in TRAINING_WRAPPERS:
        # mmengine's inferencer builds cfg.model as it is; with train_cfg=None
        # (what init_model sets) it is the student alone
        cfg.model.train_cfg = None
    torch.manual_seed(0)
    inferencer = MMSegInferencer(model=copy.deepcopy(cfg), weights=checkpoint, device='cpu')
    sample = inferencer(image, return_datasamples=True)
    assert torch.equal(sample.pred_sem_seg.data, expected.pred_sem_seg.data)
    for name in names:
        torch.testing.assert_close(sample.pred_uncertainty.get(name),
                                   expected.pred_uncertainty.get(name))


def test_inference_model_on_an_array(image):
    """An in-memory image goes through LoadImageFromNDArray and the
    annotation transforms pass through."""
    cfg = _small(Config.fromfile(osp.join(
        ROOT, 'configs', 'ensemble', 'ensemble-3x_fast-scnn_synthetic-128x256.py')))
    model = init_model(cfg, None, device='cpu')
    from_file = inference_model(model, image)
    from_array = inference_model(model, cv2.imread(image))
    for name in UNCERTAINTY_NAMES:
        torch.testing.assert_close(from_array.pred_uncertainty.get(name),
                                   from_file.pred_uncertainty.get(name))


def test_a_deployed_distiller_cannot_train():
    cfg = _small(Config.fromfile(osp.join(
        ROOT, 'configs', 'distill',
        'distill-ensemble-3x_fast-scnn_1xb4-0.5k_synthetic-128x256.py')))
    model = init_model(cfg, None, device='cpu')
    with pytest.raises(RuntimeError, match='built for inference.*train_cfg=None'):
        model.loss(torch.zeros(1, 3, 64, 128), [])


def test_a_missing_teacher_checkpoint_names_the_deployment_fix(tmp_path):
    cfg = Config.fromfile(osp.join(
        ROOT, 'configs', 'distill',
        'distill-ensemble-3x_fast-scnn_1xb4-0.5k_synthetic-128x256.py'))
    cfg.model.teacher.members[0].checkpoint = str(tmp_path / 'gone.pth')
    init_default_scope('mmseg')
    with pytest.raises(FileNotFoundError, match=r'gone\.pth.*train_cfg=None'):
        MODELS.build(cfg.model)


def _uncertainty_names(model: torch.nn.Module) -> tuple[str, ...]:
    if model.__class__.__name__ in WITHOUT_CHECKPOINT:
        return UNCERTAINTY_NAMES
    head = model.decode_head[-1] if isinstance(model.decode_head, torch.nn.ModuleList) \
        else model.decode_head
    return tuple(getattr(head, 'uncertainty_names', ()) or ())


def _data(model: torch.nn.Module, cfg: Config, image: str) -> dict:
    """The image through the config's test pipeline without annotations,
    built here independently of mmseg's inference helpers."""
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate
    pipeline = [t for t in copy.deepcopy(cfg.test_pipeline)
                if t['type'] not in ('LoadAnnotations', 'LoadUncertaintyAnnotations')]
    with DefaultScope.overwrite_default_scope('mmseg'):
        return pseudo_collate([Compose(pipeline)(dict(img_path=image))])

