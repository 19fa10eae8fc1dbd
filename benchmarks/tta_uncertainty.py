"""Uncertainty from test-time augmentation against a deep ensemble and MC
dropout, on the embedded benchmark: quality and seconds per image.

    python benchmarks/tta_uncertainty.py                       # after `make demo`
    python benchmarks/tta_uncertainty.py --work-dir work_dirs/demo \\
        --data-root data/synthetic_streets --limit 50

Run from the repository root (the defaults are relative to it). The models are
the demo's trained Fast-SCNN members (``WORK_DIR/ensemble/member_<i>/``, their
config and latest checkpoint):

* ``member``: member ``--member`` alone (one pass, no uncertainty split);
* ``tta``: :class:`~mmseg_uncert.models.segmentors.UncertaintyTTAModel` around
  it, on the views of the member config's ``tta_pipeline`` (3 scales x 2
  flips), as ``tools/test.py --tta`` runs it;
* ``tta_tensor``: :class:`~mmseg_uncert.models.segmentors.TTASegmentor`, the
  same views made on the input tensor (the distillation-teacher path);
* ``ensemble``: :class:`~mmseg_uncert.models.segmentors.EnsembleSegmentor`
  of every member;
* ``mc_dropout``: :class:`~mmseg_uncert.models.segmentors.MCDropoutSegmentor`
  around the member, ``--mc-samples`` passes. Fast-SCNN's only dropout is
  mmseg's ``Dropout2d(p=0.1)`` in front of the decode head's classifier (the
  members trained with it), so its samples differ in the last layer alone.

Quality, on the first ``--limit`` images of the val split (mIoU, ECE, NLL,
misclassification AUROC of each score) and of the ood split (OOD AUROC), from
mmseg's IoUMetric and this package's UncertaintyMetric on every pixel
(:func:`mmseg_uncert.workflows.split_evaluation.evaluate_model`). Speed: seconds per
image of ``test_step`` on the first ``--time-images`` val images, the models
taking turns, median of 3 rounds (the views of ``tta`` are made by its data
pipeline beforehand and not timed; ``tta_tensor`` makes them in its
``test_step``). Writes ``--out`` (JSON).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import glob
import json
import os
import os.path as osp
import time

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

import mmseg_uncert  # noqa: F401  (registers the components)
from mmseg.registry import MODELS
from mmseg_uncert.workflows.split_evaluation import build_split, evaluate_model
from mmseg_uncert.models import UNCERTAINTY_NAMES
from mmseg_uncert.models.segmentors import build_member, dropout_layers, mmseg_scope

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: the scores whose misclassification / OOD AUROC are reported
SCORES = ('max_prob', 'entropy', *UNCERTAINTY_NAMES)
#: the metrics kept per split (the rest of UncertaintyMetric's are left out)
VAL_KEYS = ('mIoU', 'ECE', 'NLL', 'Brier', *(f'auroc/{s}' for s in SCORES))
OOD_KEYS = ('mIoU', 'ECE', *(f'ood_auroc/{s}' for s in SCORES))
TIMING_ROUNDS = 3
MODELS_COMPARED = ('member', 'tta', 'tta_tensor', 'ensemble', 'mc_dropout')
MC_NOTE = ('the member\'s only dropout layers (listed) are stochastic; with '
           'Fast-SCNN that is the decode head\'s Dropout2d before the classifier, '
           'which it trained with: the samples differ in the last layer alone, '
           'while every sample reruns the whole network')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo',
                        help='the demo\'s work dir (its ensemble/member_<i>/ folders)')
    parser.add_argument('--data-root', default='data/synthetic_streets',
                        help='the benchmark data (leftImg8bit/{val,ood}, gtFine/...)')
    parser.add_argument('--member', type=int, default=0,
                        help='the member that TTA and MC dropout wrap')
    parser.add_argument('--limit', type=int, default=50,
                        help='the first N images of each split')
    parser.add_argument('--mc-samples', type=int, default=20,
                        help='MC-dropout passes (the project config uses 20)')
    parser.add_argument('--time-images', type=int, default=10,
                        help='val images timed per model and round')
    parser.add_argument('--models', nargs='+', choices=MODELS_COMPARED,
                        default=list(MODELS_COMPARED))
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results',
                                                  'tta_uncertainty.json'))
    return parser.parse_args()


def find_members(work_dir: str) -> list[dict]:
    """``dict(config, checkpoint)`` of each ``WORK_DIR/ensemble/member_<i>``:
    its dumped config and the checkpoint its ``last_checkpoint`` names."""
    members = []
    for folder in sorted(glob.glob(osp.join(work_dir, 'ensemble', 'member_*')),
                         key=lambda f: int(f.rsplit('_', 1)[1])):
        configs = glob.glob(osp.join(folder, '*.py'))
        last = osp.join(folder, 'last_checkpoint')
        if len(configs) != 1 or not osp.isfile(last):
            raise FileNotFoundError(
                f'{folder}: expected one dumped config and a last_checkpoint '
                f'(a finished tools/train_ensemble.py member); found {configs}')
        with open(last) as f:
            checkpoint = osp.join(folder, osp.basename(f.read().strip()))
        members.append(dict(config=configs[0], checkpoint=checkpoint))
    if not members:
        raise FileNotFoundError(f'no trained members under {work_dir}/ensemble/; run '
                                f'`make demo` (or give --work-dir)')
    return members


def build_models(names: list[str], members: list[dict], index: int, scales: list[float],
                 mc_samples: int) -> dict[str, torch.nn.Module]:
    """The models named in ``names`` (see the module docstring), in eval."""
    member = members[index]

    def build(name: str) -> torch.nn.Module:
        if name == 'member':
            return build_member(member, f'member {index}')[0]
        if name == 'tta':
            return MODELS.build(dict(type='UncertaintyTTAModel',
                                     module=build('member')))
        return MODELS.build(dict(
            tta_tensor=dict(type='TTASegmentor', model=member, scales=scales,
                            flips=(False, True)),
            ensemble=dict(type='EnsembleSegmentor', members=members),
            mc_dropout=dict(type='MCDropoutSegmentor', model=member,
                            num_samples=mc_samples, seed=0))[name])

    with mmseg_scope():
        return {name: build(name).eval() for name in names}


def time_in_turns(models: dict[str, torch.nn.Module], batches: dict[str, list]
                  ) -> dict[str, float]:
    """Seconds per image of each model's ``test_step`` on its own batches,
    the models taking turns, median of the rounds (as
    :func:`mmseg_uncert.workflows.split_evaluation.time_test_steps`, which gives every
    model the same data set: the TTA model reads the views of another)."""
    per_round: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for _ in range(TIMING_ROUNDS):
            for name, model in models.items():
                start = time.perf_counter()
                for batch in batches[name]:
                    model.test_step(batch)
                per_round[name].append(
                    (time.perf_counter() - start) / len(batches[name]))
    return {name: round(float(np.median(v)), 4) for name, v in per_round.items()}


def main() -> None:
    args = parse_args()
    members = find_members(args.work_dir)
    if not 0 <= args.member < len(members):
        raise SystemExit(f'--member {args.member}: the work dir has '
                         f'{len(members)} members')
    config = Config.fromfile(members[args.member]['config'])
    tta_config = copy.deepcopy(config)
    tta_config.test_dataloader.dataset.pipeline = config.tta_pipeline
    # the tta_pipeline's Resize scale factors: the tensor views are the same
    scales = list(config.img_ratios)
    models = build_models(args.models, members, args.member, scales, args.mc_samples)
    # {split: {whether the TTA pipeline: dataset}}
    datasets = {split: {tta: build_split(tta_config if tta else config,
                                         args.data_root, split)
                        for tta in (False, True)} for split in ('val', 'ood')}
    views = len(datasets['val'][True][0]['inputs'])
    if views != 2 * len(scales):
        raise SystemExit(f'the tta_pipeline of {members[args.member]["config"]} makes '
                         f'{views} views, not img_ratios {scales} x 2 flips: '
                         f'the tensor views would differ')
    results: dict[str, dict] = {name: {} for name in models}
    for split, keys in (('val', VAL_KEYS), ('ood', OOD_KEYS)):
        for name, model in models.items():
            evaluation = evaluate_model(model, datasets[split][name == 'tta'],
                                        limit=args.limit, name=name)
            metrics = evaluation.metrics
            results[name][split] = {k: round(metrics[k], 4)
                                    for k in keys if k in metrics}
            results[name][split]['images'] = metrics['images']
            print(f'{split} {name}: ' + ', '.join(
                f'{k} {v}' for k, v in results[name][split].items()), flush=True)

    images = min(args.time_images, args.limit)
    batches = {name: [pseudo_collate([datasets['val'][name == 'tta'][i]])
                      for i in range(images)] for name in models}
    seconds = time_in_turns(models, batches)
    for name in models:
        results[name]['seconds_per_image'] = seconds[name]

    mc_layers = ([f'{type(m).__name__}(p={m.p})'
                  for m in dropout_layers(models['mc_dropout'].model)]
                 if 'mc_dropout' in models else [])
    report = dict(
        date=datetime.date.today().isoformat(),
        threads=torch.get_num_threads(),
        work_dir=args.work_dir, data_root=args.data_root,
        member=args.member, members=len(members),
        images=dict(val=args.limit, ood=args.limit, timed=images,
                    note=f'the first {args.limit} val and {args.limit} ood images '
                         f'(of {len(datasets["val"][False])} and '
                         f'{len(datasets["ood"][False])}), every pixel; '
                         f'timing on the first {images} '
                         f'val images, models taking turns, median of '
                         f'{TIMING_ROUNDS} rounds'),
        views=dict(scales=scales, flips=[False, True]),
        mc_dropout=dict(samples=args.mc_samples, dropout_layers=mc_layers,
                        note=MC_NOTE),
        models=results)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
