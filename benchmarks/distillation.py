"""Students distilled from a teacher ensemble on the embedded benchmark.

    python benchmarks/distillation.py                 # 2000 iterations per model
    python benchmarks/distillation.py --iters 600     # shorter schedule
    python benchmarks/distillation.py --iters 600 --time-only  # re-time, quiet machine

Steps (each skipped when its output exists, so an interrupted run resumes;
everything under ``--work-dir``, default ``work_dirs/bench_distillation``):

1. the synthetic benchmark in ``data/synthetic_streets`` (generated if absent);
2. a teacher ensemble of M = 3 members of the CPU segmentor
   (``tools/train_ensemble.py``, seeds 0..2); member 0 is also the
   "no distillation" row: the student's architecture trained on labels only;
3. three students, ``configs/distill-ensemble-3x_…synthetic…`` with the
   uncertainty loss in its ``mse``, ``rmsle`` and default ``distribution``
   form (same seed, same schedule); checkpoints every fifth of the schedule
   show the ``mse`` collapse as it happens;
4. evaluation on ``val`` and ``ood``: per-pixel Pearson and Spearman
   correlation of each student's ``std`` with the teacher's (val), the
   fraction of predictions below 0.01, misclassification AUROC (val), OOD
   AUROC (ood), ECE and mIoU (val), and inference seconds per image.

Results go to ``benchmarks/results/distillation.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import os.path as osp
import subprocess
import sys
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MEMBER = osp.join(ROOT, 'configs', 'fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py')
DISTILL = osp.join(ROOT, 'configs',
                   'distill-ensemble-3x_fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py')
FORMS = ('mse', 'rmsle', 'distribution')
MEMBERS = 3


def _run(command: list[str]) -> None:
    print('$', ' '.join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def train_teachers(work: str, iters: int) -> list[dict]:
    ens_dir = osp.join(work, 'ensemble')
    _run([sys.executable, 'tools/train_ensemble.py', MEMBER, '--members', str(MEMBERS),
          '--work-dir', ens_dir, '--cfg-options', f'train_cfg.max_iters={iters}',
          f'train_cfg.val_interval={iters}', f'default_hooks.checkpoint.interval={iters}'])
    return [json.load(open(osp.join(ens_dir, f'member_{i}', 'member.json')))
            for i in range(MEMBERS)]


def train_student(work: str, form: str, members: list[dict], iters: int) -> str:
    run_dir = osp.join(work, f'student_{form}')
    final = osp.join(run_dir, f'iter_{iters}.pth')
    if osp.isfile(final):
        return final
    # the recipe's config with this run's teacher members
    config = osp.join(work, 'distill_student.py')
    teacher = dict(_delete_=True, type='EnsembleSegmentor',
                   members=[dict(config=m['config'], checkpoint=m['checkpoint'])
                            for m in members])
    with open(config, 'w') as f:
        f.write(f'_base_ = [{DISTILL!r}]\nmodel = dict(teacher={teacher!r})\n')
    command = [sys.executable, 'tools/train.py', config, '--work-dir', run_dir,
               '--cfg-options', f'train_cfg.max_iters={iters}',
               f'train_cfg.val_interval={iters}',
               f'default_hooks.checkpoint.interval={max(1, iters // 5)}',
               'default_hooks.checkpoint.max_keep_ckpts=10',
               f'model.decode_head.loss_uncertainty.form={form}',
               'randomness.seed=100']
    if osp.isfile(osp.join(run_dir, 'last_checkpoint')):
        command.append('--resume')
    _run(command)
    return final


def _dataset(split: str):
    from mmseg_uncert.apis.evaluation import build_split
    return build_split(MEMBER, split=split)


def _student_model(checkpoint: str, form: str):
    """The deployment model: the student's parts alone, no teacher."""
    from mmseg_uncert.apis import init_uncertainty_model
    return init_uncertainty_model(DISTILL, checkpoint, cfg_options={
        'model.decode_head.loss_uncertainty.form': form})


def _teacher_model(members: list[dict]):
    from mmseg.registry import MODELS
    from mmseg_uncert.models.segmentors import mmseg_scope
    with mmseg_scope():
        return MODELS.build(dict(type='EnsembleSegmentor', members=[
            dict(config=m['config'], checkpoint=m['checkpoint']) for m in members])).eval()


def _single_model(member: dict):
    from mmseg_uncert.models.segmentors import build_member, mmseg_scope
    with mmseg_scope():
        return build_member(dict(config=member['config'],
                                 checkpoint=member['checkpoint']), 'member 0')[0].eval()


def evaluate(models: dict, split: str, limit: int | None = None) -> dict:
    """Metrics of every model on ``split``, and their per-pixel uncertainty maps
    (for the correlations)."""
    from mmseg_uncert.apis.evaluation import evaluate_model
    dataset = _dataset(split)
    results, maps = {}, {}
    for name, (model, scores) in models.items():
        keep = ('std', ) if 'std' in scores else ()
        evaluation = evaluate_model(model, dataset, scores, limit, keep_maps=keep)
        results[name] = evaluation.metrics
        if keep:
            maps[name] = evaluation.maps['std']
        print(split, name, {k: round(v, 4) for k, v in evaluation.metrics.items()
                            if k in ('mIoU', 'ECE', 'auroc/std', 'auroc/max_prob',
                                     'ood_auroc/std', 'seconds_per_image')}, flush=True)
    return dict(metrics=results, maps=maps)


def collapse_curve(work: str, iters: int, limit: int = 20) -> dict:
    """Mean predicted std and fraction below 0.01 on a few val images, at each
    saved checkpoint of the mse and default students."""
    from mmengine.dataset import pseudo_collate
    dataset = _dataset('val')
    curve = {}
    for form in ('mse', 'distribution'):
        points = []
        for k in range(1, 6):
            ckpt = osp.join(work, f'student_{form}', f'iter_{max(1, iters // 5) * k}.pth')
            if not osp.isfile(ckpt):
                continue
            model = _student_model(ckpt, form)
            values = []
            for i in range(min(limit, len(dataset))):
                with torch.no_grad():
                    out = model.test_step(pseudo_collate([dataset[i]]))
                values.append(out[0].pred_uncertainty.std.flatten())
            v = torch.cat(values)
            points.append(dict(iteration=max(1, iters // 5) * k, mean=v.mean().item(),
                               fraction_below_0_01=(v < 0.01).float().mean().item()))
        curve[form] = points
    return curve


def time_models(models: dict, images: int = 30, warmup: int = 3) -> dict:
    """Seconds per val image of each model, measured alone (one model at a
    time, after ``warmup`` untimed images): the evaluation loop's timings
    share the machine with whatever else runs."""
    from mmengine.dataset import pseudo_collate
    dataset = _dataset('val')
    batches = [pseudo_collate([dataset[i]]) for i in range(warmup + images)]
    seconds = {}
    for name, (model, _) in models.items():
        with torch.no_grad():
            for batch in batches[:warmup]:
                model.test_step(batch)
            start = time.perf_counter()
            for batch in batches[warmup:]:
                model.test_step(batch)
        seconds[name] = (time.perf_counter() - start) / images
        print('timing', name, round(seconds[name], 4), flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--iters', type=int, default=2000)
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'bench_distillation'))
    parser.add_argument('--limit', type=int, help='images per split (default all)')
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results',
                                                  'distillation.json'))
    parser.add_argument('--time-only', action='store_true',
                        help='only re-measure seconds per image of the trained models, '
                             'on a quiet machine, into the existing results file')
    args = parser.parse_args()
    import mmseg_uncert  # noqa: F401
    from mmseg_uncert.apis.evaluation import map_correlations
    data_root = osp.join(ROOT, 'data', 'synthetic_streets')
    if not osp.isdir(osp.join(data_root, 'leftImg8bit', 'val')):
        _run([sys.executable, 'tools/make_synthetic.py', '--out-dir', data_root,
              '--overwrite'])
    members = train_teachers(args.work_dir, args.iters)
    students = {form: train_student(args.work_dir, form, members, args.iters)
                for form in FORMS}
    teacher = _teacher_model(members)
    models = {'teacher ensemble (M=3)': (teacher, ['std', 'epistemic', 'max_prob', 'entropy']),
              'no distillation (member 0)': (_single_model(members[0]), ['max_prob', 'entropy'])}
    for form, ckpt in students.items():
        models[f'student {form}'] = (_student_model(ckpt, form),
                                      ['std', 'max_prob', 'entropy'])
    if args.time_only:
        with open(args.out) as f:
            result = json.load(f)
        for name, sec in time_models(models).items():
            result['rows'][name]['seconds_per_image'] = sec
        result['timing'] = dict(date=datetime.date.today().isoformat(), images=30,
                                note='each model alone on the machine')
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2, default=float)
        return
    val = evaluate(models, 'val', args.limit)
    ood = evaluate(models, 'ood', args.limit)
    rows = {}
    for name in models:
        m, o = val['metrics'][name], ood['metrics'][name]
        score = 'std' if 'auroc/std' in m else 'max_prob'
        row = dict(mIoU=m['mIoU'], ECE=m['ECE'], score=score,
                   misclassification_auroc=m[f'auroc/{score}'],
                   ood_auroc=o.get(f'ood_auroc/{score}'),
                   seconds_per_image=m['seconds_per_image'])
        if score == 'max_prob':
            row['misclassification_auroc_entropy'] = m['auroc/entropy']
            row['ood_auroc_entropy'] = o.get('ood_auroc/entropy')
        if name in val['maps'] and name != 'teacher ensemble (M=3)':
            row.update(map_correlations(val['maps'][name],
                                        val['maps']['teacher ensemble (M=3)']))
        elif name == 'teacher ensemble (M=3)':
            row['fraction_below_0_01'] = (val['maps'][name] < 0.01).double().mean().item()
        rows[name] = row
    result = dict(date=datetime.date.today().isoformat(), cores=os.cpu_count(),
                  iters=args.iters, members=MEMBERS, images_per_split=args.limit,
                  rows=rows, collapse=collapse_curve(args.work_dir, args.iters))
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2, default=float)
    print(json.dumps(result, indent=2, default=float))


if __name__ == '__main__':
    main()
