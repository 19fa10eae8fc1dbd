"""ProDASegmentor: momentum network, rectified pseudo-labels, structure, CBST."""
import math

import numpy as np
import pytest
import torch

from mmseg_uncert.engine import PrototypeHook
from mmseg_uncert.models.segmentors.proda_segmentor import network_features
from mmseg_uncert.models.strong_view import StrongView

from helpers.proda import _batch, _cbst_model, _proda


def test_momentum_network_gets_no_gradient_and_target_labels_are_not_needed(tmp_path):
    model = _proda(tmp_path)
    hook = PrototypeHook()
    bank = hook.bank = model.prototype_bank
    bank.restart(model.network(), hook.momentum)
    bank.prototypes.normal_()
    bank.initialised.fill_(True)
    model.train()
    # target samples carry no annotation at all: nothing may read one
    data = dict(source=_batch(seed=1), target=_batch(seed=2, labelled=False))
    batch = model.data_preprocessor(data, True)
    losses = model(**batch, mode='loss')
    assert {'decode.loss_ce', 'target.loss_sce', 'target.loss_structure',
            'target.loss_regulariser'} <= set(losses)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    momentum = bank.momentum_network.module
    assert all(p.grad is None and not p.requires_grad for p in momentum.parameters())
    assert all(p.grad is None for p in model.pseudo_labeller.parameters())
    assert any(p.grad is not None for p in model.parameters())
    # the momentum network and the labeller are frozen children: nothing of
    # them trains or is saved with the model
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith(('backbone.', 'decode_head.')) for n in names)
    assert all(k.startswith(('backbone.', 'decode_head.')) for k in model.state_dict())
    assert set(model.frozen_children()) == {'pseudo_labeller', 'prototype_bank'}
    # the step left the momentum features and its labels for the hook
    feature, label, valid = bank.pending
    assert feature.shape[1] == model.decode_head.conv_seg.in_channels
    assert valid.all()


def test_prototype_features_are_taken_before_dropout(tmp_path):
    """The student (training, dropout on) and its momentum copy (eval) must
    compare the same features: those the head makes before dropout."""
    model = _proda(tmp_path, dropout_ratio=0.5)
    model.train()
    x = torch.randn(2, 3, 64, 128)
    network = model.network()
    logits, feature = network_features(network, x)
    with torch.no_grad():
        expected = model.decode_head._forward_feature(model.extract_feat(x))
    assert torch.allclose(feature, expected, atol=1e-5)
    # no hook stays on the head after the tap
    assert not model.decode_head.conv_seg._forward_pre_hooks
    assert not model.decode_head.dropout._forward_pre_hooks


def test_rectification_without_hook_is_an_error(tmp_path):
    model = _proda(tmp_path)
    model.train()
    batch = model.data_preprocessor(dict(source=_batch(), target=_batch(labelled=False)), True)
    with pytest.raises(RuntimeError, match='PrototypeHook'):
        model(**batch, mode='loss')
    plain = _proda(tmp_path, rectify=False, structure_weight=0.0)
    plain.train()
    losses = plain(**batch, mode='loss')
    assert 'target.loss_structure' not in losses and 'target.loss_sce' in losses


def test_confidence_threshold_drops_unsure_pseudo_labels(tmp_path):
    """The random warm-up model is unsure everywhere (p ≈ 1/5): a threshold
    of 0.9 leaves no target pixel, 0 keeps them all."""
    batch = None
    results = {}
    for threshold in (0.0, 0.9):
        model = _proda(tmp_path, rectify=False, structure_weight=0.0,
                       regulariser_weight=0.0, confidence_threshold=threshold)
        model.train()
        batch = batch or model.data_preprocessor(
            dict(source=_batch(), target=_batch(labelled=False)), True)
        results[threshold] = model(**batch, mode='loss')['target.loss_sce'].item()
    assert results[0.0] > 0.5 and results[0.9] == 0.0
    with pytest.raises(ValueError, match='confidence_threshold'):
        _proda(tmp_path, confidence_threshold=1.0)


def _naive_structure_loss(feature, m_feature, prototypes, tau, normalise, weight, mask):
    """γ₁ · mean over the counted pixels and the K classes of the KL terms
    z_weak,k (log z_weak,k − log z_strong,k) (ProDA's scale), pixel by pixel
    in float64, and the largest |logit| + log K of any counted pixel (what
    bounds the model's float32 rounding of a log-softmax)."""
    total, n, assign, scale = 0.0, 0, 0.0, 0.0
    b, c, h, w = feature.shape
    for i in range(b):
        for y in range(h):
            for x in range(w):
                if not mask[i, y, x]:
                    continue
                f, g = feature[i, :, y, x].double(), m_feature[i, :, y, x].double()
                eta = prototypes.double()
                if normalise:
                    f, g = f / f.norm(), g / g.norm()
                    eta = eta / eta.norm(dim=1, keepdim=True)
                zs = [-(f - e).norm().item() / tau for e in eta]
                zw = [-(g - e).norm().item() / tau for e in eta]
                ls = [v - math.log(sum(math.exp(u) for u in zs)) for v in zs]
                pw = [math.exp(v) / sum(math.exp(u) for u in zw) for v in zw]
                total += sum(p * (math.log(p) - q) for p, q in zip(pw, ls) if p > 0)
                assign += max(pw)
                n += 1
                scale = max(scale, max(map(abs, zs + zw)) + math.log(len(zs)))
    return weight * total / (n * len(prototypes)), assign / n, scale


def _prototypes_and_features(model, seed, size, noise=None):
    """Random prototypes (all initialised), student features of 2 images
    and the momentum network's (the student's plus ``noise`` times a
    normal draw, or a draw of their own), and z_weak of the latter."""
    bank = model.prototype_bank
    g = torch.Generator().manual_seed(seed)
    channels = bank.prototypes.shape[1]
    bank.prototypes.copy_(torch.randn(5, channels, generator=g))
    bank.initialised.fill_(True)
    feature = torch.randn(2, channels, *size, generator=g)
    draw = torch.randn(2, channels, *size, generator=g)
    m_feature = draw if noise is None else feature + noise * draw
    return g, feature, m_feature, bank.logits(m_feature, model.temperature).softmax(1)


@pytest.mark.parametrize('variant', [
    dict(),
    dict(structure_temperature=10.0),
    dict(structure_temperature=0.2, structure_distance='cosine'),
    dict(structure_confidence=0.6),
    dict(structure_warmup_iters=4),
])
def test_structure_loss_of_each_variant_by_hand(tmp_path, variant):
    from mmengine.logging import MessageHub
    model = _proda(tmp_path, structure_weight=2.0, **variant)
    bank = model.prototype_bank
    g, feature, m_feature, z_weak = _prototypes_and_features(model, 3, (3, 4),
                                                             noise=0.3)
    valid = torch.ones(2, 3, 4, dtype=torch.bool)
    valid[1, :, 3] = False  # padding
    # the pseudo-label confidence at input size (6 x 8): constant 2x2 blocks
    small = torch.rand(2, 3, 4, generator=g)
    confidence = small.repeat_interleave(2, 1).repeat_interleave(2, 2)
    MessageHub.get_current_instance().update_info('iter', 1)
    losses = model.structure_losses(feature, m_feature, z_weak, valid, confidence)
    mask = valid
    if model.structure_confidence > 0:
        # bilinear resizing of constant 2x2 blocks to half size: the block value
        mask = valid & (small >= model.structure_confidence)
    weight = 2.0 * (2 / 4 if model.structure_warmup_iters else 1.0)
    expected, assign, scale = _naive_structure_loss(
        feature, m_feature, bank.prototypes, model.structure_temperature,
        model.structure_distance == 'cosine', weight, mask)
    # The model works in float32: each log-softmax term is off by up to a few
    # float32 epsilons times |logit| + log K, and a KL of near-equal
    # distributions (a large temperature) is a small difference of such
    # terms, so a relative tolerance cannot hold on every CPU. The bound:
    # 2 log-softmaxes, K terms each weighted by p ≤ 1, 4 roundings a term.
    float32_error = 8 * torch.finfo(torch.float32).eps * scale
    assert losses['target.loss_structure'].item() == pytest.approx(
        expected, rel=1e-6, abs=weight * float32_error)
    assert losses['target.assignment_max'].item() == pytest.approx(
        assign, rel=1e-6, abs=float32_error)


def test_prototype_temperatures_must_be_positive(tmp_path):
    for key in ('temperature', 'structure_temperature'):
        for value in (0.0, -1.0):
            with pytest.raises(ValueError, match=f'model.{key} .*must be > 0, got {value}'):
                _proda(tmp_path, **{key: value})
    with pytest.raises(ValueError, match="structure_distance must be 'euclidean' or "
                                         "'cosine', got 'manhattan'"):
        _proda(tmp_path, structure_distance='manhattan')
    with pytest.raises(ValueError, match='structure_confidence'):
        _proda(tmp_path, structure_confidence=1.0)
    with pytest.raises(ValueError, match='structure_warmup_iters'):
        _proda(tmp_path, structure_warmup_iters=-5)


def test_plain_self_training_runs_no_momentum_forward(tmp_path):
    """Each network's forward passes in one training step: plain
    self-training has no momentum network at all; denoising runs it once."""
    batch = None
    for switches, momentum_calls in ((dict(rectify=False, structure_weight=0.0), None),
                                     (dict(rectify=True, structure_weight=0.0), 1)):
        model = _proda(tmp_path, **switches)
        calls = {}

        def counter(name):
            def hook(module, args):
                calls[name] = calls.get(name, 0) + 1
            return hook
        model.backbone.register_forward_pre_hook(counter('student'))
        model.pseudo_labeller.backbone.register_forward_pre_hook(counter('labeller'))
        if model.prototype_bank is not None:
            bank = model.prototype_bank
            bank.restart(model.network(), 0.999)
            bank.prototypes.normal_()
            bank.initialised.fill_(True)
            bank.momentum_network.module['backbone'].register_forward_pre_hook(
                counter('momentum'))
        model.train()
        batch = batch or model.data_preprocessor(
            dict(source=_batch(), target=_batch(labelled=False)), True)
        model(**batch, mode='loss')
        assert calls.get('momentum') == momentum_calls
        assert calls['student'] == 2 and calls['labeller'] == 1  # source + weak view


def _labels_the_target_loss_gets(model, batch):
    """One training step's pseudo-labels, as the target loss receives them."""
    seen = {}

    def capture(logits, label):
        seen['label'] = label.clone()
        return logits.sum() * 0
    model.target_loss.forward = capture
    model(**batch, mode='loss')
    return seen['label']


def _labeller_probabilities(model, batch):
    target = batch['inputs']['target']
    metas = [s.metainfo for s in batch['data_samples']['target']]
    return model.pseudo_labeller.inference(target, metas).softmax(1)


def test_cbst_pseudo_labels_by_hand(tmp_path):
    """ŷ = argmax_k p₀,k / λ_k, kept where that maximum reaches 1 (CBST)."""
    model = _cbst_model(tmp_path)
    model.train()
    batch = model.data_preprocessor(dict(source=_batch(), target=_batch(labelled=False)), True)
    with pytest.raises(RuntimeError, match='ClassBalancedThresholdHook'):
        model(**batch, mode='loss')
    thresholds = torch.tensor([0.21, 0.25, float('inf'), 0.2, 0.3])
    model.class_thresholds.copy_(thresholds)
    seen = {'label': _labels_the_target_loss_gets(model, batch)}
    prob = _labeller_probabilities(model, batch)
    expected = torch.full(prob.shape[:1] + prob.shape[2:], 255)
    for i, y, x in np.ndindex(*expected.shape):
        ratios = [prob[i, k, y, x].item() / thresholds[k].item() for k in range(5)]
        best = max(range(5), key=lambda k: ratios[k])
        if ratios[best] >= 1:
            expected[i, y, x] = best
    assert torch.equal(seen['label'], expected)
    assert (expected != 255).any() and (expected == 255).any() and (expected != 2).all()


def test_cbst_bad_switches_are_named(tmp_path):
    with pytest.raises(ValueError, match='class_balanced_portion must lie in'):
        _cbst_model(tmp_path, portion=0.0)
    with pytest.raises(ValueError, match='rectify=False'):
        _proda(tmp_path, class_balanced_portion=0.2)
    with pytest.raises(ValueError, match='structure_weight=0'):
        _proda(tmp_path, rectify=False, structure_weight=1.0, class_balanced_portion=0.2)
    with pytest.raises(ValueError, match='confidence_threshold'):
        _proda(tmp_path, rectify=False, structure_weight=0.0, class_balanced_portion=0.2,
               confidence_threshold=0.9)


def test_rectified_fraction_does_not_count_pixels_the_threshold_drops(tmp_path):
    """``target.rectified`` is the share of pixels whose label rectification
    changed, the same whatever the confidence threshold then drops."""
    batch, fractions = None, {}
    for threshold in (0.0, 0.99):
        model = _proda(tmp_path, structure_weight=0.0, confidence_threshold=threshold)
        bank = model.prototype_bank
        bank.restart(model.network(), 0.999)
        bank.prototypes.copy_(torch.randn(bank.prototypes.shape,
                                          generator=torch.Generator().manual_seed(5)))
        bank.initialised.fill_(True)
        model.train()
        batch = batch or model.data_preprocessor(
            dict(source=_batch(), target=_batch(labelled=False)), True)
        losses = model(**batch, mode='loss')
        fractions[threshold] = losses['target.rectified'].item()
        if threshold:
            assert losses['target.loss_sce'].item() == 0.0  # every pixel dropped
    assert 0.0 < fractions[0.0] < 1.0
    assert fractions[0.99] == pytest.approx(fractions[0.0])


def _flip_view(monkeypatch):
    """Make the model's strong view a plain horizontal flip of the weak one
    (its photometric part kept), so that what follows it can be checked
    with torch.flip."""
    from mmseg_uncert.models import strong_view as sv
    from mmseg_uncert.models.segmentors import proda_segmentor

    def flipped(inputs, mean, std, strength=1.0, generator=None, geometric=True):
        view = sv.strong_view(inputs, mean, std, strength, generator, geometric=False)
        warp = view.warp.clone()
        warp[:, 0, 0] = -1
        return view._replace(image=view.image.flip(-1), warp=warp)
    monkeypatch.setattr(proda_segmentor, 'strong_view', flipped)


def test_structure_loss_follows_the_strong_views_geometry(tmp_path, monkeypatch):
    """With a flipped strong view, z_weak is compared flipped, on the
    pixels outside the cut-out."""
    _flip_view(monkeypatch)
    model = _proda(tmp_path, structure_weight=3.0)
    bank = model.prototype_bank
    _, feature, m_feature, z_weak = _prototypes_and_features(model, 8, (4, 6))
    valid = torch.ones(2, 4, 6, dtype=torch.bool)
    valid[0, :, 0] = False  # padding on the left: on the right once flipped
    warp = torch.tensor([[-1.0, 0, 0], [0, 1, 0]]).expand(2, 2, 3)
    # a cut-out over the strong view's top-left 2 x 3 pixels of image 1 only
    cutout = torch.tensor([[0.0, 0.0, 0.0, 0.0], [-1.0, -1.0, 0.0, 0.0]])
    view = StrongView(torch.zeros(2, 3, 8, 12), warp, cutout)
    losses = model.structure_losses(feature, m_feature, z_weak, valid,
                                    torch.ones(2, 8, 12), view)
    mask = valid.flip(-1)
    mask[1, :2, :3] = False
    expected, _, scale = _naive_structure_loss(
        feature, m_feature.flip(-1), bank.prototypes, model.temperature, False, 3.0,
        mask)
    float32_error = 8 * torch.finfo(torch.float32).eps * scale
    assert losses['target.loss_structure'].item() == pytest.approx(
        expected, rel=1e-6, abs=3.0 * float32_error)


def test_pseudo_labels_follow_the_view_they_train(tmp_path, monkeypatch):
    """pseudo_label_view='strong': the target loss gets the weak view's
    labels carried to the strong view (flipped here); 'weak' (ProDA) gets
    them as they are."""
    _flip_view(monkeypatch)
    seen, batch = {}, None
    for view in ('weak', 'strong'):
        model = _proda(tmp_path, rectify=False, structure_weight=0.0,
                       regulariser_weight=0.0, pseudo_label_view=view)
        model.train()
        batch = batch or model.data_preprocessor(
            dict(source=_batch(), target=_batch(labelled=False)), True)
        seen[view] = _labels_the_target_loss_gets(model, batch)
    labels = _labeller_probabilities(model, batch).argmax(1)
    assert torch.equal(seen['weak'], labels)
    assert torch.equal(seen['strong'], labels.flip(-1))
    with pytest.raises(ValueError, match="pseudo_label_view must be 'weak'"):
        _proda(tmp_path, pseudo_label_view='both')


def test_structure_learning_runs_the_student_on_both_views(tmp_path):
    """ProDA's stage 1: source, weak view (pseudo-labels), strong view
    (structure); the momentum network once, in training mode, then back in
    eval mode."""
    model = _proda(tmp_path, structure_weight=1.0)
    bank = model.prototype_bank
    bank.restart(model.network(), 0.999)
    bank.prototypes.normal_()
    bank.initialised.fill_(True)
    calls, modes = [], []
    model.backbone.register_forward_pre_hook(lambda m, a: calls.append('student'))
    momentum = bank.momentum_network.module
    norm = next(m for m in momentum.modules() if isinstance(m, torch.nn.BatchNorm2d))
    norm.register_forward_pre_hook(lambda m, a: modes.append(m.training))
    model.train()
    batch = model.data_preprocessor(dict(source=_batch(), target=_batch(labelled=False)), True)
    model(**batch, mode='loss')
    assert calls == ['student'] * 3
    assert modes == [True]
    assert not any(m.training for m in momentum.modules())
