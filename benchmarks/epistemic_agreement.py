"""How closely two ensembles of the same recipe agree on their epistemic maps:
the yardstick for the main job's goal that the student's epistemic map
follow its teacher's at Pearson >= 0.8.

    python benchmarks/epistemic_agreement.py [--student CONFIG CHECKPOINT] [--limit N]
    python benchmarks/epistemic_agreement.py --ensemble-a work_dirs/demo/ensemble \\
        --student work_dirs/demo/student/distill.py work_dirs/demo/student/iter_500.pth

Two teacher ensembles of M = 3 bagged Fast-SCNN members
(``configs/fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py``, 1000 iterations, each
member on its own bootstrap sample of train) differ only by their seeds:
A has seeds 0..2 (the demo's and the distillation benchmark's), B seeds
3..5. Each is trained with ``tools/train_ensemble.py`` where its work dir
has no checkpoints yet (``--ensemble-a`` / ``--ensemble-b`` reuse trained
ones). Both, and the student where given, are evaluated on every val and
ood image (:func:`mmseg_uncert.workflows.split_evaluation.evaluate_model`); the result
is the per-pixel Pearson and Spearman correlation of their epistemic maps
(mutual information) over val, over ood and over both, and each ensemble's
own figures (mIoU, ECE, OOD AUROC of its epistemic and aleatoric maps).

What part of one ensemble's epistemic map a second ensemble of the same
recipe does not reproduce is particular to those members' weights. A student
that learns it must learn those members' particular mistakes, on images
none of them was trained on. Results:
``benchmarks/results/epistemic_agreement.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import os.path as osp
import subprocess
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MEMBER = osp.join(ROOT, 'configs', 'fastscnn', 'fast-scnn_1xb4-1k_synthetic-128x256.py')
MEMBERS = 3
ITERS = 1000
#: the recipe's members: bagged, and the schedule of benchmarks/distillation.py
OPTIONS = ['train_dataloader.sampler.type=BootstrapSampler',
           f'train_cfg.max_iters={ITERS}', f'train_cfg.val_interval={ITERS + 1}',
           'param_scheduler.0.end=100', 'param_scheduler.1.begin=100',
           f'param_scheduler.1.end={ITERS}', f'default_hooks.checkpoint.interval={ITERS}']
SEEDS = dict(A=0, B=MEMBERS)
SPLITS = ('val', 'ood')


def members_of(ens_dir: str, seed: int, data_root: str) -> list[dict]:
    """The members of the ensemble in ``ens_dir``, trained there first
    (seeds ``seed``..``seed + M - 1``) where they are not yet."""
    files = [osp.join(ens_dir, f'member_{i}', 'member.json') for i in range(MEMBERS)]
    if not all(osp.isfile(f) for f in files):
        data = [f'{loader}.dataset.data_root={data_root}'
                for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
        command = [sys.executable, 'tools/train_ensemble.py', MEMBER, '--members',
                   str(MEMBERS), '--jobs', str(MEMBERS), '--seed', str(seed),
                   '--work-dir', ens_dir, '--cfg-options', *data, *OPTIONS]
        print('$', ' '.join(command), flush=True)
        subprocess.run(command, check=True, cwd=ROOT)
    members = [json.load(open(f)) for f in files]
    seeds = [m['seed'] for m in members]
    if seeds != list(range(seed, seed + MEMBERS)):
        raise SystemExit(f'{ens_dir} holds members of seeds {seeds}, not '
                         f'{list(range(seed, seed + MEMBERS))}: give another work dir')
    return members


def correlations(maps: dict[str, dict[str, torch.Tensor]], ours: str, theirs: str) -> dict:
    """Pearson and Spearman of two models' epistemic maps over val, ood and both."""
    from mmseg_uncert.workflows.split_evaluation import map_correlations
    result = {}
    for where, splits in (('val', ['val']), ('ood', ['ood']), ('val + ood', list(SPLITS))):
        a = torch.cat([maps[ours][s] for s in splits])
        b = torch.cat([maps[theirs][s] for s in splits])
        stats = map_correlations(a, b)
        result[where] = dict(pearson=stats['pearson'], spearman=stats['spearman'])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--ensemble-a', default=osp.join(ROOT, 'work_dirs', 'agreement', 'A'),
                        help='work dir of ensemble A (seeds 0..2; trained if empty)')
    parser.add_argument('--ensemble-b', default=osp.join(ROOT, 'work_dirs', 'agreement', 'B'),
                        help='work dir of ensemble B (seeds 3..5; trained if empty)')
    parser.add_argument('--student', nargs=2, metavar=('CONFIG', 'CHECKPOINT'),
                        help='a student distilled from ensemble A, to correlate too')
    parser.add_argument('--data-root', default=osp.join(ROOT, 'data', 'synthetic_streets'))
    parser.add_argument('--limit', type=int, help='images per split (default all)')
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results',
                                                  'epistemic_agreement.json'))
    args = parser.parse_args()
    import mmseg_uncert  # noqa: F401
    from mmseg.registry import MODELS
    from mmseg_uncert.apis import init_uncertainty_model
    from mmseg_uncert.workflows.distillation_report import summarise
    from mmseg_uncert.workflows.split_evaluation import build_split, evaluate_model
    from mmseg_uncert.models.segmentors import mmseg_scope
    if not osp.isdir(osp.join(args.data_root, 'leftImg8bit', 'ood')):
        command = [sys.executable, 'tools/make_synthetic.py', '--out-dir', args.data_root,
                   '--splits', 'train,val,ood']
        print('$', ' '.join(command), flush=True)
        subprocess.run(command, check=True, cwd=ROOT)
    torch.manual_seed(0)
    members = {name: members_of(ens_dir, SEEDS[name], args.data_root)
               for name, ens_dir in (('A', args.ensemble_a), ('B', args.ensemble_b))}
    models, seeds = {}, {}
    with mmseg_scope():
        for name, ms in members.items():
            models[f'ensemble {name}'] = MODELS.build(dict(type='EnsembleSegmentor', members=[
                dict(config=m['config'], checkpoint=m['checkpoint']) for m in ms])).eval()
            seeds[f'ensemble {name}'] = [m['seed'] for m in ms]
    if args.student:
        models['student of A'] = init_uncertainty_model(*args.student)
    metrics, maps = {}, {}
    for name, model in models.items():
        metrics[name], maps[name] = {}, {}
        for split in SPLITS:
            dataset = build_split(MEMBER, args.data_root, split)
            evaluation = evaluate_model(model, dataset, limit=args.limit,
                                        keep_maps=('epistemic', ), log_interval=50,
                                        name=f'{name} on {split}')
            metrics[name][split] = evaluation.metrics
            maps[name][split] = evaluation.maps['epistemic']
    figures = {}
    for name in models:
        summary = summarise(name, metrics[name]['val'], metrics[name]['ood'])
        ood = summary.auroc['ood']
        figures[name] = dict(
            mIoU=summary.miou, ECE=summary.ece,
            best_misclassification=summary.best('misclassification'),
            ood_auroc_epistemic=ood.get('epistemic'), ood_auroc_aleatoric=ood.get('aleatoric'))
        if name in seeds:
            figures[name]['seeds'] = seeds[name]
    pairs = {'ensemble A vs ensemble B': correlations(maps, 'ensemble A', 'ensemble B')}
    if args.student:
        for other in ('ensemble A', 'ensemble B'):
            pairs[f'student of A vs {other}'] = correlations(maps, 'student of A', other)
    result = dict(date=datetime.date.today().isoformat(), cores=os.cpu_count(),
                  torch_threads=torch.get_num_threads(), members=MEMBERS, iters=ITERS,
                  member_options=OPTIONS, images_per_split=args.limit or 'all',
                  student=osp.basename(args.student[1]) if args.student else None,
                  models=figures, epistemic_correlation=pairs)
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2, default=float)
    print(json.dumps(result, indent=2, default=float))


if __name__ == '__main__':
    torch.set_grad_enabled(False)
    main()
