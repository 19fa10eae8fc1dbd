"""Test-time augmentation with uncertainty: UncertaintyTTAModel (tools/test.py
--tta, views of the tta_pipeline) and TTASegmentor (views of a tensor batch, a
distillation teacher), against a naive computation over the augmented views."""
import copy
import glob
import json
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config, ConfigDict
from mmengine.dataset import pseudo_collate
from mmengine.optim import OptimWrapper
from mmengine.structures import PixelData

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_uncert.workflows.split_evaluation import build_split
from mmseg_uncert.models import UNCERTAINTY_NAMES
from mmseg_uncert.models.segmentors import TTASegmentor, UncertaintyTTAModel, mmseg_scope
from mmseg_uncert.models.segmentors.distillation_teacher import feature_taps

from conftest import run_tool
from helpers.members import member_model_cfg
from helpers.tiny_config import write_tiny_config

# the tiny config's normalisation (the project's data preprocessor)
MEAN = torch.tensor([123.675, 116.28, 103.53])[:, None, None]
STD = torch.tensor([58.395, 57.12, 57.375])[:, None, None]


def _sharpen(model: torch.nn.Module, seed: int,
             images: torch.Tensor | None = None) -> torch.nn.Module:
    """A seeded random model whose views disagree, as a trained one's do. At
    random init the features vanish in eval mode and the classifier (std
    0.01) predicts the uniform distribution: BN statistics are taken from
    ``images`` (normalised; default noise) so that features are of unit
    scale, and the classifier gives logits of standard deviation about 2
    (confident, not saturated: one-hot views would tie exactly in their mean)
    with a random bias (no two classes tie where the features are zero)."""
    torch.manual_seed(seed)
    # every weight from the seed: init_weights leaves some layers with the
    # values drawn when the model was built
    for module in model.modules():
        if hasattr(module, 'reset_parameters'):
            module.reset_parameters()
    model.init_weights()
    for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        norm.reset_running_stats()
        norm.momentum = None  # the plain mean over the batch
    model.train()
    with torch.no_grad():
        model.decode_head(model.extract_feat(
            torch.randn(4, 3, 32, 64) if images is None else images))
        classifier = model.decode_head.conv_seg
        classifier.weight.normal_(0, 2.0 / classifier.in_channels**0.5)
        classifier.bias.normal_(0, 0.5)
    return model.eval()


def _naive_maps(probs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The maps of V probability maps (..., C, H, W), by the formulas."""
    stack = torch.stack(probs).double()
    views, num_classes = stack.shape[0], stack.shape[-3]
    mean = stack.mean(0)
    total = -torch.special.xlogy(mean, mean).sum(-3)
    aleatoric = -torch.special.xlogy(stack, stack).sum(-3).mean(0)
    pred = mean.argmax(-3, keepdim=True)
    at_pred = stack.gather(-3, pred.expand(views, *pred.shape)).squeeze(-3)
    votes = F.one_hot(stack.argmax(-3), num_classes).sum(0)
    first, second = stack.topk(2, dim=-3).values.unbind(-3)
    clear_views = ((first - second) > 1e-5).all(0)
    return dict(mean=mean, pred=pred.squeeze(-3), clear_views=clear_views,
                total=total, aleatoric=aleatoric,
                epistemic=total - aleatoric, std=at_pred.std(0, unbiased=False),
                variation_ratio=1 - votes.amax(-1).double() / views)


@pytest.fixture(autouse=True, scope='module')
def flush_denormals():
    """A random model's activations in eval mode are ~1e-9 and their
    products denormal, which makes CPU convolutions about 50x slower; a
    trained model has none. Flushing them to zero keeps the tests fast."""
    supported = torch.set_flush_denormal(True)  # False where the CPU cannot
    yield
    if supported:
        torch.set_flush_denormal(False)


def _normalise(image: torch.Tensor) -> torch.Tensor:
    """What the data preprocessor does to a uint8 BGR image (C, H, W)."""
    return (image.float()[[2, 1, 0]] - MEAN) / STD


def _logits(model, x: torch.Tensor) -> torch.Tensor:
    """The model's class logits at x's size, from its backbone and head."""
    logits = model.decode_head(model.extract_feat(x))
    return F.interpolate(logits, size=x.shape[2:], mode='bilinear', align_corners=False)


def _assert_maps(sample: SegDataSample, naive: dict, atol: float = 1e-5) -> None:
    """The sample's maps against the naive ones. Where two classes tie (to
    rounding) in p̄ or in a view, the argmax may fall either way: there the
    prediction must be one of the tied classes, and std and variation_ratio
    (which follow the argmax) are compared on the other pixels only."""
    mean = naive['mean']
    assert torch.allclose(sample.seg_logits.data.exp().double(), mean, atol=atol)
    pred = sample.pred_sem_seg.data[0]
    first, second = mean.topk(2, dim=-3).values.unbind(-3)
    assert (mean.gather(-3, pred[None]).squeeze(-3) >= first - atol).all()
    clear = ((first - second) > atol) & naive['clear_views']
    assert clear.double().mean() > 0.9
    assert torch.equal(pred[clear], naive['pred'][clear])
    for name in UNCERTAINTY_NAMES:
        got = sample.pred_uncertainty.get(name)
        assert got.shape[0] == 1, name
        where = clear if name in ('std', 'variation_ratio') else torch.ones_like(clear)
        assert torch.allclose(got[0].double()[where], naive[name][where], atol=atol), name
    assert naive['epistemic'].max() > 1e-2  # the views do disagree


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


def test_tensor_views_give_the_naive_maps():
    spec = dict(model=member_model_cfg(5), checkpoint=None)
    tta = MODELS.build(dict(type='TTASegmentor', model=spec, scales=(0.5, 1.0),
                            flips=(False, True)))
    _sharpen(tta.model, seed=1)
    inputs = torch.randn(2, 3, 32, 64, generator=torch.Generator().manual_seed(0))
    samples = [SegDataSample(metainfo=dict(ori_shape=(32, 64), img_shape=(32, 64),
                                           pad_shape=(32, 64), padding_size=[0, 0, 0, 0]))
               for _ in range(2)]
    with torch.no_grad():
        merged = tta.predict(inputs, samples)
        probs = []
        for size in ((16, 32), (32, 64)):
            x = F.interpolate(inputs, size=size, mode='bilinear', align_corners=False)
            for flip in (False, True):
                logits = _logits(tta.model, torch.flip(x, dims=[3]) if flip else x)
                logits = torch.flip(logits, dims=[3]) if flip else logits
                probs.append(F.interpolate(logits, size=(32, 64), mode='bilinear',
                                           align_corners=False).softmax(1))
    naive = _naive_maps(probs)
    for i, sample in enumerate(merged):
        _assert_maps(sample, {k: v[i] for k, v in naive.items()})


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


# ---------------------------------------------------------------- teacher

def _student_cfg() -> dict:
    cfg = member_model_cfg(5)
    cfg['decode_head'] = dict(type='DualHead', head=cfg['decode_head'],
                              uncertainty_names=('epistemic', 'aleatoric'),
                              loss_uncertainty=dict(type='UncertaintyRegressionLoss',
                                                    value_range=(0.0, 2.0)))
    return cfg


def _batch(n: int = 2, size=(32, 64)):
    g = torch.Generator().manual_seed(3)
    samples = []
    for _ in range(n):
        s = SegDataSample(metainfo=dict(ori_shape=size, img_shape=size, pad_shape=size,
                                        padding_size=[0, 0, 0, 0]))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, *size), generator=g))
        samples.append(s)
    return torch.randn(n, 3, *size, generator=g), samples


def test_distiller_with_a_tta_teacher_trains_on_the_naive_views(tmp_path):
    checkpoint = str(tmp_path / 'teacher.pth')
    with mmseg_scope():
        teacher_model = _sharpen(MODELS.build(member_model_cfg(5)), seed=2)
    torch.save(dict(state_dict=teacher_model.state_dict(), meta={}), checkpoint)
    teacher = dict(type='TTASegmentor', model=dict(model=member_model_cfg(5),
                                                   checkpoint=checkpoint),
                   scales=(0.75, 1.0), flips=(False, True))
    with mmseg_scope():
        torch.manual_seed(0)
        model = MODELS.build(ConfigDict(dict(_student_cfg(), type='EnsembleDistiller',
                                             teacher=teacher)))
    model.init_weights()
    inputs, samples = _batch()
    metas = [s.metainfo for s in samples]
    with torch.no_grad():
        got = model._teacher_outputs(inputs, metas)
        probs = []
        for size in ((24, 48), (32, 64)):
            x = F.interpolate(inputs, size=size, mode='bilinear', align_corners=False)
            for flip in (False, True):
                logits = _logits(teacher_model, torch.flip(x, dims=[3]) if flip else x)
                logits = torch.flip(logits, dims=[3]) if flip else logits
                probs.append(F.interpolate(logits, size=(32, 64), mode='bilinear',
                                           align_corners=False).softmax(1))
    naive = _naive_maps(probs)
    assert torch.allclose(got.prob.double(), naive['mean'], atol=1e-5)
    for name in UNCERTAINTY_NAMES:
        assert torch.allclose(got.maps[name].double(), naive[name], atol=1e-5), name
    # one training step: every term finite, the student moves, the teacher not
    teacher_before = copy.deepcopy(model.teacher.state_dict())
    student_before = model.decode_head.head.conv_seg.weight.detach().clone()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    model.train()
    losses = model.loss(inputs, samples)
    assert {'decode.loss_ce', 'distill.loss_kd', 'distill.loss_uncertainty'} <= set(losses)
    assert all(torch.isfinite(v).all() for k, v in losses.items() if 'loss' in k)
    optim.update_params(sum(v for k, v in losses.items() if 'loss' in k))
    assert not torch.equal(model.decode_head.head.conv_seg.weight, student_before)
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    # feature terms: a flipped view's features are mirrored
    with pytest.raises(ValueError, match='flipped views give mirrored'):
        feature_taps(model.teacher)
    model.teacher.flips = (False, )
    taps = feature_taps(model.teacher)
    assert [t.classifier for t in taps] == [model.teacher.model.decode_head.conv_seg]


# ---------------------------------------------------------------- end to end

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
