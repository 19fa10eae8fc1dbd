"""UncertaintyTTAModel: the views of a tta_pipeline, and tools/test.py --tta.

Against a naive computation over the augmented views.
"""
import copy
import glob
import json
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

from mmseg.registry import MODELS

from mmseg_uncert.models import UNCERTAINTY_NAMES
from mmseg_uncert.models.segmentors import (TTASegmentor, UncertaintyTTAModel,
                                            mmseg_scope)
from mmseg_uncert.workflows.split_evaluation import build_split

from conftest import run_tool
from helpers.members import member_model_cfg
from helpers.tiny_config import write_tiny_config
from helpers.tta import flush_denormals  # noqa: F401  (autouse)
from helpers.tta import _assert_maps, _logits, _naive_maps, _sharpen

# the tiny config's normalisation (the project's data preprocessor)
MEAN = torch.tensor([123.675, 116.28, 103.53])[:, None, None]
STD = torch.tensor([58.395, 57.12, 57.375])[:, None, None]


def _normalise(image: torch.Tensor) -> torch.Tensor:
    """What the data preprocessor does to a uint8 BGR image (C, H, W)."""
    return (image.float()[[2, 1, 0]] - MEAN) / STD


@pytest.fixture(scope='module')
def tiny(tiny_data_root, tmp_path_factory):
    """The tiny config (64x128 images, 19 classes), its model sharpened."""
    path = write_tiny_config(str(tmp_path_factory.mktemp('tta') / 'tiny.py'),
                             tiny_data_root, max_iters=1)
    cfg = Config.fromfile(path)
    plain = _dataset(cfg, cfg.test_pipeline)
    images = torch.stack([_normalise(plain[i]['inputs']) for i in range(len(plain))])
    with mmseg_scope():
        model = _sharpen(MODELS.build(copy.deepcopy(cfg.model)), seed=0, images=images)
    return dict(cfg=cfg, path=path, model=model, images=images)


def _dataset(cfg: Config, pipeline: list):
    cfg = copy.deepcopy(cfg)
    cfg.test_dataloader.dataset.pipeline = pipeline
    return build_split(cfg)


def _tta_pipeline(transforms: list) -> list:
    return [dict(type='LoadImageFromFile'), dict(type='TestTimeAug', transforms=transforms)]


ANNOTATIONS = [[dict(type='LoadAnnotations')], [dict(type='LoadUncertaintyAnnotations')],
               [dict(type='PackSegUncertaintyInputs')]]
FLIPS = [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')]


def test_pipeline_views_give_the_naive_maps_and_keep_the_ground_truth(tiny):
    dataset = _dataset(tiny['cfg'], tiny['cfg'].tta_pipeline)  # 3 scales x 2 flips
    item = dataset[1]
    tta = UncertaintyTTAModel(module=tiny['model'])
    with torch.no_grad():
        merged = tta.test_step(pseudo_collate([item]))[0]
        probs = []
        for image, view in zip(item['inputs'], item['data_samples']):
            logits = _logits(tiny['model'], _normalise(image)[None])
            if view.metainfo['flip']:
                logits = torch.flip(logits, dims=[3])
            logits = F.interpolate(logits, size=view.metainfo['ori_shape'],
                                   mode='bilinear', align_corners=False)
            probs.append(logits.softmax(1)[0])
    assert len(probs) == 6 and {tuple(i.shape[1:]) for i in item['inputs']} == {
        (48, 96), (64, 128), (80, 160)}
    _assert_maps(merged, _naive_maps(probs))
    # the ground truth of the plain test pipeline, untouched by the views
    plain = _dataset(tiny['cfg'], tiny['cfg'].test_pipeline)[1]['data_samples']
    for key in ('gt_sem_seg', 'gt_aleatoric', 'gt_ood'):
        assert torch.equal(merged.get(key).data, plain.get(key).data), key
    assert merged.img_path == plain.img_path
    assert 'flip' not in merged.metainfo and merged.img_shape == (64, 128)


def test_both_paths_agree_on_flip_views(tiny):
    """Flips at scale 1: the pipeline's views and the tensor views are the
    same images, so the two classes give the same maps."""
    views = _dataset(tiny['cfg'], _tta_pipeline([FLIPS, *ANNOTATIONS]))[0]
    plain = _dataset(tiny['cfg'], tiny['cfg'].test_pipeline)[0]
    with torch.no_grad():
        by_pipeline = UncertaintyTTAModel(module=tiny['model']).test_step(
            pseudo_collate([views]))[0]
        tensor = MODELS.build(dict(type='TTASegmentor', model=dict(
            model=tiny['cfg'].model.to_dict(), checkpoint=None), scales=(1.0, ),
            flips=(False, True)))
        tensor.model.load_state_dict(tiny['model'].state_dict())
        by_tensor = tensor.test_step(pseudo_collate([plain]))[0]
    assert torch.allclose(by_pipeline.seg_logits.data.exp(), by_tensor.seg_logits.data.exp(),
                          atol=1e-5)
    for name in UNCERTAINTY_NAMES:
        assert torch.allclose(by_pipeline.pred_uncertainty.get(name),
                              by_tensor.pred_uncertainty.get(name), atol=1e-5), name


def test_a_wrapped_models_own_maps_are_kept_as_their_view_means(tiny, tmp_path):
    specs = [dict(model=tiny['cfg'].model.to_dict(), checkpoint=None) for _ in range(2)]
    with mmseg_scope():
        ensemble = MODELS.build(dict(type='EnsembleSegmentor', members=specs))
    for seed, member in enumerate(ensemble.members):
        _sharpen(member, seed, tiny['images'])
    views = _dataset(tiny['cfg'], _tta_pipeline([FLIPS, *ANNOTATIONS]))[2]
    batch = pseudo_collate([views])
    with torch.no_grad():
        merged = UncertaintyTTAModel(module=ensemble).test_step(batch)[0]
        each = [ensemble.test_step({k: v[i] for k, v in batch.items()})[0] for i in range(2)]
    for name in UNCERTAINTY_NAMES:
        mean = (each[0].pred_uncertainty.get(name) + each[1].pred_uncertainty.get(name)) / 2
        assert torch.allclose(merged.pred_uncertainty.get(f'wrapped_{name}'), mean,
                              atol=1e-6), name
    # the TTA maps are over the views of the ensemble's p̄
    naive = _naive_maps([s.seg_logits.data.softmax(0) for s in each])
    _assert_maps(merged, naive)


def test_fewer_than_two_views_or_moved_annotations_are_refused(tiny, tmp_path):
    tta = UncertaintyTTAModel(module=tiny['model'])
    one_view = _dataset(tiny['cfg'], _tta_pipeline([FLIPS[:1], *ANNOTATIONS]))[0]
    with pytest.raises(ValueError, match=r'1 augmented view .*at least two views '
                       r'\(flips and/or scales\).*`tta_pipeline`'):
        tta.test_step(pseudo_collate([one_view]))
    plain = _dataset(tiny['cfg'], tiny['cfg'].test_pipeline)[0]
    with pytest.raises(ValueError, match='no augmented views.*`tta_pipeline`'):
        tta.test_step(pseudo_collate([plain]))
    # annotations loaded before the flip are flipped with the view
    early = _tta_pipeline([[dict(type='LoadAnnotations')], FLIPS,
                           [dict(type='PackSegInputs')]])
    with pytest.raises(ValueError, match='gt_sem_seg of view 1 differs.*after the Resize'):
        tta.test_step(pseudo_collate([_dataset(tiny['cfg'], early)[0]]))
    with pytest.raises(ValueError, match=r'1 view; TTA needs at least two views'):
        TTASegmentor(model=dict(model=member_model_cfg(5), checkpoint=None),
                     scales=(1.0, ), flips=(False, ))


@pytest.mark.slow
def test_test_tool_tta_scores_the_views_uncertainty(tiny, tmp_path):
    checkpoint = str(tmp_path / 'model.pth')
    state = copy.deepcopy(tiny['model'].state_dict())
    # some pixels right (road, in every scene) and some wrong: the AUROCs
    # need both
    state['decode_head.conv_seg.bias'][0] += 3.0
    torch.save(dict(state_dict=state, meta={}), checkpoint)
    scores = ['max_prob', 'entropy', *UNCERTAINTY_NAMES]
    cfg = write_tiny_config(str(tmp_path / 'ood.py'), tiny['cfg'].data_root, max_iters=1,
                            test_split='ood', extra=f"""
        test_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']),
                          dict(type='UncertaintyMetric', scores={scores!r})]
        """)
    work_dir = str(tmp_path / 'run')
    run_tool(['tools/test.py', cfg, checkpoint, '--tta', '--work-dir', work_dir])
    files = [f for f in glob.glob(osp.join(work_dir, '*', '*.json'))
             if osp.basename(f)[:-5] == osp.basename(osp.dirname(f))]
    metrics = json.load(open(sorted(files)[-1]))
    assert 0.0 <= metrics['mIoU'] <= 100.0 and 0.0 <= metrics['ECE'] <= 1.0
    for name in UNCERTAINTY_NAMES:
        for key in ('auroc', 'ood_auroc'):
            assert 0.0 <= metrics[f'{key}/{name}'] <= 1.0, (key, name)
