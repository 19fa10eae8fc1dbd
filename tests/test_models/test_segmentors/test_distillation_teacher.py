"""The distillation teacher: frozen, run first, its taps, targets and checks."""
import copy

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.optim import OptimWrapper

from mmseg.registry import MODELS

from mmseg_uncert.models.segmentors import mmseg_scope

from helpers.distillation import _batch, _distiller, _student_cfg
from helpers.members import member_model_cfg, member_specs


def test_teachers_stay_frozen_through_training_steps(tmp_path):
    model = _distiller(tmp_path, pairwise_loss=dict(type='PairwiseKDLoss'),
                       mimic_loss=dict(type='FeatureMimicLoss'))
    teacher_before = copy.deepcopy(model.teacher.state_dict())
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    model.train()
    assert not model.teacher.training
    assert all(not m.training for m in model.teacher.modules())
    for step in range(3):
        losses = model.loss(*_batch(step))
        assert {'decode.loss_ce', 'distill.loss_kd', 'distill.loss_uncertainty',
                'distill.loss_pairwise', 'distill.loss_mimic'} <= set(losses)
        total = sum(v for k, v in losses.items() if 'loss' in k)
        optim.update_params(total)
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    assert all(p.grad is None and not p.requires_grad
               for p in model.teacher.parameters())
    assert not any(k.startswith('teacher') for k in model.state_dict())


def test_the_teacher_runs_before_the_student_builds_its_graph(tmp_path):
    """The teacher's members run first, without grad, so that no activation
    of the student is alive meanwhile (peak memory: the larger of the
    teacher's inference and the student's step, not their sum)."""
    model = _distiller(tmp_path, pairwise_loss=dict(type='PairwiseKDLoss'))
    model.train()
    order = []
    for i, member in enumerate(model.teacher.members):
        member.backbone.register_forward_pre_hook(
            lambda *_, i=i: order.append((f'teacher {i}', torch.is_grad_enabled())))
    model.backbone.register_forward_pre_hook(
        lambda *_: order.append(('student', torch.is_grad_enabled())))
    model.loss(*_batch(0))
    assert order[-1] == ('student', True)
    assert sorted(order[:-1]) == [('teacher 0', False), ('teacher 1', False)]


def test_a_teacher_call_outside_a_step_leaves_the_next_step_unchanged(tmp_path):
    """Running the teacher on its own (as a benchmark or a user inspecting it
    does) records nothing: taps record only inside their ``with`` block; the
    next distillation step gives the same losses as without that call (it
    once stopped with 'called its classifier conv_seg 2 times'), and no hook
    stays on the teacher after a step."""
    model = _distiller(tmp_path, pairwise_loss=dict(type='PairwiseKDLoss'),
                       mimic_loss=dict(type='FeatureMimicLoss')).eval()  # no dropout
    inputs, samples = _batch(0)
    with torch.no_grad():
        expected = {k: v.clone() for k, v in model.loss(inputs, samples).items()}
        metas = [s.metainfo for s in samples]
        for _ in model.teacher.member_probabilities(inputs, metas):
            pass
        got = model.loss(inputs, samples)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    assert model.teacher_taps
    for tap in model.teacher_taps:
        assert not tap.classifier._forward_pre_hooks and not tap.classifier._forward_hooks


def test_distiller_errors_name_the_parts(tmp_path):
    cfg = _student_cfg(num_classes=6)
    cfg.update(type='EnsembleDistiller', teacher=member_specs(tmp_path, 1))
    with pytest.raises(ValueError, match='teacher predicts 5 classes.*student 6'):
        with mmseg_scope():
            MODELS.build(cfg)
    missing = str(tmp_path / 'gone.pth')
    cfg = _student_cfg()
    cfg.update(type='EnsembleDistiller',
               teacher=[dict(model=member_model_cfg(5), checkpoint=missing)])
    with pytest.raises(FileNotFoundError, match=f'checkpoint {missing}'):
        with mmseg_scope():
            MODELS.build(cfg)
    cfg = _student_cfg(names=('sharpness', ))
    cfg.update(type='EnsembleDistiller', teacher=member_specs(tmp_path, 1))
    with pytest.raises(ValueError, match=r"no teacher map named \['sharpness'\]"):
        with mmseg_scope():
            MODELS.build(cfg)


def test_non_finite_teacher_maps_stop_training_naming_the_image(tmp_path):
    model = _distiller(tmp_path)
    inputs, samples = _batch(8)
    for i, s in enumerate(samples):
        s.set_metainfo(dict(img_path=f'city/img_{i}.png'))
    real = model.teacher.member_probabilities

    def poisoned(inputs, metas):
        for prob in real(inputs, metas):
            prob = prob.clone()
            prob[1, :, 3, 3] = float('nan')
            yield prob

    model.teacher.member_probabilities = poisoned
    with pytest.raises(FloatingPointError, match=r"NaN or infinite on image city/img_1\.png"):
        model.loss(inputs, samples)


def test_per_class_spread_targets_of_the_forum_baseline(tmp_path):
    """class_std/<c> is the members' population std of class c's probability
    (checked against torch.std over the stacked members); the forum's
    student regresses all C of them with sigmoid + MSE over every channel."""
    from mmseg_uncert.models.uncertainty import PredictiveStatistics
    g = torch.Generator().manual_seed(1)
    probs = [torch.rand(2, 5, 4, 6, generator=g).softmax(1) for _ in range(3)]
    stats = PredictiveStatistics()
    for p in probs:
        stats.add(p)
    expected = torch.stack(probs).std(0, unbiased=False)
    assert torch.allclose(stats.class_std(), expected, atol=1e-6)

    names = tuple(f'std_{c}' for c in range(5))
    cfg = _student_cfg(names=names)
    cfg['decode_head']['loss_uncertainty'] = dict(type='UncertaintyRegressionLoss', form='mse')
    cfg.update(type='EnsembleDistiller', teacher=member_specs(tmp_path, 2),
               uncertainty_targets={n: f'class_std/{c}' for c, n in enumerate(names)})
    with mmseg_scope():
        torch.manual_seed(0)
        model = MODELS.build(ConfigDict(cfg))
    model.init_weights()
    model.eval()
    inputs, samples = _batch(9)
    losses = model.loss(inputs, samples)
    with torch.no_grad():
        _, _, raw, _, _ = model._student_forward(model.extract_feat(inputs), samples,
                                                  with_loss=False)
        stats = PredictiveStatistics()
        for prob in model.teacher.member_probabilities(inputs, [s.metainfo for s in samples]):
            stats.add(prob)
        target = torch.nn.functional.avg_pool2d(stats.class_std(), 8)
        expected_loss = ((raw.sigmoid() - target) ** 2).mean()
    assert losses['distill.loss_uncertainty'].item() == pytest.approx(expected_loss.item(),
                                                                      rel=1e-5)
    cfg.update(uncertainty_targets={n: f'class_std/{c + 1}' for c, n in enumerate(names)})
    with pytest.raises(ValueError, match=r"no teacher map named \['class_std/5'\].*class_std/4"):
        with mmseg_scope():
            MODELS.build(ConfigDict(cfg))
    # a target for a channel the student does not regress is named, not ignored
    cfg.update(uncertainty_targets={'aleatoric': 'aleatoric'})
    with pytest.raises(ValueError, match=r"channels \['aleatoric'\] that the student "
                                         r"does not regress; its regressed maps are "
                                         r"\['std_0'"):
        with mmseg_scope():
            MODELS.build(ConfigDict(cfg))
