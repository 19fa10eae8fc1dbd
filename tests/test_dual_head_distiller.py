"""DualHead and EnsembleDistiller: unchanged segmentation, frozen teachers,
student-only checkpoints, and an uncertainty branch that learns."""
import copy
import math

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.optim import OptimWrapper

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmengine.structures import PixelData

from mmseg_uncert.models.segmentors import mmseg_scope

from helpers.members import member_model_cfg, member_specs, save_member

NORM = dict(type='BN', requires_grad=True)
HEADS = {
    'FCNHead': dict(type='FCNHead', in_channels=16, in_index=2, channels=8,
                    num_convs=1, num_classes=4, norm_cfg=NORM),
    'DepthwiseSeparableFCNHead': dict(
        type='DepthwiseSeparableFCNHead', in_channels=16, in_index=2, channels=8,
        concat_input=False, num_classes=4, norm_cfg=NORM),
    'ASPPHead': dict(type='ASPPHead', in_channels=16, in_index=2, channels=8,
                     dilations=(1, 2), num_classes=4, norm_cfg=NORM),
    'DepthwiseSeparableASPPHead': dict(
        type='DepthwiseSeparableASPPHead', in_channels=16, in_index=2, channels=8,
        dilations=(1, 2), c1_in_channels=8, c1_channels=4, num_classes=4,
        norm_cfg=NORM),
    'UPerHead': dict(type='UPerHead', in_channels=[8, 8, 16], in_index=[0, 1, 2],
                     channels=8, pool_scales=(1, 2), num_classes=4, norm_cfg=NORM),
    'LRASPPHead': dict(type='LRASPPHead', in_channels=(8, 8, 16), in_index=(0, 1, 2),
                       channels=8, input_transform='multiple_select',
                       branch_channels=(4, 4), num_classes=4, norm_cfg=NORM),
}


def _features(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # LRASPPHead pools with a 49x49 kernel: the deepest map must be at least that
    return [torch.randn(2, 8, 64, 64, generator=g), torch.randn(2, 8, 64, 64, generator=g),
            torch.randn(2, 16, 64, 64, generator=g)]


@pytest.mark.parametrize('name,branch_conv', [(name, 'conv') for name in sorted(HEADS)]
                         + [('DepthwiseSeparableFCNHead', 'depthwise_separable')])
def test_dual_head_leaves_the_segmentation_of_the_wrapped_head_unchanged(name, branch_conv):
    with mmseg_scope():
        torch.manual_seed(0)
        dual = MODELS.build(dict(type='DualHead', head=HEADS[name], branch_conv=branch_conv,
                                 uncertainty_names=('std', 'epistemic')))
        bare = MODELS.build(HEADS[name])
    bare.load_state_dict(dual.head.state_dict())
    dual.eval(), bare.eval()
    x = _features()
    with torch.no_grad():
        logits, raw, feature = dual.forward_with_uncertainty(x)
        expected = bare(x)
        out = dual(x)
    assert torch.equal(logits, expected)
    assert raw.shape == (2, 2 * 64, *expected.shape[2:])
    assert out.shape == (2, 4 + 2, *expected.shape[2:])
    assert torch.equal(out[:, :4], expected)
    assert feature.shape[1] == dual.feature_channels


def test_dual_head_refuses_heads_it_cannot_hook():
    with pytest.raises(TypeError, match='cannot follow PointHead.*Conv1d.*PointRend'):
        MODELS.build(dict(type='DualHead', head=dict(type='PointHead', in_channels=[8],
                                                     in_index=[0], channels=8,
                                                     num_classes=4)))
    with pytest.raises(ValueError, match="branch_conv must be one of.*got 'dilated'"):
        MODELS.build(dict(type='DualHead', head=HEADS['FCNHead'], branch_conv='dilated'))


def test_branch_reads_the_softmax_and_scales_its_gradient_into_the_features():
    """read_probabilities: the branch's input is [features, softmax(logits)]
    (detached); feature_grad_scale s: the branch's gradient reaching the
    shared features (and below) is s times the full one."""
    grads = {}
    for scale in (1.0, 0.5, 0.0):
        with mmseg_scope():
            torch.manual_seed(0)
            dual = MODELS.build(dict(type='DualHead', head=HEADS['FCNHead'],
                                     feature_grad_scale=scale))
        dual.eval()
        x = [t.requires_grad_() for t in _features()]
        logits, raw, feature = dual.forward_with_uncertainty(x)
        raw.sum().backward()
        grads[scale] = torch.zeros_like(x[2]) if x[2].grad is None else x[2].grad.clone()
    first = dual.uncertainty_branch[0].conv
    assert first.in_channels == dual.feature_channels + 4
    # the branch's own input, rebuilt by hand, gives the same outputs
    expected = dual.uncertainty_branch(torch.cat([feature, logits.softmax(1)], 1))
    assert torch.allclose(raw, expected, atol=1e-6)
    assert grads[1.0].abs().sum() > 0
    assert torch.allclose(grads[0.5], 0.5 * grads[1.0], atol=1e-6)
    assert torch.all(grads[0.0] == 0)
    with pytest.raises(ValueError, match='feature_grad_scale'):
        MODELS.build(dict(type='DualHead', head=HEADS['FCNHead'], feature_grad_scale=2.0))


def test_uncertainty_branch_overfits_skewed_targets_with_the_default_loss():
    """The forum user's own test: a few images' targets, mostly near 0 with
    rare high values; the default loss must learn them, not collapse."""
    with mmseg_scope():
        torch.manual_seed(0)
        dual = MODELS.build(dict(type='DualHead', head=HEADS['FCNHead'],
                                 loss_uncertainty=dict(type='UncertaintyRegressionLoss',
                                                       value_range=(0.0, 0.5))))
    x = _features(3)
    g = torch.Generator().manual_seed(4)
    # ~85% of the pixels near 0, the rest spread up to 0.5
    target = torch.rand(2, 1, 64, 64, generator=g) * 0.005
    rare = torch.rand(2, 1, 64, 64, generator=g) < 0.15
    target[rare] = 0.1 + 0.4 * torch.rand(int(rare.sum()), generator=g)
    optim = torch.optim.Adam(dual.parameters(), lr=1e-2)
    dual.train()
    for _ in range(300):
        _, raw, _ = dual.forward_with_uncertainty(x)
        loss = dual.loss_uncertainty(raw, target)
        optim.zero_grad()
        loss.backward()
        optim.step()
    dual.eval()
    with torch.no_grad():
        pred = dual.loss_uncertainty.decode(dual.forward_with_uncertainty(x)[1])
    corr = torch.corrcoef(torch.stack([pred.flatten(), target.flatten()]))[0, 1]
    assert corr > 0.9
    assert (pred[rare] > 0.05).float().mean() > 0.9  # the rare highs are learnt


# ---------------------------------------------------------------- distiller

def _student_cfg(num_classes: int = 5, names=('std', )) -> dict:
    cfg = member_model_cfg(num_classes)
    head = cfg['decode_head']
    cfg['decode_head'] = dict(type='DualHead', head=head, uncertainty_names=names,
                              loss_uncertainty=dict(type='UncertaintyRegressionLoss',
                                                    value_range=(0.0, 0.5)))
    return cfg


def _distiller(tmp_path, **kwargs):
    cfg = _student_cfg()
    cfg.update(type='EnsembleDistiller', teacher=member_specs(tmp_path, 2), **kwargs)
    with mmseg_scope():
        torch.manual_seed(0)
        model = MODELS.build(ConfigDict(cfg))
    model.init_weights()
    return model


def _batch(seed: int = 0, n: int = 2):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, 3, 64, 128, generator=g)
    samples = []
    for _ in range(n):
        label = torch.randint(0, 5, (1, 64, 128), generator=g)
        label[:, :8] = 255
        s = SegDataSample(metainfo=dict(ori_shape=(64, 128), img_shape=(64, 128),
                                        pad_shape=(64, 128), padding_size=[0, 0, 0, 0]))
        s.gt_sem_seg = PixelData(data=label)
        samples.append(s)
    return inputs, samples


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


def test_student_checkpoint_loads_into_a_plain_config(tmp_path):
    model = _distiller(tmp_path)
    model.eval()
    plain_cfg = dict(_student_cfg(), type='UncertaintyEncoderDecoder')
    with mmseg_scope():
        plain = MODELS.build(ConfigDict(plain_cfg))
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.eval()
    inputs, samples = _batch(5)
    with torch.no_grad():
        a = model.predict(inputs, copy.deepcopy(samples))
        b = plain.predict(inputs, copy.deepcopy(samples))
    assert torch.equal(a[0].seg_logits.data, b[0].seg_logits.data)
    assert torch.equal(a[0].pred_uncertainty.std, b[0].pred_uncertainty.std)


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


def test_dual_head_alone_trains_on_labels_with_every_parameter_in_the_graph():
    """Without a teacher only the segmentation loss applies; the branch still
    gets a (zero) gradient, so DDP finds every parameter used."""
    with mmseg_scope():
        dual = MODELS.build(dict(type='DualHead', head=HEADS['FCNHead']))
    samples = []
    for _ in range(2):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, 4, (1, 64, 64)))
        samples.append(s)
    losses = dual.loss(_features(), samples, {})
    assert set(losses) == {'loss_ce', 'acc_seg'}
    losses['loss_ce'].backward()
    assert all(p.grad is not None for p in dual.parameters())
    assert all(p.grad.abs().sum() == 0 for p in dual.uncertainty_branch.parameters())


def test_kd_and_uncertainty_cover_ignored_pixels_and_leave_padding_out(tmp_path):
    """Every label 255 here, except one row: CE sees one row, KD and the
    uncertainty loss the whole image, never the padding beyond img_shape."""
    model = _distiller(tmp_path)
    model.eval()  # no dropout, BN running statistics: the same forward twice
    inputs, samples = _batch(6)
    for s in samples:
        s.gt_sem_seg.data[:] = 255
        s.gt_sem_seg.data[:, 40] = 1
        s.set_metainfo(dict(img_shape=(48, 100)))  # the rest is padding
    losses = model.loss(inputs, samples)
    with torch.no_grad():
        x = model.extract_feat(inputs)
        _, logits, raw, _, _ = model._student_forward(x, samples, with_loss=False)
        # KD at the label's size, the student's logits upsampled
        logits = torch.nn.functional.interpolate(logits, size=(64, 128), mode='bilinear',
                                                 align_corners=False)
        teacher = model._teacher_outputs(inputs, [s.metainfo for s in samples])
        crop = (slice(None), slice(None), slice(0, 48), slice(0, 100))
        log_p = logits[crop].log_softmax(1)
        q = teacher.prob[crop]
        expected_kd = (q * (q.clamp_min(1e-38).log() - log_p)).sum(1).mean()
        # the uncertainty term at the branch's resolution (64x128 / 8 = 8x16):
        # the teacher's map averaged over each 8x8 cell; cells with more image
        # than padding count (48 / 8 = 6 rows, 100 / 8 = 12.5 -> 12 columns plus
        # the half-padded 13th, which has less than half image: 12)
        target = torch.nn.functional.avg_pool2d(teacher.maps['std'][:, None], 8)
        expected_u = model.decode_head.loss_uncertainty(raw[:, :, :6, :12],
                                                        target[:, :, :6, :12])
    assert losses['distill.loss_uncertainty'].item() == pytest.approx(expected_u.item(), rel=1e-5)
    # the KD of a student near its teacher is a small difference of float32
    # log-probabilities: bounded by a few eps times |logit| + log C, not relative
    bound = 8 * torch.finfo(torch.float32).eps * (
        logits.abs().max().item() + math.log(logits.shape[1]))
    assert losses['distill.loss_kd'].item() == pytest.approx(expected_kd.item(), rel=1e-5,
                                                            abs=bound)


def test_unlabelled_batch_trains_the_uncertainty_and_kd_terms_alone(tmp_path):
    model = _distiller(tmp_path)
    model.train()
    inputs, samples = _batch(7)
    unlabelled = [SegDataSample(metainfo=s.metainfo) for s in samples]
    losses = model.loss(inputs, unlabelled)
    assert set(losses) == {'distill.loss_kd', 'distill.loss_uncertainty'}
    sum(losses.values()).backward()
    assert model.decode_head.uncertainty_branch[1].weight.grad.abs().sum() > 0
    # half labelled: refused, naming the image without labels, not silently unlabelled
    unlabelled[1].set_metainfo(dict(img_path='city/no_label.png'))
    with pytest.raises(ValueError, match=r'mixes labelled and unlabelled.*no_label\.png'):
        model.loss(inputs, [samples[0], unlabelled[1]])


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


def test_student_starts_from_a_member_checkpoint(tmp_path):
    """student_init: backbone and wrapped head take the member's weights
    (decode_head.X -> decode_head.head.X), the uncertainty branch keeps its
    own; a checkpoint of another architecture is refused, naming weights."""
    specs = member_specs(tmp_path, 2)
    cfg = _student_cfg()
    cfg.update(type='EnsembleDistiller', teacher=specs, student_init=specs[1]['checkpoint'])
    with mmseg_scope():
        torch.manual_seed(0)
        model = MODELS.build(ConfigDict(cfg))
    branch_before = copy.deepcopy(model.decode_head.uncertainty_branch.state_dict())
    model.init_weights()
    member = torch.load(specs[1]['checkpoint'], map_location='cpu',
                        weights_only=False)['state_dict']
    own = model.state_dict()
    for key, value in member.items():
        ours = key.replace('decode_head.', 'decode_head.head.', 1)
        assert torch.equal(own[ours], value), key
    for key, value in model.decode_head.uncertainty_branch.state_dict().items():
        assert torch.equal(value, branch_before[key]), key
    wrong_ckpt = save_member(str(tmp_path / 'six.pth'), seed=3, num_classes=6)
    cfg.update(student_init=wrong_ckpt)
    with mmseg_scope():
        model = MODELS.build(ConfigDict(cfg))
    with pytest.raises(KeyError, match=r"six\.pth is not a checkpoint of the student's "
                                       r"architecture.*decode_head\.conv_seg"):
        model.init_weights()


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
