"""EnsembleSegmentor and MCDropoutSegmentor: outputs against member-by-member
computations, freezing, reproducibility and the errors users meet."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_uncert.models import UNCERTAINTY_NAMES, PredictiveStatistics
from mmseg_uncert.models.segmentors import build_member, load_config, mmseg_scope

from helpers.members import member_model_cfg, member_specs, save_member
from helpers.tiny_config import PROJECT_CONFIG


def _inputs(seed: int = 0, shape=(2, 3, 32, 64)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _samples(n: int, ori_shape=(48, 96), pad_shape=(32, 64)) -> list:
    return [SegDataSample(metainfo=dict(ori_shape=ori_shape, img_shape=pad_shape,
                                        pad_shape=pad_shape,
                                        padding_size=[0, 0, 0, 0]))
            for _ in range(n)]


def _naive_maps(models, inputs, metas) -> dict:
    stats = PredictiveStatistics()
    with torch.no_grad():
        for model in models:
            stats.add(model.inference(inputs, [dict(m) for m in metas]).softmax(1))
    return dict(mean=stats.mean(), **stats.decompose())


def test_ensemble_equals_members_one_by_one(tmp_path):
    specs = member_specs(tmp_path, 3)
    ensemble = MODELS.build(dict(type='EnsembleSegmentor', members=specs))
    members = [build_member(spec, 'check')[0] for spec in specs]
    inputs = _inputs()
    metas = [s.metainfo for s in _samples(2, ori_shape=(32, 64))]
    # at the input resolution: log of the mean of the members' softmax
    naive = _naive_maps(members, inputs, metas)
    with torch.no_grad():
        log_mean = ensemble.encode_decode(inputs, metas)
    assert torch.allclose(log_mean.exp(), naive['mean'], atol=1e-6)
    # data samples at the input's own size: every map as computed naively
    samples = ensemble.predict(inputs, _samples(2, ori_shape=(32, 64)))
    for i, sample in enumerate(samples):
        assert torch.allclose(sample.seg_logits.data.softmax(0), naive['mean'][i],
                              atol=1e-5)
        assert torch.equal(sample.pred_sem_seg.data[0], naive['mean'][i].argmax(0))
        for name in UNCERTAINTY_NAMES:
            got = getattr(sample.pred_uncertainty, name)
            assert got.shape == (1, 32, 64)
            assert torch.allclose(got[0], naive[name][i], atol=1e-5), name


def test_outputs_are_resized_to_the_original_image(tmp_path):
    ensemble = MODELS.build(dict(type='EnsembleSegmentor',
                                 members=member_specs(tmp_path, 2)))
    inputs = _inputs()
    samples = ensemble.predict(inputs, _samples(2, ori_shape=(48, 96)))
    # the naive maps at the input's size, resized bilinearly as mmseg resizes
    metas = [s.metainfo for s in _samples(2, ori_shape=(48, 96))]
    naive = _naive_maps(ensemble.members, inputs, metas)
    log_mean = resize(naive['mean'].clamp_min(1e-38).log(), size=(48, 96),
                      mode='bilinear', align_corners=False)
    epistemic = resize(naive['epistemic'][:, None], size=(48, 96),
                       mode='bilinear', align_corners=False)
    for i, sample in enumerate(samples):
        assert torch.allclose(sample.seg_logits.data, log_mean[i], atol=1e-4)
        assert torch.equal(sample.pred_sem_seg.data[0], log_mean[i].argmax(0))
        assert torch.allclose(sample.pred_uncertainty.epistemic, epistemic[i],
                              atol=1e-5)


def test_slide_mode_uses_each_members_slide_inference(tmp_path):
    slide = dict(mode='slide', crop_size=(32, 32), stride=(16, 24))
    specs = member_specs(tmp_path, 2)
    ensemble = MODELS.build(dict(type='EnsembleSegmentor', members=specs,
                                 test_cfg=slide))
    members = [build_member(dict(spec, test_cfg=slide), 'check')[0]
               for spec in specs]
    whole = [build_member(spec, 'check')[0] for spec in specs]
    inputs = _inputs(1)
    metas = [s.metainfo for s in _samples(2, ori_shape=(32, 64))]
    naive = _naive_maps(members, inputs, metas)
    with torch.no_grad():
        got = ensemble.encode_decode(inputs, metas).exp()
    assert torch.allclose(got, naive['mean'], atol=1e-6)
    assert not torch.allclose(got, _naive_maps(whole, inputs, metas)['mean'],
                              atol=1e-4)


def test_member_order_does_not_change_the_result(tmp_path):
    specs = member_specs(tmp_path, 3)
    a = MODELS.build(dict(type='EnsembleSegmentor', members=specs))
    b = MODELS.build(dict(type='EnsembleSegmentor', members=specs[::-1]))
    inputs, samples = _inputs(2), _samples(2, ori_shape=(32, 64))
    out_a = a.predict(inputs, copy.deepcopy(samples))
    out_b = b.predict(inputs, copy.deepcopy(samples))
    for sa, sb in zip(out_a, out_b):
        assert torch.allclose(sa.seg_logits.data, sb.seg_logits.data, atol=1e-5)
        for name in UNCERTAINTY_NAMES:
            assert torch.allclose(getattr(sa.pred_uncertainty, name),
                                  getattr(sb.pred_uncertainty, name), atol=1e-5)


def test_members_from_config_files_and_mmseg_paths(tmp_path):
    # a plain config path (the project's) and an mmseg:: path, with checkpoints
    cfg = Config.fromfile(PROJECT_CONFIG)
    torch.manual_seed(0)
    with mmseg_scope():
        own = MODELS.build(cfg.model)
    own_ckpt = str(tmp_path / 'own.pth')
    torch.save(dict(state_dict=own.state_dict()), own_ckpt)
    member, info = build_member(dict(config=PROJECT_CONFIG, checkpoint=own_ckpt),
                                'member 0')
    for key, value in own.state_dict().items():
        assert torch.equal(member.state_dict()[key], value), key
    mmseg_cfg = 'mmseg::fcn/fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py'
    model_cfg = load_config(mmseg_cfg).model
    model_cfg.backbone.init_cfg = None
    torch.manual_seed(1)
    with mmseg_scope():
        reference = MODELS.build(model_cfg)
    ckpt = str(tmp_path / 'r18.pth')
    torch.save(dict(state_dict=reference.state_dict()), ckpt)
    loaded, info = build_member(dict(config=mmseg_cfg, checkpoint=ckpt), 'member 1')
    assert info['num_classes'] == 19 and info['source'] == mmseg_cfg
    key = 'decode_head.conv_seg.weight'
    assert torch.equal(loaded.state_dict()[key], reference.state_dict()[key])
    ensemble = MODELS.build(dict(type='EnsembleSegmentor', members=[
        dict(config=PROJECT_CONFIG, checkpoint=own_ckpt),
        dict(config=mmseg_cfg, checkpoint=ckpt)]))
    assert len(ensemble.members) == 2


def test_members_stay_frozen_in_eval(tmp_path):
    ensemble = MODELS.build(dict(type='EnsembleSegmentor',
                                 members=member_specs(tmp_path, 2)))
    ensemble.train()
    assert all(not m.training for m in ensemble.members.modules())
    # MC dropout and TTA keep their one model in eval too (MC dropout turns
    # on its dropout layers only during its passes)
    for cfg in (dict(type='MCDropoutSegmentor', model=member_specs(tmp_path, 1)[0],
                     num_samples=2),
                dict(type='TTASegmentor', model=member_specs(tmp_path, 1)[0])):
        wrapper = MODELS.build(cfg).train()
        assert wrapper.training
        assert not any(m.training for m in wrapper.model.modules()), cfg['type']
    with pytest.raises(RuntimeError, match='inference'):
        ensemble.loss(_inputs(), _samples(2))


def test_bad_members_are_named(tmp_path):
    good = dict(model=member_model_cfg(5),
                checkpoint=save_member(str(tmp_path / 'a.pth'), 0, 5,
                                       classes=list('abcde')))
    other_count = dict(model=member_model_cfg(6),
                       checkpoint=save_member(str(tmp_path / 'b.pth'), 1, 6))
    with pytest.raises(ValueError, match=r'num_classes.*member 0.*has 5.*member 1.*has 6'):
        MODELS.build(dict(type='EnsembleSegmentor', members=[good, other_count]))
    other_names = dict(model=member_model_cfg(5),
                       checkpoint=save_member(str(tmp_path / 'c.pth'), 2, 5,
                                              classes=list('vwxyz')))
    with pytest.raises(ValueError, match=r"class names.*'a'.*'v'"):
        MODELS.build(dict(type='EnsembleSegmentor', members=[good, other_names]))
    missing = str(tmp_path / 'nowhere' / 'iter_2000.pth')
    with pytest.raises(FileNotFoundError, match=f'member 1: checkpoint {missing}'):
        MODELS.build(dict(type='EnsembleSegmentor', members=[
            good, dict(model=member_model_cfg(5), checkpoint=missing)]))
    with pytest.raises(FileNotFoundError, match='member 0: config no/such.py'):
        MODELS.build(dict(type='EnsembleSegmentor',
                          members=[dict(config='no/such.py', checkpoint=None)]))


# ------------------------------------------------------------- MC dropout

def _mc(tmp_path, dropout_ratio=0.1, **kwargs):
    spec = dict(model=member_model_cfg(5, dropout_ratio),
                checkpoint=save_member(str(tmp_path / 'mc.pth'), 3, 5,
                                       dropout_ratio=dropout_ratio))
    return MODELS.build(dict(type='MCDropoutSegmentor', model=spec, **kwargs))


def test_mc_dropout_keeps_bn_statistics_and_samples_with_dropout_on(tmp_path):
    mc = _mc(tmp_path, num_samples=6, seed=4)
    before = {k: v.clone() for k, v in mc.model.state_dict().items()}
    inputs, samples = _inputs(3), _samples(2, ori_shape=(32, 64))
    seen = []
    for prob in mc.member_probabilities(inputs, [s.metainfo for s in samples]):
        assert mc.model.decode_head.dropout.training  # dropout active
        assert not mc.model.backbone.training  # BN in eval
        seen.append(prob)
    assert not mc.model.decode_head.dropout.training  # switched back off
    assert not torch.allclose(seen[0], seen[1])  # the passes differ
    for key, value in mc.model.state_dict().items():
        assert torch.equal(value, before[key]), key  # BN statistics untouched
    out = mc.predict(inputs, samples)
    assert out[0].pred_uncertainty.epistemic.max() > 0


def test_mc_dropout_is_reproducible_and_leaves_the_global_rng(tmp_path):
    mc = _mc(tmp_path, num_samples=4, seed=7)
    inputs = _inputs(5)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    with torch.no_grad():
        a = mc.encode_decode(inputs, [s.metainfo for s in _samples(2, (32, 64))])
    assert torch.equal(torch.rand(1), expected_next)
    with torch.no_grad():
        b = mc.encode_decode(inputs, [s.metainfo for s in _samples(2, (32, 64))])
    assert torch.equal(a, b)


def test_mc_dropout_without_dropout_is_refused(tmp_path):
    with pytest.raises(ValueError, match='no dropout layer.*dropout_ratio'):
        _mc(tmp_path, dropout_ratio=0.0)
