"""What ProDA's parts do on the embedded benchmark, measured on the models
``benchmarks/domain_adaptation.py`` trained (run it first): the target
labels of ``shift_train``, which no training read, are used here to judge.

    python benchmarks/domain_adaptation.py
    python benchmarks/proda_diagnostics.py                  # seeds 0 1 2

Per seed, on ``--images`` ``shift_train`` images (whole 256x512 images,
batches of 4):

* pseudo-labels: the mIoU and pixel accuracy against the true labels of the
  warm-up model's argmax p₀ (what self-training learns from) and of the
  rectified argmax ω·p₀, with the prototypes and momentum network the
  denoising row starts from (the warm-up's) and those it ends with; the
  share of pixels rectification changes, and of those the share it makes
  right and the share it makes wrong;
* features: for the students of the denoising row and of the structure-
  learning row, with each row's final prototypes, the accuracy of the
  nearest prototype against the true labels (at the features' resolution)
  and the mean largest assignment max_k z_k: structure learning should make
  target features cluster around the prototypes.

Results: ``benchmarks/results/proda_diagnostics.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os.path as osp
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from domain_adaptation import (DENOISING, STAGE1, STRUCTURE, WARMUP,  # noqa: E402
                               _dataset, stage_dir)

ROWS = {name: work for name, (work, switches) in STAGE1.items()
        if switches in (DENOISING, STRUCTURE)}


def _network(state: dict) -> nn.Module:
    """A plain segmentor of the warm-up's config with ``state`` loaded."""
    from mmseg_uncert.models.segmentors import build_member
    model, _ = build_member(dict(config=osp.join(ROOT, WARMUP), checkpoint=None),
                            'diagnosed model')
    model.load_state_dict(state)
    return model.eval()


def _momentum_network(hook_state: dict) -> nn.Module:
    """The momentum network saved by PrototypeHook, as a plain segmentor."""
    state = {k[len('module.'):]: v for k, v in hook_state['momentum_network'].items()
             if k.startswith('module.')}
    return _network(state)


class Confusion:
    """Pixel areas accumulated with mmseg's IoUMetric, and its mIoU and
    pixel accuracy over them (classes neither labelled nor predicted left
    out, as in ``tools/test.py``)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.areas = [torch.zeros(k, dtype=torch.float64) for _ in range(4)]

    def add(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        from mmseg.evaluation.metrics import IoUMetric
        for one in zip(pred, label):
            for total, area in zip(self.areas, IoUMetric.intersect_and_union(
                    *one, self.k, 255)):
                total += area.double()

    def summary(self) -> dict:
        from mmseg.evaluation.metrics import IoUMetric
        metrics = IoUMetric.total_area_to_metrics(*self.areas,
                                                  metrics=['mIoU'])
        return dict(mIoU=float(np.nanmean(metrics['IoU']) * 100),
                    accuracy=float(metrics['aAcc'] * 100))


@torch.no_grad()
def diagnose(seed: int, args) -> dict:
    from mmengine.dataset import pseudo_collate

    from mmseg_uncert.models import prototype_logits
    from mmseg_uncert.models.segmentors.proda_segmentor import network_features
    work = osp.join(args.work_dir, f'seed_{seed}')
    warmup_state = torch.load(osp.join(work, 'warmup', 'iter_1000.pth'),
                              map_location='cpu', weights_only=False)['state_dict']
    labeller = _network(warmup_state)
    dataset = _dataset('shift_train')
    stages = stage_dir(args.work_dir, seed, args.iters)
    checkpoints = {row: torch.load(osp.join(stages, name, f'iter_{args.iters}.pth'),
                                   map_location='cpu', weights_only=False)
                   for row, name in ROWS.items()}
    denoising = checkpoints['+ prototypical denoising']['prototype_hook']
    # what rectifies: the start (warm-up weights, initial prototypes) and the end
    rectifiers = {
        'start': (_network(warmup_state), denoising['initial_prototypes']),
        'end': (_momentum_network(denoising), denoising['prototypes'])}
    initialised = denoising['initialised']
    k = initialised.shape[0]
    plain = Confusion(k)
    rectified = {name: Confusion(k) for name in rectifiers}
    changes = {name: dict(changed=0, made_right=0, made_wrong=0) for name in rectifiers}
    students = {row: (_network(c['state_dict']), c['prototype_hook']['prototypes'],
                      c['prototype_hook']['initialised'])
                for row, c in checkpoints.items()}
    nearest = {row: [0, 0] for row in students}
    sharpness = {row: [0.0, 0] for row in students}
    n = min(args.images, len(dataset))
    for start in range(0, n, 4):
        images = [dataset[i] for i in range(start, min(n, start + 4))]
        batch = labeller.data_preprocessor(pseudo_collate(images), False)
        x = batch['inputs']
        label = torch.stack([s.gt_sem_seg.data[0] for s in batch['data_samples']])
        size = x.shape[2:]
        metas = [s.metainfo for s in batch['data_samples']]
        prob0 = labeller.inference(x, metas).softmax(1)
        before = prob0.argmax(1)
        plain.add(before, label)
        for name, (network, prototypes) in rectifiers.items():
            parts = nn.ModuleDict(dict(backbone=network.backbone,
                                       decode_head=network.decode_head)).train()
            _, feature = network_features(parts, x)  # training mode, as in training
            weight = prototype_logits(feature, prototypes, initialised).softmax(1)
            after = (F.interpolate(weight, size, mode='bilinear') * prob0).argmax(1)
            rectified[name].add(after, label)
            known = label != 255
            changed = (after != before) & known
            changes[name]['changed'] += int(changed.sum())
            changes[name]['made_right'] += int((changed & (after == label)).sum())
            changes[name]['made_wrong'] += int((changed & (before == label)).sum())
        for row, (student, prototypes, has) in students.items():
            _, feature = network_features(
                nn.ModuleDict(dict(backbone=student.backbone,
                                   decode_head=student.decode_head)), x)
            z = prototype_logits(feature, prototypes, has).softmax(1)
            small = F.interpolate(label[:, None].float(), feature.shape[2:],
                                  mode='nearest')[:, 0].long()
            known = small != 255
            nearest[row][0] += int((z.argmax(1)[known] == small[known]).sum())
            nearest[row][1] += int(known.sum())
            sharpness[row][0] += float(z.amax(1).sum())
            sharpness[row][1] += z.shape[0] * z.shape[2] * z.shape[3]
    known_pixels = plain.areas[3].sum().item()
    return dict(
        pseudo_labels=dict(
            warmup_argmax=plain.summary(),
            **{f'rectified_{name}': dict(
                rectified[name].summary(),
                changed_share=changes[name]['changed'] / known_pixels,
                made_right_share_of_changed=changes[name]['made_right']
                / max(1, changes[name]['changed']),
                made_wrong_share_of_changed=changes[name]['made_wrong']
                / max(1, changes[name]['changed'])) for name in rectifiers}),
        features={row: dict(nearest_prototype_accuracy=100 * nearest[row][0]
                            / max(1, nearest[row][1]),
                            mean_max_assignment=sharpness[row][0]
                            / max(1, sharpness[row][1]))
                  for row in students},
        images=n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--iters', type=int, default=300)
    parser.add_argument('--images', type=int, default=200)
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'bench_uda'))
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results',
                                                  'proda_diagnostics.json'))
    args = parser.parse_args()
    import mmseg_uncert  # noqa: F401
    per_seed = {}
    for seed in args.seeds:
        per_seed[seed] = diagnose(seed, args)
        print(seed, json.dumps(per_seed[seed], indent=1), flush=True)
    with open(args.out, 'w') as f:
        json.dump(dict(date=datetime.date.today().isoformat(),
                       iters_per_stage=args.iters, per_seed=per_seed),
                  f, indent=2, ensure_ascii=False)


if __name__ == '__main__':
    main()
