"""The EnD² student: a Dirichlet over class probabilities, its closed-form
maps, its loss, and its distillation from an ensemble."""
import copy
import itertools
import math

import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict
from scipy.special import digamma
from scipy.stats import dirichlet

from mmseg.registry import MODELS

from mmseg_uncert.apis.inference import deploy_model_config
from mmseg_uncert.models.losses import (EnsembleDistributionDistillationLoss,
                                        dirichlet_nll)
from mmseg_uncert.models.segmentors import mmseg_scope
from mmseg_uncert.models.uncertainty import dirichlet_uncertainty

from helpers.members import member_model_cfg, member_specs
from test_dual_head_distiller import _batch


def test_dirichlet_maps_match_scipy_and_known_values():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64) * 2
    maps = dirichlet_uncertainty(z)
    alpha = z.exp().numpy()
    for b, i, j in itertools.product(range(2), range(3), range(5)):
        a = alpha[b, :, i, j]
        p = a / a.sum()
        total = -(p * np.log(p)).sum()
        # E_Dir H[π] = −Σ_c (α_c/α₀)(ψ(α_c + 1) − ψ(α₀ + 1))
        aleatoric = -(p * (digamma(a + 1) - digamma(a.sum() + 1))).sum()
        assert maps['total'][b, i, j].item() == pytest.approx(total, rel=1e-10)
        assert maps['aleatoric'][b, i, j].item() == pytest.approx(aleatoric, rel=1e-10)
        assert maps['epistemic'][b, i, j].item() == pytest.approx(total - aleatoric,
                                                                  abs=1e-10)
    # Monte Carlo check of the expected entropy at one pixel
    a = alpha[0, :, 0, 0]
    samples = np.random.default_rng(0).dirichlet(a, 200_000)
    mc = -(samples * np.log(np.clip(samples, 1e-300, None))).sum(1).mean()
    assert maps['aleatoric'][0, 0, 0].item() == pytest.approx(mc, abs=5e-3)
    # Beta(1, 1), the uniform distribution over [0, 1]: E H = ψ(3) − ψ(2) = 1/2
    flat = dirichlet_uncertainty(torch.zeros(1, 2, 1, 1, dtype=torch.float64))
    assert flat['aleatoric'].item() == pytest.approx(0.5, rel=1e-12)
    assert flat['total'].item() == pytest.approx(math.log(2), rel=1e-12)
    # a very sharp Dirichlet is a point mass: no epistemic uncertainty, and
    # logits too large for exp in float32 stay finite
    sharp = dirichlet_uncertainty(torch.tensor([[[[120.0]], [[119.0]], [[100.0]]]]))
    assert all(torch.isfinite(v).all() for v in sharp.values())
    assert sharp['epistemic'].item() == pytest.approx(0.0, abs=1e-4)


def test_dirichlet_nll_is_the_mean_negative_log_density_of_the_members():
    rng = np.random.default_rng(1)
    z = torch.tensor(rng.normal(0, 1, (1, 4, 2, 3)))
    members = rng.dirichlet([2.0, 1.0, 3.0, 0.5], size=(3, 2, 3))  # (M, H, W, C)
    mean_log_prob = torch.tensor(np.log(members).mean(0).transpose(2, 0, 1))[None]
    alpha = z.exp().numpy()[0]
    expected = np.array([[-np.mean([dirichlet.logpdf(members[m, i, j], alpha[:, i, j])
                                    for m in range(3)]) for j in range(3)]
                         for i in range(2)])
    assert dirichlet_nll(z, mean_log_prob).item() == pytest.approx(expected.mean(), rel=1e-9)
    valid = torch.tensor([[[True, False, False], [False, False, True]]])
    assert dirichlet_nll(z, mean_log_prob, valid).item() == pytest.approx(
        (expected[0, 0] + expected[1, 2]) / 2, rel=1e-6)  # mmseg adds eps to avg_factor
    with pytest.raises(ValueError, match='differ'):
        dirichlet_nll(z, mean_log_prob[:, :3])


def test_central_smoothing_keeps_one_hot_members_finite():
    loss = EnsembleDistributionDistillationLoss(smoothing=0.01)
    one_hot = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 4, 1, 1)
    log_prob = loss.log_prob(one_hot)
    expected = np.log([0.99 + 0.0025, 0.0025, 0.0025, 0.0025])
    assert np.allclose(log_prob.flatten().numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match='smoothing must lie in'):
        EnsembleDistributionDistillationLoss(smoothing=1.0)


def _dirichlet_cfg(num_classes: int = 5) -> dict:
    cfg = member_model_cfg(num_classes)
    cfg['decode_head'] = dict(type='DirichletHead', head=cfg['decode_head'])
    return cfg


def test_dirichlet_head_keeps_the_wrapped_heads_logits_and_appends_its_maps():
    cfg = member_model_cfg(5)
    with mmseg_scope():
        torch.manual_seed(0)
        bare = MODELS.build(ConfigDict(cfg['decode_head']))
        head = MODELS.build(ConfigDict(_dirichlet_cfg()['decode_head']))
    head.head.load_state_dict(bare.state_dict())
    bare.eval(), head.eval()
    feats = [torch.randn(2, 576, 8, 16, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        logits = bare(feats)
        out = head(feats)
    assert out.shape[1] == 5 + 3 and head.out_channels == 8
    assert torch.equal(out[:, :5], logits)
    maps = dirichlet_uncertainty(logits)
    for k, name in enumerate(('total', 'aleatoric', 'epistemic')):
        assert torch.allclose(out[:, 5 + k], maps[name])


def _dirichlet_distiller(tmp_path):
    cfg = _dirichlet_cfg()
    cfg.update(type='EnsembleDistiller', teacher=member_specs(tmp_path, 3))
    with mmseg_scope():
        torch.manual_seed(0)
        model = MODELS.build(ConfigDict(cfg))
    model.init_weights()
    return model


def test_distiller_fits_the_dirichlet_to_the_members(tmp_path):
    """distill.loss_end2 is the NLL of the three members' (smoothed)
    predictions under the student's Dirichlet, at the label's size, on the
    image's pixels; it trains the head, and the checkpoint deploys to a
    one-pass model with total / aleatoric / epistemic maps."""
    model = _dirichlet_distiller(tmp_path)
    model.eval()
    inputs, samples = _batch(3)
    losses = model.loss(inputs, samples)
    assert set(losses) == {'decode.loss_ce', 'decode.acc_seg', 'distill.loss_kd',
                           'distill.loss_end2'}
    with torch.no_grad():
        logits = model.decode_head.forward_logits(model.extract_feat(inputs))
        logits = torch.nn.functional.interpolate(logits, size=(64, 128), mode='bilinear',
                                                 align_corners=False)
        metas = [s.metainfo for s in samples]
        members = [p.clamp_min(0) for p in model.teacher.member_probabilities(inputs, metas)]
        eps = model.decode_head.loss_distribution.smoothing
        mean_log = torch.stack([((1 - eps) * p + eps / 5).log() for p in members]).mean(0)
        alpha = logits.double().exp()
        nll = (torch.lgamma(alpha).sum(1) - torch.lgamma(alpha.sum(1))
               - ((alpha - 1) * mean_log.double()).sum(1))
    assert losses['distill.loss_end2'].item() == pytest.approx(nll.mean().item(), rel=1e-4)
    model.train()
    losses = model.loss(*_batch(4))
    losses['distill.loss_end2'].backward()
    assert model.decode_head.head.conv_seg.weight.grad.abs().sum() > 0
    # deployed alone: an UncertaintyEncoderDecoder with the student's weights
    deploy = deploy_model_config(dict(_dirichlet_cfg(), type='EnsembleDistiller',
                                      teacher=None))
    with mmseg_scope():
        plain = MODELS.build(deploy)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.eval()
    with torch.no_grad():
        pred = plain.predict(inputs, copy.deepcopy(samples))[0]
    assert set(pred.pred_uncertainty.keys()) == {'total', 'aleatoric', 'epistemic'}
    prob = pred.seg_logits.data.softmax(0)
    total = torch.special.entr(prob).sum(0)
    # the maps are computed at the head's resolution, then resized with the
    # logits: equal to the entropy of the resized softmax only up to that
    assert (pred.pred_uncertainty.total[0] - total).abs().mean() < 0.05


def test_student_init_loads_into_a_dirichlet_head(tmp_path):
    specs = member_specs(tmp_path, 2)
    cfg = _dirichlet_cfg()
    cfg.update(type='EnsembleDistiller', teacher=specs, student_init=specs[1]['checkpoint'])
    with mmseg_scope():
        model = MODELS.build(ConfigDict(cfg))
    model.init_weights()
    member = torch.load(specs[1]['checkpoint'], map_location='cpu',
                        weights_only=False)['state_dict']
    own = model.state_dict()
    for key, value in member.items():
        assert torch.equal(own[key.replace('decode_head.', 'decode_head.head.', 1)], value)
