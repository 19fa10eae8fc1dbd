"""DualHead and EnsembleDistiller: unchanged segmentation, frozen teachers,
student-only checkpoints, and an uncertainty branch that learns."""
import copy

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.optim import OptimWrapper

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmengine.structures import PixelData

from mmseg_uncert.models.decode_heads import SUPPORTED_HEADS
from mmseg_uncert.models.segmentors import mmseg_scope

from helpers.members import member_model_cfg, member_specs, save_member

NORM = dict(type='BN', requires_grad=True)
HEADS = {
    'FCNHead': dict(type='FCNHead', in_channels=16, in_index=2, channels=8,
                    num_convs=1, num_classes=4, norm_cfg=NORM),
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


@pytest.mark.parametrize('name', sorted(HEADS))
def test_dual_head_leaves_the_segmentation_of_the_wrapped_head_unchanged(name):
    with mmseg_scope():
        torch.manual_seed(0)
        dual = MODELS.build(dict(type='DualHead', head=HEADS[name],
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
    with pytest.raises(TypeError, match='cannot hook .PointHead.*' + SUPPORTED_HEADS[0]):
        MODELS.build(dict(type='DualHead', head=dict(type='PointHead')))


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
