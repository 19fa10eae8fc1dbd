"""TTASegmentor: views of a tensor batch, as a model and as a teacher."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.optim import OptimWrapper
from mmengine.structures import PixelData

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_uncert.models import UNCERTAINTY_NAMES
from mmseg_uncert.models.segmentors import mmseg_scope
from mmseg_uncert.models.segmentors.distillation_teacher import feature_taps

from helpers.members import member_model_cfg
from helpers.tta import flush_denormals  # noqa: F401  (autouse)
from helpers.tta import _assert_maps, _logits, _naive_maps, _sharpen


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


def test_tta_of_an_ensemble_folds_every_member_on_every_view(tmp_path):
    specs, models = [], []
    for seed in (4, 5):
        with mmseg_scope():
            model = _sharpen(MODELS.build(member_model_cfg(5)), seed=seed)
        path = str(tmp_path / f'member_{seed}.pth')
        torch.save(dict(state_dict=model.state_dict(), meta={}), path)
        specs.append(dict(model=member_model_cfg(5), checkpoint=path))
        models.append(model.eval())
    tta = MODELS.build(dict(type='TTASegmentor', members=specs, scales=(0.5, 1.0),
                            flips=(False, True)))
    inputs, samples = _batch()
    with torch.no_grad():
        merged = tta.predict(inputs, samples)
        probs = {}  # (member, view) -> p
        for v, (size, flip) in enumerate([(s, f) for s in ((16, 32), (32, 64))
                                          for f in (False, True)]):
            x = F.interpolate(inputs, size=size, mode='bilinear', align_corners=False)
            for m, model in enumerate(models):
                logits = _logits(model, torch.flip(x, dims=[3]) if flip else x)
                logits = torch.flip(logits, dims=[3]) if flip else logits
                probs[m, v] = F.interpolate(logits, size=(32, 64), mode='bilinear',
                                            align_corners=False).softmax(1)
    naive = _naive_maps(list(probs.values()))
    for i, sample in enumerate(merged):
        _assert_maps(sample, {k: v[i] for k, v in naive.items()})
    # the chain rule: I(y; m, v) = I(y; m) + I(y; v | m), I(y; m) the epistemic
    # map of the two members' view-averaged predictions
    per_member = [_naive_maps([probs[m, v] for v in range(4)]) for m in range(2)]
    between = _naive_maps([pm['mean'].float() for pm in per_member])['epistemic']
    within = sum(pm['epistemic'] for pm in per_member) / 2
    assert torch.allclose(naive['epistemic'], between + within, atol=1e-10)
    # feature taps follow the maps' order: views outer, members inner
    tta.flips = (False, )
    taps = feature_taps(tta)
    assert [t.classifier for t in taps] == [m.decode_head.conv_seg
                                            for m in tta.model.members]
    with pytest.raises(ValueError, match='either model .* or members'):
        MODELS.build(dict(type='TTASegmentor', model=specs[0], members=specs))
