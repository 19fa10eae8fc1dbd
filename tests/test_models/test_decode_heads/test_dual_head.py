"""DualHead: unchanged segmentation, an uncertainty branch that learns, bad heads.

Also mmseg_uncert.models.decode_heads.uncertainty_head, the contract of its
outputs (the class logits, then the named maps).
"""
from __future__ import annotations

import pytest
import torch
from mmengine.structures import PixelData

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_uncert.models.segmentors import mmseg_scope

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


def _fcn(num_classes: int = 4) -> dict:
    return dict(type='FCNHead', in_channels=8, channels=8, num_convs=1,
                num_classes=num_classes, norm_cfg=dict(type='BN'))


def test_a_head_config_that_is_not_a_decode_head_names_the_key():
    with mmseg_scope(), pytest.raises(TypeError, match=r"head \(type='ResNet'\) is not an "
                                                        r"mmseg decode head"):
        MODELS.build(dict(type='DualHead', head=dict(type='ResNet', depth=18)))


@pytest.mark.parametrize('names,match', [((), 'uncertainty_names must be a non-empty'),
                                         ('std', 'uncertainty_names must be a non-empty'),
                                         (('std', 'epistemic', 'std'),
                                          r"uncertainty_names names \['std'\] more than once")])
def test_empty_or_repeated_uncertainty_names_are_refused(names, match):
    with mmseg_scope(), pytest.raises(ValueError, match=match):
        MODELS.build(dict(type='DualHead', head=_fcn(), uncertainty_names=names))


def test_derived_aleatoric_is_the_entropy_of_the_prediction_less_the_epistemic():
    with mmseg_scope():
        torch.manual_seed(0)
        dual = MODELS.build(dict(type='DualHead', head=HEADS['FCNHead'],
                                 uncertainty_names=('epistemic', 'aleatoric'),
                                 derived_names=('aleatoric', )))
    assert dual.regressed_names == ('epistemic', )
    assert dual.out_channels == 4 + 2
    dual.eval()
    x = _features(5)
    metas = [dict(img_shape=(128, 128), pad_shape=(128, 128))] * 2
    with torch.no_grad():
        logits, raw, _ = dual.forward_with_uncertainty(x)
        assert raw.shape[1] == 64  # one regressed map, 64 bins
        # by hand: softmax entropy at the output's size, epistemic resized there
        for out, scores in ((dual(x), logits),
                            (dual.predict(x, metas, dict()),
                             torch.nn.functional.interpolate(
                                 logits, size=(128, 128), mode='bilinear',
                                 align_corners=False))):
            prob = scores.double().softmax(1)
            total = -(prob * prob.log()).sum(1)
            epistemic = torch.nn.functional.interpolate(
                dual.loss_uncertainty.decode(raw), size=scores.shape[2:],
                mode='bilinear', align_corners=False)[:, 0].double()
            assert torch.allclose(out[:, :4], scores, atol=1e-5)
            assert torch.allclose(out[:, 4].double(), epistemic, atol=1e-5)
            assert torch.allclose(out[:, 5].double(), (total - epistemic).clamp_min(0),
                                  atol=1e-5)
    # where the regressed epistemic exceeds the entropy the aleatoric is 0, not < 0
    scores = torch.tensor([[[[20.0]], [[0.0]], [[0.0]], [[0.0]]]])
    raw = torch.full((1, 64, 1, 1), -30.0)
    raw[0, 40] = 30.0  # epistemic at bin 40's centre, far above H ~ 0
    assert dual._maps(scores, raw)[0, 1].item() == 0.0


@pytest.mark.parametrize('names,derived,match', [
    (('epistemic', 'aleatoric'), ('total', ), r"only \['aleatoric'\] can be derived"),
    (('epistemic', ), ('aleatoric', ), "not in uncertainty_names"),
    (('std', 'aleatoric'), ('aleatoric', ), "derived from a regressed 'epistemic'"),
])
def test_derived_names_that_cannot_be_derived_are_refused(names, derived, match):
    with mmseg_scope(), pytest.raises(ValueError, match=match):
        MODELS.build(dict(type='DualHead', head=_fcn(), uncertainty_names=names,
                          derived_names=derived))


def test_value_ranges_must_fit_the_regressed_maps():
    loss = dict(type='UncertaintyRegressionLoss', value_range=[(0.0, 1.1), (0.0, 2.0)])
    with mmseg_scope():
        MODELS.build(dict(type='DualHead', head=_fcn(), loss_uncertainty=loss,
                          uncertainty_names=('epistemic', 'aleatoric')))
        with pytest.raises(ValueError, match=r"2 entries for the 1 regressed maps "
                                             r"\['epistemic'\] \(derived, not regressed: "
                                             r"\['aleatoric'\]\)"):
            MODELS.build(dict(type='DualHead', head=_fcn(), loss_uncertainty=loss,
                              uncertainty_names=('epistemic', 'aleatoric'),
                              derived_names=('aleatoric', )))


def test_softmax_entropy_against_the_formula_and_at_extreme_logits():
    from mmseg_uncert.models.decode_heads.dual_head import softmax_entropy
    logits = torch.randn(2, 7, 5, 6, generator=torch.Generator().manual_seed(0)) * 4
    prob = logits.double().softmax(1)
    expected = -(prob * prob.log()).sum(1)
    assert torch.allclose(softmax_entropy(logits).double(), expected, atol=1e-5)
    # no overflow: one class at +1000 gives 0 nats; equal logits give log C
    sure = torch.tensor([1000.0, -1000.0, 0.0]).view(1, 3, 1, 1)
    assert softmax_entropy(sure).item() == pytest.approx(0.0, abs=1e-6)
    equal = torch.full((1, 4, 1, 1), 500.0)
    assert softmax_entropy(equal).item() == pytest.approx(torch.log(torch.tensor(4.0)).item(),
                                                          rel=1e-6)


def test_regressed_derived_maps_are_auxiliary_targets_and_outputs_stay_derived():
    loss = dict(type='UncertaintyRegressionLoss', value_range=[(0.0, 1.1), (0.0, 2.0)])
    with mmseg_scope():
        torch.manual_seed(0)
        dual = MODELS.build(dict(type='DualHead', head=HEADS['FCNHead'],
                                 uncertainty_names=('epistemic', 'aleatoric'),
                                 derived_names=('aleatoric', ), regress_derived=True,
                                 loss_uncertainty=loss))
        with pytest.raises(ValueError, match='regress_derived=True .* derived_names is empty'):
            MODELS.build(dict(type='DualHead', head=HEADS['FCNHead'], regress_derived=True))
    # both maps are regressed (the distillation's targets), 2 x 64 raw channels
    assert dual.regressed_names == ('epistemic', 'aleatoric')
    dual.eval()
    x = _features(6)
    with torch.no_grad():
        logits, raw, _ = dual.forward_with_uncertainty(x)
        out = dual(x)
    assert raw.shape[1] == 128
    decoded = dual.loss_uncertainty.decode(raw)
    prob = logits.double().softmax(1)
    total = -(prob * prob.log()).sum(1)
    # the output is the regressed epistemic and the derived aleatoric, not the regressed one
    assert torch.allclose(out[:, 4], decoded[:, 0], atol=1e-6)
    assert torch.allclose(out[:, 5].double(), (total - decoded[:, 0].double()).clamp_min(0),
                          atol=1e-5)
    assert not torch.allclose(out[:, 5], decoded[:, 1], atol=1e-3)


def test_softmax_over_classes_is_the_softmax():
    from mmseg_uncert.models.decode_heads.dual_head import softmax_over_classes
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 19, 7, 9, generator=g) * 30  # confident pixels too
    z[:, :, 0, 0] = 5.0  # every class tied
    z[0, 3, 1, 1] = 1e4  # one class far ahead
    got = softmax_over_classes(z)
    # within the float32 rounding of exp and of a sum of 19 terms
    assert torch.allclose(got, z.double().softmax(1).float(), rtol=1e-5, atol=1e-7)
    assert torch.allclose(got.sum(1), torch.ones(2, 7, 9), atol=1e-6)


@pytest.mark.parametrize('branch_conv', ['conv', 'depthwise_separable'])
@pytest.mark.parametrize('norm', ['BN', 'GN'])
def test_branch_in_eval_takes_features_and_probabilities_apart_with_the_same_values(
        branch_conv, norm):
    """In eval the first layer runs on the two inputs apart (no concatenation):
    the branch's outputs on their concatenation, to float rounding. Training,
    and a norm without running statistics (GN), take the concatenation."""
    head = dict(HEADS['FCNHead'], norm_cfg=dict(type=norm, num_groups=2)
                if norm == 'GN' else NORM)
    with mmseg_scope():
        torch.manual_seed(0)
        dual = MODELS.build(dict(type='DualHead', head=head, branch_conv=branch_conv,
                                 branch_channels=6, uncertainty_names=('std',)))
    g = torch.Generator().manual_seed(1)
    for module in dual.uncertainty_branch.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # statistics far from 0 and 1
            module.running_mean.uniform_(-1, 1, generator=g)
            module.running_var.uniform_(0.5, 2, generator=g)
            module.weight.data.uniform_(0.5, 1.5, generator=g)
            module.bias.data.uniform_(-1, 1, generator=g)
    feature = torch.randn(2, dual.feature_channels, 6, 7, generator=g)
    prob = torch.rand(2, 4, 6, 7, generator=g)
    together = torch.cat([feature, prob], 1)
    from mmseg_uncert.models.decode_heads.dual_head import _eval_splittable
    assert _eval_splittable(dual.uncertainty_branch[0]) == (norm == 'BN')
    dual.eval()
    with torch.no_grad():
        got, expected = dual._branch(feature, prob), dual.uncertainty_branch(together)
        if norm == 'GN':
            assert torch.equal(got, expected)
        else:
            scale = float(expected.abs().max())
            assert torch.allclose(got, expected, rtol=0, atol=1e-6 * scale)
        dual.train()
        assert torch.equal(dual._branch(feature, prob), dual.uncertainty_branch(together))


def test_branch_split_in_eval_traces_for_the_flop_count():
    """mmengine's FlopAnalyzer traces the model with torch.jit: the split
    first layer must trace (shapes are tensors there) and count as the
    concatenated one."""
    from mmengine.analysis import FlopAnalyzer
    with mmseg_scope():
        torch.manual_seed(0)
        dual = MODELS.build(dict(type='DualHead', head=HEADS['FCNHead'],
                                 branch_conv='depthwise_separable', branch_channels=6,
                                 uncertainty_names=('std',)))
    dual.eval()
    feature = torch.randn(1, dual.feature_channels, 6, 7)
    prob = torch.rand(1, 4, 6, 7)

    class Branch(torch.nn.Module):
        def __init__(self, split: bool) -> None:
            super().__init__()
            self.dual, self.split = dual, split

        def forward(self, f: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
            if self.split:
                return self.dual._branch(f, p)
            return self.dual.uncertainty_branch(torch.cat([f, p], 1))

    with torch.no_grad():
        traced = torch.jit.trace(Branch(True), (feature, prob))
        assert torch.allclose(traced(feature, prob), Branch(False)(feature, prob), atol=1e-5)
    assert (FlopAnalyzer(Branch(True), (feature, prob)).total()
            == FlopAnalyzer(Branch(False), (feature, prob)).total())
