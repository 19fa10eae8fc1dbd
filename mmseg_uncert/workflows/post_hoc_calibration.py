"""Fit post-hoc calibration of a trained segmentor on a held-out split, and
write the config that applies it."""
from __future__ import annotations

import copy
import json
import os
import os.path as osp
import shutil
import tempfile
from dataclasses import dataclass

import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.logging import print_log
from torch import nn

from ..evaluation import functional as F
from ..models.calibration import CalibrationSet
from ..models.segmentors import CalibratedSegmentor, load_config
from .split_evaluation import build_split

#: tools/calibrate.py's --method names and their calibrators
METHODS = dict(temperature='TemperatureScaling', vector='VectorScaling',
               local='LocalTemperatureScaling')
#: equal-width confidence bins of the reported ECE (as UncertaintyMetric)
ECE_BINS = 15


def calibrator_config(method: str) -> dict:
    """The unfitted calibrator of ``method`` (its classes are the model's)."""
    if method not in METHODS:
        raise ValueError(f'unknown calibration method {method!r}; choose from '
                         f'{sorted(METHODS)}')
    return dict(type=METHODS[method])


def collect_calibration_set(model: CalibratedSegmentor, dataset, directory: str,
                            name: str, limit: int | None = None,
                            ignore_index: int = 255) -> CalibrationSet:
    """Run the wrapped (uncalibrated) model over ``dataset`` and cache each
    image's seg logits, label and input image (at the logits' size)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    data = CalibrationSet(directory, name, ignore_index)
    for i in range(n):
        batch = model.data_preprocessor(pseudo_collate([dataset[i]]), False)
        samples, images = model.predict_uncalibrated(batch['inputs'], batch['data_samples'])
        sample = samples[0]
        if 'gt_sem_seg' not in sample:
            raise ValueError(f'{sample.img_path}: no label; the calibration split '
                             f'{name!r} must be labelled')
        data.add(sample.seg_logits.data, sample.gt_sem_seg.data, images[0],
                 img_path=sample.img_path)
    data.check_valid()
    return data


@torch.no_grad()
def calibration_metrics(data: CalibrationSet, calibrator: nn.Module | None = None
                        ) -> dict[str, float]:
    """ECE (15 bins), NLL and Brier over every valid pixel of ``data``, of
    the cached logits, or of their calibration by ``calibrator``: the
    functions :class:`~mmseg_uncert.evaluation.UncertaintyMetric` uses."""
    device = next(calibrator.parameters()).device if calibrator is not None else 'cpu'
    hist = torch.zeros(3, ECE_BINS, dtype=torch.float64, device=device)
    nll = brier = 0.0
    for item in data:
        logits = item.logits[None].to(device)
        if calibrator is not None:
            logits = calibrator(logits, item.image[None].to(device))
        valid = (item.label != data.ignore_index).reshape(-1).to(device)
        px = F.pixel_statistics(logits[0].reshape(logits.shape[1], -1)[:, valid],
                                item.label.reshape(-1).to(device)[valid],
                                with_entropy=False)
        F.add_calibration_histogram(hist, F.equal_bins(px.confidence, ECE_BINS),
                                    px.confidence, px.correct)
        nll -= px.log_p_true.double().sum().item()
        brier += px.brier.double().sum().item()
    wrong, right, conf_sum = hist.cpu()
    ece, _ = F.calibration_errors(wrong + right, conf_sum, right)
    return dict(ECE=ece, NLL=nll / data.num_valid, Brier=brier / data.num_valid)


@dataclass
class CalibrationResult:
    """What :func:`calibrate` fitted and measured."""
    config_path: str
    fit: dict
    before: dict[str, float]
    after: dict[str, float]


def calibrated_model_config(config: str, checkpoint: str | None,
                            calibrator: dict,
                            calibrator_checkpoint: str | None = None) -> dict:
    """The ``model`` of a config applying ``calibrator`` to ``config``'s model."""
    cfg = dict(type='CalibratedSegmentor',
               model=dict(config=osp.abspath(config),
                          checkpoint=osp.abspath(checkpoint) if checkpoint else None),
               calibrator=calibrator)
    if calibrator_checkpoint:
        cfg['calibrator_checkpoint'] = osp.abspath(calibrator_checkpoint)
    return cfg


def fitted_calibrator_config(method: str, calibrator: nn.Module) -> dict:
    """The calibrator's config with its fitted values (a network's weights
    go to a checkpoint instead)."""
    cfg = calibrator_config(method)
    if method == 'temperature':
        cfg['temperature'] = round(calibrator.temperature.item(), 6)
    elif method == 'vector':
        cfg['scale'] = [round(v, 6) for v in calibrator.scale.tolist()]
        cfg['bias'] = [round(v, 6) for v in calibrator.bias.tolist()]
    else:
        cfg['hidden_channels'] = calibrator.net[0].out_channels
        cfg['min_temperature'] = calibrator.min_temperature
    return cfg


def calibrate(config: str, checkpoint: str | None, method: str, split: str,
              out_dir: str, data_root: str | None = None, limit: int | None = None,
              epochs: int = 10, device: str = 'cpu') -> CalibrationResult:
    """Fit ``method`` on ``split`` of ``config``'s test data set for the model
    of ``config`` + ``checkpoint``, report ECE / NLL / Brier on the split
    before and after, and write ``out_dir/calibrated.py`` (with
    ``out_dir/calibrator.pth`` for local temperature scaling) and
    ``out_dir/calibration.json``.

    The split's logits are cached under ``out_dir`` while fitting (about
    images × classes × H × W × 4 bytes; ``limit`` takes the first images
    only) and removed afterwards.
    """
    cfg = load_config(config)
    model = CalibratedSegmentor(
        model=dict(config=config, checkpoint=checkpoint),
        calibrator=calibrator_config(method))
    model.to(device).eval()
    ignore_index = _ignore_index(cfg)
    dataset = build_split(cfg, data_root, split)
    os.makedirs(out_dir, exist_ok=True)
    cache = tempfile.mkdtemp(prefix='calibration_cache_', dir=out_dir)
    try:
        data = collect_calibration_set(model, dataset, cache, split, limit, ignore_index)
        before = calibration_metrics(data)
        calibrator = model.calibrator
        calibrator.requires_grad_(True)
        fit = calibrator.fit(data, epochs=epochs) if method == 'local' else calibrator.fit(data)
        calibrator.requires_grad_(False)
        after = calibration_metrics(data, calibrator)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    calibrator_checkpoint = None
    if method == 'local':
        calibrator_checkpoint = osp.join(out_dir, 'calibrator.pth')
        torch.save({k: v.cpu() for k, v in calibrator.state_dict().items()},
                   calibrator_checkpoint)
    out_cfg = copy.deepcopy(cfg)
    out_cfg.model = calibrated_model_config(
        config, checkpoint, fitted_calibrator_config(method, calibrator),
        calibrator_checkpoint)
    # the calibrated model is for testing: a training loop would train nothing
    for key in ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler'):
        out_cfg.pop(key, None)
    if data_root is not None:  # tested where it was fitted, unless changed
        for loader in ('val_dataloader', 'test_dataloader'):
            if out_cfg.get(loader):
                out_cfg[loader].dataset.data_root = data_root
    config_path = osp.join(out_dir, 'calibrated.py')
    out_cfg.dump(config_path)
    result = CalibrationResult(config_path=config_path, fit=fit, before=before,
                               after=after)
    with open(osp.join(out_dir, 'calibration.json'), 'w') as f:
        json.dump(dict(config=osp.abspath(config), checkpoint=checkpoint, method=method,
                       split=split, images=len(data), valid_pixels=data.num_valid,
                       fit=fit, before=before, after=after), f, indent=2)
    print_log(f'calibration ({method}) on {split}: ECE {before["ECE"]:.4f} -> '
              f'{after["ECE"]:.4f}, NLL {before["NLL"]:.4f} -> {after["NLL"]:.4f}, '
              f'Brier {before["Brier"]:.4f} -> {after["Brier"]:.4f}', logger='current')
    return result


def _ignore_index(cfg: Config) -> int:
    """The ignore label of the config's evaluators (255 unless set)."""
    evaluators = cfg.get('test_evaluator') or []
    evaluators = evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]
    for evaluator in evaluators:
        if isinstance(evaluator, dict) and 'ignore_index' in evaluator:
            return int(evaluator['ignore_index'])
    return 255
