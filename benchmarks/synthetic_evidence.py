"""Evidence that the synthetic benchmark's uncertainty ground truth is real.

For a trained segmentor: mIoU on val, and its pixel error rate inside the
true aleatoric regions (label entropy > 0: jittered boundaries, ambiguous
zones) vs outside them; the same on shift_val; and what it predicts on the
OOD objects of the ood split.

    python benchmarks/synthetic_evidence.py CONFIG CHECKPOINT \
        --data-root data/synthetic_streets --out benchmarks/results/synthetic_evidence.json
"""
import argparse
import datetime
import json
import os
import os.path as osp
import time

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

import mmseg_uncert  # noqa: F401
from mmseg.registry import DATASETS, MODELS

NUM_CLASSES = 19
SPLITS = {'val': 'synthetic_streets.py', 'shift_val': 'synthetic_streets_shift.py',
          'ood': 'synthetic_streets_ood.py'}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--data-root', default='data/synthetic_streets')
    parser.add_argument('--out', default=osp.join(
        osp.dirname(osp.abspath(__file__)), 'results', 'synthetic_evidence.json'))
    return parser.parse_args()


def evaluate_split(model, cfg: Config, data_root: str, split: str) -> dict:
    dataset_cfg = cfg.test_dataloader.dataset.copy()
    dataset_cfg.data_root = data_root
    dataset_cfg.data_prefix = dict(img_path=f'leftImg8bit/{split}',
                                   seg_map_path=f'gtFine/{split}')
    dataset = DATASETS.build(dataset_cfg)
    intersect, union = np.zeros(NUM_CLASSES), np.zeros(NUM_CLASSES)
    errors = {'ambiguous': [0, 0], 'clean': [0, 0]}
    ood_pixels, ood_as_class = 0, np.zeros(NUM_CLASSES, np.int64)
    for i in range(len(dataset)):
        with torch.no_grad():
            sample = model.test_step(pseudo_collate([dataset[i]]))[0]
        pred = sample.pred_sem_seg.data[0].numpy()
        gt = sample.gt_sem_seg.data[0].numpy()
        ambiguous = sample.gt_aleatoric.data[0].numpy() > 0
        ood = sample.gt_ood.data[0].numpy() > 0
        valid = gt != 255
        for c in range(NUM_CLASSES):
            p, g = (pred == c) & valid, (gt == c) & valid
            intersect[c] += np.sum(p & g)
            union[c] += np.sum(p | g)
        for name, region in (('ambiguous', ambiguous & valid),
                             ('clean', ~ambiguous & valid)):
            errors[name][0] += int(np.sum(pred[region] != gt[region]))
            errors[name][1] += int(region.sum())
        ood_pixels += int(ood.sum())
        ood_as_class += np.bincount(pred[ood], minlength=NUM_CLASSES)[:NUM_CLASSES]
    with np.errstate(invalid='ignore', divide='ignore'):
        miou = float(np.nanmean(intersect / union) * 100)
    result = dict(images=len(dataset), mIoU=round(miou, 2))
    for name, (wrong, total) in errors.items():
        result[f'error_rate_{name}'] = round(wrong / max(total, 1), 4)
        result[f'pixels_{name}'] = total
    if ood_pixels:
        classes = dataset.metainfo['classes']
        top = np.argsort(ood_as_class)[::-1][:3]
        result['ood_pixels'] = ood_pixels
        result['ood_predicted_as'] = {classes[c]: round(ood_as_class[c] / ood_pixels, 3)
                                      for c in top}
    return result


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    load_checkpoint(model, args.checkpoint, map_location='cpu')
    model.eval()
    base = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs',
                    '_base_', 'datasets')
    results = dict(config=osp.basename(args.config),
                   checkpoint=osp.basename(args.checkpoint),
                   date=datetime.date.today().isoformat(), splits={})
    start = time.time()
    for split, data_cfg in SPLITS.items():
        split_cfg = Config.fromfile(osp.join(base, data_cfg))
        results['splits'][split] = evaluate_split(model, split_cfg,
                                                  args.data_root, split)
        print(split, json.dumps(results['splits'][split]), flush=True)
    results['seconds'] = round(time.time() - start, 1)
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(results, f, indent=2)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
