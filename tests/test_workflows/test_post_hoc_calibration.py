"""Post-hoc calibration: its metrics, the config it writes and tools/calibrate.py.

Also mmseg_uncert.models.segmentors.calibrated_segmentor, the model that
config builds.
"""
from __future__ import annotations

import glob
import json
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmseg.registry import MODELS

from mmseg_uncert.models.calibration import TemperatureScaling
from mmseg_uncert.models.segmentors import mmseg_scope
from mmseg_uncert.workflows.post_hoc_calibration import calibrate, calibration_metrics

from conftest import run_tool
from helpers.calibration import _cache, _overconfident
from helpers.members import save_member
from helpers.tiny_config import write_tiny_config


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


def test_unknown_method_and_calibrator_are_named():
    from mmseg_uncert.workflows.post_hoc_calibration import calibrator_config
    with pytest.raises(ValueError, match=r"unknown calibration method 'platt'; choose "
                                         r"from \['local', 'temperature', 'vector'\]"):
        calibrator_config('platt')
    with pytest.raises(ValueError, match='temperature must be > 0'):
        TemperatureScaling(temperature=0.0)


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
