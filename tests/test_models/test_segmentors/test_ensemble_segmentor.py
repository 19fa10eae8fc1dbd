"""EnsembleSegmentor against its members one by one, and the errors users meet.

Also mmseg_uncert.models.segmentors.predictive_segmentor (the inference
shared by segmentors that predict from M probability maps) and
mmseg_uncert.models.segmentors.postprocess (the maps restored to the
image's original size).
"""
from __future__ import annotations

import copy

import pytest
import torch

from mmseg.models.utils import resize
from mmseg.registry import MODELS

from mmseg_uncert.models import UNCERTAINTY_NAMES, PredictiveStatistics
from mmseg_uncert.models.segmentors import build_member, mmseg_scope
from mmseg_uncert.workflows.head_coverage import (bare_model_cfg, build_model,
                                                  synthetic_batch)

from helpers.ensembles import _inputs, _mixed_members, _samples
from helpers.members import member_model_cfg, member_specs, save_member


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


def test_streamed_members_give_the_same_maps_one_member_at_a_time(tmp_path, monkeypatch):
    """stream_members=True: the same outputs as resident members, no weight
    kept between passes, each member freed before the next is built, no
    config file read again, and the process's random stream untouched by
    the rebuilding."""
    import gc
    import weakref
    from mmseg_uncert.models.segmentors import ensemble_segmentor, members
    specs = member_specs(tmp_path, 2)
    # the second member from a config file
    config = tmp_path / 'member_1.py'
    config.write_text(f'model = {specs[1]["model"]!r}\n')
    specs[1] = dict(config=str(config), checkpoint=specs[1]['checkpoint'])
    resident = MODELS.build(dict(type='EnsembleSegmentor', members=specs))
    streamed = MODELS.build(dict(type='EnsembleSegmentor', members=specs,
                                 stream_members=True))
    # nothing but the input normalisation's mean and std
    assert list(streamed.parameters()) == []
    assert [name for name, _ in streamed.named_buffers()] == [
        'data_preprocessor.mean', 'data_preprocessor.std']
    assert streamed.state_dict() == {}
    built = []

    def recording_build(*args, **kwargs):
        model, info = build_member(*args, **kwargs)
        built.append(weakref.ref(model))
        return model, info

    def no_file(path):
        raise AssertionError(f'{path} read at a pass')

    monkeypatch.setattr(ensemble_segmentor, 'build_member', recording_build)
    monkeypatch.setattr(members, 'load_config', no_file)
    inputs = _inputs()
    metas = [s.metainfo for s in _samples(2, ori_shape=(32, 64))]
    torch.manual_seed(7)
    rng = torch.get_rng_state()
    with torch.no_grad():
        for index, _ in enumerate(streamed.member_probabilities(inputs, metas)):
            gc.collect()
            # the member of this pass was freed as it yielded; none is alive
            assert len(built) == index + 1
            assert all(ref() is None for ref in built)
    assert torch.equal(torch.get_rng_state(), rng)
    samples = _samples(2, ori_shape=(32, 64))
    out_s = streamed.predict(inputs, copy.deepcopy(samples))
    out_r = resident.predict(inputs, copy.deepcopy(samples))
    for a, b in zip(out_s, out_r):
        assert torch.equal(a.seg_logits.data, b.seg_logits.data)
        for name in UNCERTAINTY_NAMES:
            assert torch.equal(getattr(a.pred_uncertainty, name),
                               getattr(b.pred_uncertainty, name)), name
    monkeypatch.undo()  # the builds below read their config files
    # a member without a checkpoint would get new random weights each pass
    unsaved = dict(model=member_model_cfg(5), checkpoint=None)
    with pytest.raises(ValueError, match=r'member\(s\) \[1\] have none.*checkpoint'):
        MODELS.build(dict(type='EnsembleSegmentor', members=[specs[0], unsaved],
                          stream_members=True))
    # neither a distillation teacher nor the ensemble of a TTA model streams
    from mmseg_uncert.models.segmentors.distillation_teacher import build_teacher
    streamed_cfg = dict(type='EnsembleSegmentor', members=specs, stream_members=True)
    with pytest.raises(ValueError, match='stream_members=True.*training step'):
        build_teacher(streamed_cfg)
    with pytest.raises(ValueError, match='TTASegmentor: its ensemble streams'):
        MODELS.build(dict(type='TTASegmentor', model=dict(model=streamed_cfg)))


@pytest.mark.parametrize('mode', ['whole', 'slide'])
def test_ensemble_over_mixed_architectures_and_a_cascade(mode, tmp_path):
    """p̄ is the mean of the members' own softmaxes (each run alone, by mmseg's
    inference), in whole-image and sliding-window modes."""
    test_cfg = (dict(mode='whole') if mode == 'whole'
                else dict(mode='slide', crop_size=(32, 32), stride=(24, 24)))
    specs = []
    for index, spec in enumerate(_mixed_members()):
        model = build_model(spec['model'], seed=index)
        path = str(tmp_path / f'member_{index}.pth')
        torch.save(dict(state_dict=model.state_dict(), meta={}), path)
        specs.append(dict(model=spec['model'], checkpoint=path))
    with mmseg_scope():
        ensemble = MODELS.build(dict(type='EnsembleSegmentor', members=specs,
                                     test_cfg=test_cfg))
    ensemble.eval()
    inputs, samples = synthetic_batch(19, (48, 64))
    with torch.no_grad():
        got = ensemble.predict(inputs, copy.deepcopy(samples))
        probs = []
        for member in ensemble.members:
            metas = [dict(s.metainfo) for s in samples]
            probs.append(member.inference(inputs, metas).softmax(1))
    mean = torch.stack(probs).mean(0)
    for sample, expected in zip(got, mean):
        assert torch.allclose(sample.seg_logits.data.exp(), expected, atol=1e-5)
        total = -(expected * expected.clamp_min(1e-12).log()).sum(0)
        assert torch.allclose(sample.pred_uncertainty.total[0], total, atol=1e-4)


def test_an_ensemble_reads_mask_queries_scores_as_probabilities():
    """A Mask2Former member predicts semantic scores s >= 0, not logits:
    the ensemble's p̄ is s / Σ_c s (here of its one member), not softmax(s)."""
    model_cfg = bare_model_cfg('mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.py')
    with mmseg_scope():
        ensemble = MODELS.build(dict(type='EnsembleSegmentor',
                                     members=[dict(model=model_cfg, checkpoint=None)],
                                     test_cfg=dict(mode='whole')))
    ensemble.eval()
    inputs, samples = synthetic_batch(150, (64, 64))
    with torch.no_grad():
        got = ensemble.predict(inputs, copy.deepcopy(samples))
        s = ensemble.members[0].inference(inputs, [dict(x.metainfo) for x in samples])
    assert float(s.min()) >= 0
    for sample, scores in zip(got, s):
        assert torch.allclose(sample.seg_logits.data.exp(), scores / scores.sum(0), atol=1e-6)
