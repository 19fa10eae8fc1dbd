"""A teacher over members x views against the ensemble: what it costs per
distillation step, how good a teacher it is, and what its student gains.

    python benchmarks/teacher_views.py          # after `make demo` (its members)
    python benchmarks/teacher_views.py --work-dir work_dirs/demo --limit 200

Run from the repository root. The teachers are built from the demo's trained
Fast-SCNN members (``WORK_DIR/ensemble/member_<i>/``):

* ``ensemble``: :class:`~mmseg_uncert.models.segmentors.EnsembleSegmentor`
  of the M = 3 members (3 passes);
* ``tta_ensemble``: :class:`~mmseg_uncert.models.segmentors.TTASegmentor`
  with ``members``: every member on the image and on its mirror image
  (M x V = 3 x 2 = 6 passes), the uncertainty split over members x views.

Per teacher:

1. its cost per distillation step: ``teacher_outputs`` (what
   :class:`~mmseg_uncert.models.segmentors.EnsembleDistiller` runs on every
   batch) on 4 random inputs of the training crops' size (128x256),
   median of 10 after 2 warm-ups, the teachers taking turns;
2. its quality on the first ``--limit`` val and ood images, every pixel
   (:func:`~mmseg_uncert.workflows.split_evaluation.evaluate_model`);
3. a student distilled from it with the demo's recipe
   (``configs/distill/distill-ensemble-3x_fast-scnn_…``, 500 iterations from
   member 0, the same seed), its training wall time (the same 2 cores, nothing
   else running) and its quality on the same images, and the median of its
   epistemic map over the val pixels where its teacher's is below 0.005 nats.

Writes ``benchmarks/results/teacher_views.json``. Students are kept under
``WORK_DIR/teacher_views/`` and reused by a rerun.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
DISTILL = osp.join(ROOT, 'configs', 'distill',
                   'distill-ensemble-3x_fast-scnn_1xb4-0.5k_synthetic-128x256.py')
STUDENT_ITERS = 500
FLOOR = 0.005


def teachers(members: list[dict]) -> dict[str, dict]:
    specs = [dict(config=m['config'], checkpoint=m['checkpoint']) for m in members]
    return dict(
        ensemble=dict(type='EnsembleSegmentor', members=specs),
        tta_ensemble=dict(type='TTASegmentor', members=specs, scales=(1.0, ),
                          flips=(False, True)))


def step_costs(models: dict[str, torch.nn.Module], runs: int = 10) -> dict[str, float]:
    """Median seconds of ``teacher_outputs`` on one training batch, in turns."""
    from mmseg_uncert.models.segmentors.distillation_teacher import teacher_outputs
    inputs = torch.randn(4, 3, 128, 256, generator=torch.Generator().manual_seed(0))
    metas = [dict(img_shape=(128, 256), pad_shape=(128, 256), ori_shape=(128, 256))] * 4
    seconds = {name: [] for name in models}
    for turn in range(runs + 2):
        for name, model in models.items():
            start = time.perf_counter()
            teacher_outputs(model, inputs, metas, checked=('epistemic', ))
            if turn >= 2:
                seconds[name].append(time.perf_counter() - start)
    return {name: round(statistics.median(s), 4) for name, s in seconds.items()}


def distil(work: str, name: str, teacher: dict, members: list[dict],
           data_root: str) -> tuple[str, str, float | None]:
    """The student of ``teacher``: its config, checkpoint and training seconds
    (None when a finished run was reused)."""
    from mmengine.config import Config
    from demo import Demo  # the demo's schedule, so the student is the demo's
    cfg = Config.fromfile(DISTILL)
    cfg.model.teacher = teacher
    cfg.model.student_init = members[0]['checkpoint']
    run_dir = osp.join(work, f'student_{name}')
    os.makedirs(run_dir, exist_ok=True)
    config = osp.join(run_dir, 'distill.py')
    cfg.dump(config)
    checkpoint = osp.join(run_dir, f'iter_{STUDENT_ITERS}.pth')
    if osp.isfile(checkpoint):
        return config, checkpoint, None
    data = [f'{loader}.dataset.data_root={data_root}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    start = time.time()
    subprocess.run([sys.executable, 'tools/train.py', config, '--work-dir', run_dir,
                    '--cfg-options', *data, *Demo.schedule_options(STUDENT_ITERS)],
                   check=True, cwd=ROOT)
    return config, checkpoint, round(time.time() - start, 1)


def summary(metrics: dict) -> dict:
    """The figures the demo's goals read, from one split's metrics."""
    keep = ('mIoU', 'ECE', 'seconds_per_image')
    out = {k: round(metrics[k], 4) for k in keep if k in metrics}
    for prefix, label in (('auroc/', 'misclassification'), ('ood_auroc/', 'ood'),
                          ('aleatoric_auroc/', 'ambiguous')):
        scores = {k[len(prefix):]: v for k, v in metrics.items()
                  if k.startswith(prefix) and v == v}
        if scores:
            best = max(scores, key=scores.get)
            out[f'best_{label}'] = [best, round(scores[best], 4)]
            if 'aleatoric' in scores:
                out[f'{label}_aleatoric'] = round(scores['aleatoric'], 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/synthetic_streets')
    parser.add_argument('--limit', type=int, default=200)
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results',
                                                  'teacher_views.json'))
    args = parser.parse_args()
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    sys.path.insert(0, osp.join(ROOT, 'benchmarks'))
    from tta_uncertainty import find_members  # the demo's members

    from mmseg.registry import MODELS
    from mmseg_uncert.apis import init_uncertainty_model
    from mmseg_uncert.models.segmentors import mmseg_scope
    from mmseg_uncert.workflows.split_evaluation import build_split, evaluate_model

    members = find_members(args.work_dir)
    specs = teachers(members)
    with mmseg_scope():
        models = {name: MODELS.build(spec).eval() for name, spec in specs.items()}
    costs = step_costs(models)
    print('teacher seconds per distillation step:', costs, flush=True)
    work = osp.join(args.work_dir, 'teacher_views')
    students = {name: distil(work, name, spec, members, args.data_root)
                for name, spec in specs.items()}
    datasets = {split: build_split(members[0]['config'], args.data_root, split)
                for split in ('val', 'ood')}
    results: dict[str, dict] = {}
    maps = {}
    for name in specs:
        for role, model in (('teacher', models[name]),
                            ('student', init_uncertainty_model(*students[name][:2]))):
            row = results.setdefault(f'{role} of {name}' if role == 'student' else name, {})
            for split, dataset in datasets.items():
                evaluation = evaluate_model(model, dataset, limit=args.limit,
                                            keep_maps=('epistemic', ) if split == 'val' else (),
                                            name=f'{role} {name} on {split}')
                row[split] = summary(evaluation.metrics)
                if split == 'val':
                    maps[role, name] = evaluation.maps['epistemic']
                print(name, role, split, row[split], flush=True)
        quiet = maps['teacher', name] < FLOOR
        student = results[f'student of {name}']
        student['epistemic_median_where_teacher_below_0.005'] = round(
            float(maps['student', name][quiet].float().median()), 5)
        student['train_seconds'] = students[name][2]
        results[name]['seconds_per_distillation_step'] = costs[name]
    report = dict(
        date=datetime.date.today().isoformat(), cores=os.cpu_count(),
        work_dir=args.work_dir, images=dict(val=args.limit, ood=args.limit),
        teachers={name: {k: v for k, v in spec.items() if k != 'members'}
                  for name, spec in specs.items()},
        student_recipe=osp.relpath(DISTILL, ROOT), student_iters=STUDENT_ITERS,
        note='teacher seconds per distillation step: teacher_outputs on 4 x 3 x 128 x 256, '
             'median of 10 after 2 warm-ups, in turns; train_seconds: tools/train.py wall '
             'time (null: reused run)',
        results=results)
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
