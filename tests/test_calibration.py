"""Post-hoc calibration: the fitted values against scipy's optimisers on a
naive NLL, the wrapper's outputs, the tool end to end, and bad input."""
from __future__ import annotations

import glob
import json
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from scipy import optimize
from scipy.special import log_softmax

from mmseg.registry import MODELS

from conftest import run_tool
from helpers.members import save_member
from helpers.tiny_config import write_tiny_config
from mmseg_uncert.workflows.post_hoc_calibration import calibrate, calibration_metrics
from mmseg_uncert.models.calibration import (CalibrationSet, LocalTemperatureScaling,
                                             TemperatureScaling, VectorScaling)
from mmseg_uncert.models.segmentors import mmseg_scope


def _overconfident(seed: int, images: int = 3, classes: int = 4, size=(12, 16),
                   sharpness: float = 4.0, ignore_fraction: float = 0.2,
                   noise: float = 1.0):
    """Logits that favour the true class in 70% of pixels, too sharply; a
    fifth of the pixels labelled 255 and given wild logits."""
    g = np.random.default_rng(seed)
    out = []
    for _ in range(images):
        label = g.integers(0, classes, size)
        guess = np.where(g.random(size) < 0.7, label, g.integers(0, classes, size))
        logits = g.normal(0, noise, (classes, *size)) + sharpness * np.eye(classes)[guess].transpose(2, 0, 1)
        ignored = g.random(size) < ignore_fraction
        label[ignored] = 255
        logits[:, ignored] = g.normal(0, 50, (classes, ignored.sum()))
        image = g.normal(0, 1, (3, *size))
        out.append((logits.astype(np.float32), label, image.astype(np.float32)))
    return out


def _cache(tmp_path, images, name='val') -> CalibrationSet:
    data = CalibrationSet(str(tmp_path / name), name)
    for logits, label, image in images:
        data.add(torch.from_numpy(logits), torch.from_numpy(label), torch.from_numpy(image))
    return data


def _valid(images):
    """The valid pixels' logits (N, C) and labels, over every image."""
    z = np.concatenate([lg.reshape(lg.shape[0], -1).T[lb.reshape(-1) != 255]
                        for lg, lb, _ in images]).astype(np.float64)
    y = np.concatenate([lb.reshape(-1)[lb.reshape(-1) != 255] for _, lb, _ in images])
    return z, y


def _naive_nll(z, y):
    return -log_softmax(z, 1)[np.arange(len(y)), y].mean()


def test_temperature_equals_scipys_minimum_of_the_valid_pixels_nll(tmp_path):
    images = _overconfident(0)
    fit = TemperatureScaling().fit(_cache(tmp_path, images))
    z, y = _valid(images)
    ref = optimize.minimize_scalar(lambda t: _naive_nll(z / t, y), bounds=(0.05, 20),
                                   method='bounded', options=dict(xatol=1e-10))
    assert fit['temperature'] > 1.5  # overconfident: softened
    assert fit['temperature'] == pytest.approx(ref.x, rel=1e-6)
    assert fit['nll'] == pytest.approx(ref.fun, rel=1e-9)
    # the ignored pixels' wild logits play no part: other wild values, same T
    moved = [(np.where(lb == 255, 100 * lg[::-1], lg), lb, im) for lg, lb, im in images]
    again = TemperatureScaling().fit(_cache(tmp_path, moved, 'moved'))
    assert again['temperature'] == pytest.approx(fit['temperature'], rel=1e-9)


def test_underconfident_logits_get_a_temperature_below_one(tmp_path):
    images = _overconfident(1, sharpness=0.8, noise=0.1)  # p_max ~ 0.43, 70% right
    fit = TemperatureScaling().fit(_cache(tmp_path, images))
    z, y = _valid(images)
    ref = optimize.minimize_scalar(lambda t: _naive_nll(z / t, y), bounds=(0.01, 5),
                                   method='bounded', options=dict(xatol=1e-10))
    assert fit['temperature'] < 1 and fit['temperature'] == pytest.approx(ref.x, rel=1e-6)


def test_vector_scaling_equals_scipys_lbfgs_on_the_naive_nll(tmp_path):
    images = _overconfident(2)
    model = VectorScaling(num_classes=4)
    fit = model.fit(_cache(tmp_path, images))
    z, y = _valid(images)

    def nll_and_grad(params):
        w, b = params[:4], params[4:]
        zz = z * w + b
        log_p = log_softmax(zz, 1)
        p = np.exp(log_p)
        d = (p - np.eye(4)[y]) / len(y)  # dNLL/dz'
        return -log_p[np.arange(len(y)), y].mean(), np.concatenate([(d * z).sum(0), d.sum(0)])

    ref = optimize.minimize(nll_and_grad, np.r_[np.ones(4), np.zeros(4)], jac=True,
                            method='L-BFGS-B', options=dict(ftol=1e-15, gtol=1e-12))
    # The model evaluates the NLL in float32: a few eps times |z'| + log C
    # per pixel. Its minimum is then defined only to that...
    eps = np.finfo(np.float32).eps
    nll_error = 8 * eps * (np.abs(z * ref.x[:4] + ref.x[4:]).max() + np.log(4))
    assert fit['nll'] == pytest.approx(ref.fun, rel=1e-6, abs=nll_error)
    # ... and its parameters only to sqrt(2 · NLL error / λ_min), λ_min the
    # flattest curvature of the NLL (the Hessian from the gradient's central
    # differences), the biases' common shift left out: softmax ignores it.
    step = 1e-5
    hessian = np.stack([(nll_and_grad(ref.x + step * e)[1] - nll_and_grad(ref.x - step * e)[1])
                        / (2 * step) for e in np.eye(8)])
    shift = np.r_[np.zeros(4), np.ones(4)] / 2
    project = np.eye(8) - np.outer(shift, shift)
    curvature = np.linalg.eigvalsh(project @ (hessian + hessian.T) / 2 @ project)
    parameter_error = 3 * np.sqrt(2 * nll_error / curvature[curvature > 1e-9].min())
    bias = model.bias.detach().double().numpy()
    np.testing.assert_allclose(model.scale.detach().double().numpy(), ref.x[:4],
                               atol=parameter_error)
    np.testing.assert_allclose(bias - bias.mean(), ref.x[4:] - ref.x[4:].mean(),
                               atol=parameter_error)


def test_local_temperature_starts_at_the_global_one_and_learns_where_it_differs(tmp_path):
    """The image's first channel says which half of each image is
    overconfident (sharpness 6: p_max ~ 0.99 where 70% are right) and which
    underconfident (0.5: p_max ~ 0.35): one temperature cannot fit both, a
    per-pixel one can."""
    g = np.random.default_rng(3)
    images = []
    for _ in range(4):
        size = (16, 24)
        label = g.integers(0, 4, size)
        guess = np.where(g.random(size) < 0.7, label, g.integers(0, 4, size))
        sharp = np.where(np.arange(size[1]) < 12, 6.0, 0.5)[None, :]
        logits = g.normal(0, 0.1, (4, *size)) + sharp * np.eye(4)[guess].transpose(2, 0, 1)
        image = np.zeros((3, *size), np.float32)
        image[0] = np.where(np.arange(size[1]) < 12, 1.0, -1.0)[None, :]
        images.append((logits.astype(np.float32), label, image))
    data = _cache(tmp_path, images)
    lts = LocalTemperatureScaling(num_classes=4, temperature=1.7)
    z = torch.from_numpy(images[0][0])[None]
    im = torch.from_numpy(images[0][2])[None]
    torch.testing.assert_close(lts(z, im), z / 1.7)  # T everywhere before fitting
    torch.manual_seed(0)
    fit = lts.fit(data, epochs=60, lr=1e-2)
    global_t = TemperatureScaling().fit(data)
    assert fit['global_temperature'] == pytest.approx(global_t['temperature'])
    assert fit['nll'] < global_t['nll'] - 0.05
    t = lts.temperature_map(z, im)[0, 0]
    assert t[:, :12].mean() > 1.5 > 1.0 > t[:, 12:].mean()
    # same argmax: a positive temperature never reorders a pixel's classes
    assert torch.equal(lts(z, im).argmax(1), z.argmax(1))
    nll_check = calibration_metrics(data, lts)['NLL']
    assert nll_check == pytest.approx(fit['nll'], rel=1e-5)


def test_calibration_metrics_equal_the_uncertainty_metric(tmp_path):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    from mmseg_uncert.evaluation import UncertaintyMetric
    images = _overconfident(4)
    data = _cache(tmp_path, images)
    ts = TemperatureScaling(temperature=1.9)
    metric = UncertaintyMetric(scores=['max_prob'])
    for logits, label, _ in images:
        sample = SegDataSample()
        sample.seg_logits = PixelData(data=torch.from_numpy(logits) / 1.9)
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(label)[None])
        metric.process({}, [sample.to_dict()])
    reference = metric.evaluate(1)
    ours = calibration_metrics(data, ts)
    for key in ('ECE', 'NLL', 'Brier'):
        assert ours[key] == pytest.approx(reference[key], rel=1e-6), key


# ------------------------------------------------------------ bad input

def test_a_split_without_valid_pixels_is_named(tmp_path):
    images = [(lg, np.full_like(lb, 255), im) for lg, lb, im in _overconfident(5)]
    data = _cache(tmp_path, images, 'shift_val')
    for model in (TemperatureScaling(), VectorScaling(4), LocalTemperatureScaling(4)):
        with pytest.raises(ValueError, match=r"calibration split 'shift_val' has no valid "
                                             r"pixel \(3 images"):
            model.fit(data)
    # the cache never empties a folder that holds something
    with pytest.raises(FileExistsError, match=r'shift_val is not empty; give a new or empty'):
        CalibrationSet(str(tmp_path / 'shift_val'), 'shift_val')


def test_a_diverging_temperature_names_its_value_and_the_nll(tmp_path):
    # the labels are each pixel's least likely class: the best T is negative
    g = np.random.default_rng(6)
    logits = g.normal(0, 3, (4, 10, 10)).astype(np.float32)
    reversed_ = [(logits, logits.argmin(0), np.zeros((3, 10, 10), np.float32))]
    with pytest.raises(ValueError, match=r"temperature scaling diverged on split 'val': "
                                         r"fitted temperature -[\d.]+ \(NLL [\d.]+ there\)"):
        TemperatureScaling().fit(_cache(tmp_path, reversed_))
    # logits that say nothing of the labels: T grows past the limit or flips
    noise = [(g.normal(0, 1, (4, 40, 40)).astype(np.float32) * 1e-3,
              g.integers(0, 4, (40, 40)), np.zeros((3, 40, 40), np.float32))]
    with pytest.raises(ValueError, match=r'fitted temperature .* outside \(0, 100\]'):
        TemperatureScaling().fit(_cache(tmp_path, noise, 'noise'))


def test_unknown_method_and_calibrator_are_named():
    from mmseg_uncert.workflows.post_hoc_calibration import calibrator_config
    with pytest.raises(ValueError, match=r"unknown calibration method 'platt'; choose "
                                         r"from \['local', 'temperature', 'vector'\]"):
        calibrator_config('platt')
    with pytest.raises(ValueError, match='temperature must be > 0'):
        TemperatureScaling(temperature=0.0)


# ------------------------------------------------------------ end to end

@pytest.fixture(scope='module')
def informative_member(tmp_path_factory, tiny_data_root):
    """A random member whose classifier bias favours the commonest class of
    the val labels: a model whose confidence means something to fit."""
    work = tmp_path_factory.mktemp('calibration')
    cfg = write_tiny_config(str(work / 'tiny.py'), tiny_data_root, max_iters=1)
    path = save_member(str(work / 'member.pth'), seed=0, num_classes=19)
    labels = np.concatenate([cv2.imread(p, cv2.IMREAD_UNCHANGED).reshape(-1) for p in
                             glob.glob(osp.join(tiny_data_root, 'gtFine', 'val', '*',
                                                '*_labelTrainIds.png'))])
    common = np.bincount(labels[labels != 255]).argmax()
    ckpt = torch.load(path, weights_only=False)
    ckpt['state_dict']['decode_head.conv_seg.bias'][common] += 2.0
    torch.save(ckpt, path)
    return dict(cfg=cfg, ckpt=path, work=work, data_root=tiny_data_root)


def test_calibrated_segmentor_divides_the_models_logits(informative_member, tmp_path):
    from mmengine.dataset import pseudo_collate
    from mmseg_uncert.apis import init_uncertainty_model
    from mmseg_uncert.workflows.split_evaluation import build_split
    m = informative_member
    with mmseg_scope():
        model = MODELS.build(dict(type='CalibratedSegmentor',
                                  model=dict(config=m['cfg'], checkpoint=m['ckpt']),
                                  calibrator=dict(type='TemperatureScaling', temperature=2.5)))
    plain = init_uncertainty_model(m['cfg'], m['ckpt'])
    assert model.state_dict().keys() == {'calibrator.temperature'}
    batch = pseudo_collate([build_split(m['cfg'], split='val')[0]])
    ours, theirs = model.test_step(batch)[0], plain.test_step(batch)[0]
    torch.testing.assert_close(ours.seg_logits.data, theirs.seg_logits.data / 2.5)
    assert torch.equal(ours.pred_sem_seg.data, theirs.pred_sem_seg.data)
    # the restored input image has the prediction's size
    data = model.data_preprocessor(batch, False)
    images = model.images_at_output_size(model, data['inputs'], data['data_samples'])
    assert images[0].shape[1:] == theirs.seg_logits.data.shape[1:]


def test_calibrate_tool_then_test_tool_report_the_same_ece(informative_member):
    m = informative_member
    out = str(m['work'] / 'ts')
    proc = run_tool(['tools/calibrate.py', m['cfg'], m['ckpt'], '--method', 'temperature',
                     '--split', 'val', '--out-dir', out])
    assert '| after |' in proc.stdout
    report = json.load(open(osp.join(out, 'calibration.json')))
    assert report['images'] == 4 and report['after']['NLL'] < report['before']['NLL']
    assert not glob.glob(osp.join(out, 'calibration_cache_*'))  # cache removed
    test_dir = str(m['work'] / 'test')
    run_tool(['tools/test.py', osp.join(out, 'calibrated.py'), 'none', '--work-dir', test_dir])
    metrics_file = sorted(glob.glob(osp.join(test_dir, '*', '*.json')))[-1]
    metrics = json.load(open(metrics_file))
    # tools/test.py's UncertaintyMetric on the calibrated model, over the same
    # images (the config tests on val), gives the ECE calibrate measured
    assert metrics['ECE'] == pytest.approx(report['after']['ECE'], abs=1e-4)
    assert metrics['NLL'] == pytest.approx(report['after']['NLL'], rel=1e-4)


@pytest.mark.parametrize('method', ['vector', 'local'])
def test_written_config_rebuilds_the_fitted_calibrator(informative_member, method):
    m = informative_member
    out = str(m['work'] / method)
    result = calibrate(m['cfg'], m['ckpt'], method, 'val', out, epochs=2)
    cfg = Config.fromfile(result.config_path)
    with mmseg_scope():
        rebuilt = MODELS.build(cfg.model)
    from mmseg_uncert.workflows.post_hoc_calibration import collect_calibration_set
    from mmseg_uncert.workflows.split_evaluation import build_split
    data = collect_calibration_set(rebuilt, build_split(cfg, split='val'),
                                   str(m['work'] / f'{method}_cache'), 'val')
    after = calibration_metrics(data, rebuilt.calibrator)
    for key in ('ECE', 'NLL', 'Brier'):
        assert after[key] == pytest.approx(result.after[key], rel=1e-5), key
    assert (method == 'local') == osp.isfile(osp.join(out, 'calibrator.pth'))
