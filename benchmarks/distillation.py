"""The main job's goals, measured side by side in one run: a teacher ensemble,
one label-trained member and students distilled from the ensemble, on every
val and ood pixel of the embedded benchmark.

    python benchmarks/distillation.py                  # the recipe's schedules (1000 + 500)
    python benchmarks/distillation.py --iters 300 --student-iters 100  # a smoke run
    python benchmarks/distillation.py --tables         # docs/benchmarks.md's tables from the results

Steps (each skipped when its output exists, so an interrupted run resumes;
everything under ``--work-dir``, default ``work_dirs/bench_distillation``):

1. the synthetic benchmark in ``data/synthetic_streets`` (train, val, ood;
   generated if absent);
2. a teacher ensemble of M = 3 Fast-SCNN members (``tools/train_ensemble.py``,
   seeds 0..2, side by side, each on its own bootstrap sample of the train
   split: ``BootstrapSampler``); member 0 is also the "no distillation" row:
   the student's architecture trained on labels alone;
3. students distilled from the ensemble with
   ``configs/distill/distill-ensemble-3x_fast-scnn_…``, each starting from member 0
   (same seed, same schedule):
   ``decomposition`` (the recipe: epistemic + aleatoric channels, noise
   patches, every pixel), ``no patches`` (the recipe without the pasted
   noise patches), ``std`` (one channel, the members' spread), ``dirichlet``
   (EnD²: no branch, the logits are a Dirichlet fitted to the members; its
   maps in closed form), ``forum per-class mse`` (the forum thread's student),
   ``decomposition 2x schedule`` (the recipe, twice as many iterations);
   ``--recipe-seeds`` trains the recipe again with other seeds;
4. evaluation of every model on all of val and ood: mIoU, ECE,
   misclassification / ambiguous-pixel / OOD AUROC of every score, seconds
   per image (``test_step`` on the first 20 val images, the models taking
   turns, median of 3 rounds), and the per-pixel Pearson
   correlation of each student's epistemic map with the ensemble's over
   val + ood, and the most a map at the student's 1/8 resolution could
   reach (the ensemble's map averaged over 8x8 cells and upsampled, against
   itself);
5. the goals (:func:`mmseg_uncert.workflows.distillation_report.check_goals`),
   each with its figures and met or not.

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

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MEMBER = osp.join(ROOT, 'configs', 'fastscnn', 'fast-scnn_1xb4-1k_synthetic-128x256.py')
DISTILL = osp.join(ROOT, 'configs', 'distill',
                   'distill-ensemble-3x_fast-scnn_1xb4-0.5k_synthetic-128x256.py')
MEMBERS = 3
#: bagging: each member draws its own bootstrap sample of the train split;
#: measured against seeds alone in benchmarks/results/member_diversity.json
BAGGING = ['train_dataloader.sampler.type=BootstrapSampler']


def _without_patches(cfg) -> None:
    pipeline = cfg.train_dataloader.dataset.pipeline
    cfg.train_dataloader.dataset.pipeline = [
        t for t in pipeline if t['type'] != 'PasteNoisePatches']


def _std_channel(cfg) -> None:
    cfg.model.decode_head.uncertainty_names = ('std', )
    # the std of probabilities lies in [0, 0.5]
    cfg.model.decode_head.loss_uncertainty.value_range = (0.0, 0.5)


def _dirichlet(cfg) -> None:
    """Ensemble Distribution Distillation (EnD², Malinin et al. 2020): no
    uncertainty branch; the student's logits are a Dirichlet's
    log-concentrations fitted to the members' predictions, and its total /
    aleatoric / epistemic maps follow from them in closed form."""
    cfg.model.decode_head = dict(type='DirichletHead', head=cfg.model.decode_head.head)
    cfg.val_evaluator = cfg.test_evaluator = [
        dict(type='IoUMetric', iou_metrics=['mIoU']),
        dict(type='UncertaintyMetric',
             scores=['max_prob', 'entropy', 'epistemic', 'aleatoric'])]


def _forum_per_class_mse(cfg) -> None:
    """The student of the forum thread the product grew from: one sigmoid
    channel per class regressing the members' spread of that class's probability, MSE
    averaged over every channel and pixel; no pasted patches."""
    _without_patches(cfg)
    classes = cfg.model.decode_head.head.num_classes
    names = tuple(f'std_{c}' for c in range(classes))
    cfg.model.decode_head.uncertainty_names = names
    cfg.model.decode_head.loss_uncertainty = dict(type='UncertaintyRegressionLoss', form='mse')
    cfg.model.uncertainty_targets = {n: f'class_std/{c}' for c, n in enumerate(names)}
    # it gives no epistemic or aleatoric map to score
    cfg.val_evaluator = cfg.test_evaluator = [
        dict(type='IoUMetric', iou_metrics=['mIoU']),
        dict(type='UncertaintyMetric', scores=['max_prob', 'entropy'])]


#: student variants: the recipe, and what each ablation changes in it
STUDENTS = {'decomposition': None, 'no patches': _without_patches, 'std': _std_channel,
            'dirichlet': _dirichlet, 'forum per-class mse': _forum_per_class_mse,
            'decomposition 2x schedule': None}
#: students trained for a multiple of --student-iters (the recipe otherwise)
SCHEDULE_FACTOR = {'decomposition 2x schedule': 2}
FORUM = 'forum per-class mse'
#: checkpoints of the forum student, to watch its predictions over training
FORUM_CHECKPOINTS = 5
ENSEMBLE, MEMBER_ROW = 'teacher ensemble (M=3)', 'no distillation (member 0)'
#: the seed of every student; the recipe is also trained with --recipe-seeds
STUDENT_SEED = 100
#: the speed pass: the first val images, every model in turn, median of rounds
TIMING = dict(images=20, rounds=3)
RECIPE = 'decomposition'


def _run(command: list[str], env: dict | None = None) -> None:
    print('$', ' '.join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT, env=env)


def schedule(iters: int) -> list[str]:
    warmup = max(1, min(100, iters // 10))
    return [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters + 1}',
            f'param_scheduler.0.end={warmup}', f'param_scheduler.1.begin={warmup}',
            f'param_scheduler.1.end={iters}',
            f'default_hooks.checkpoint.interval={iters}']


def train_teachers(work: str, iters: int) -> list[dict]:
    ens_dir = osp.join(work, 'ensemble_bootstrap')
    _run([sys.executable, 'tools/train_ensemble.py', MEMBER, '--members', str(MEMBERS),
          '--jobs', str(MEMBERS), '--work-dir', ens_dir, '--cfg-options', *schedule(iters),
          *BAGGING])
    return [json.load(open(osp.join(ens_dir, f'member_{i}', 'member.json')))
            for i in range(MEMBERS)]


def student_config(work: str, name: str, members: list[dict]) -> str:
    """The recipe's config, changed for student ``name``, with this run's
    teacher members."""
    from mmengine.config import Config
    cfg = Config.fromfile(DISTILL)
    cfg.model.teacher = dict(type='EnsembleSegmentor', members=[
        dict(config=m['config'], checkpoint=m['checkpoint']) for m in members])
    cfg.model.student_init = members[0]['checkpoint']
    if STUDENTS[name] is not None:
        STUDENTS[name](cfg)
    path = osp.join(work, 'student_' + name.replace(' ', '_') + '.py')
    os.makedirs(work, exist_ok=True)
    cfg.dump(path)
    return path


def train_student(work: str, config: str, iters: int, checkpoints: int = 1,
                  seed: int = STUDENT_SEED) -> str:
    run_dir = osp.splitext(config)[0] + ('' if seed == STUDENT_SEED else f'_seed{seed}')
    final = osp.join(run_dir, f'iter_{iters}.pth')
    if osp.isfile(final):
        return final
    command = [sys.executable, 'tools/train.py', config, '--work-dir', run_dir,
               '--cfg-options', *schedule(iters), f'randomness.seed={seed}',
               f'default_hooks.checkpoint.interval={max(1, iters // checkpoints)}',
               f'default_hooks.checkpoint.max_keep_ckpts={checkpoints}']
    if osp.isfile(osp.join(run_dir, 'last_checkpoint')):
        command.append('--resume')
    _run(command)
    return final


def collapse_curve(config: str, iters: int, teacher, images: int = 20) -> dict:
    """The forum student's mean prediction and the fraction of its per-class
    values below 0.01 on the first val images, at each saved checkpoint;
    the teacher's per-class spread on the same images for reference."""
    from mmengine.dataset import pseudo_collate
    from mmseg_uncert.apis import init_uncertainty_model
    from mmseg_uncert.workflows.split_evaluation import build_split
    from mmseg_uncert.models.uncertainty import PredictiveStatistics
    dataset = build_split(MEMBER, split='val')
    batches = [pseudo_collate([dataset[i]]) for i in range(min(images, len(dataset)))]
    spread = []
    with torch.no_grad():
        for batch in batches:
            data = teacher.data_preprocessor(batch, False)
            stats = PredictiveStatistics()
            for prob in teacher.member_probabilities(data['inputs'], [
                    s.metainfo for s in data['data_samples']]):
                stats.add(prob)
            spread.append(stats.class_std().flatten())
    spread = torch.cat(spread)
    points = []
    run_dir = osp.splitext(config)[0]
    step = max(1, iters // FORUM_CHECKPOINTS)
    for k in range(1, FORUM_CHECKPOINTS + 1):
        ckpt = osp.join(run_dir, f'iter_{step * k}.pth')
        if not osp.isfile(ckpt):
            continue
        model = init_uncertainty_model(config, ckpt)
        values = []
        with torch.no_grad():
            for batch in batches:
                maps = model.test_step(batch)[0].pred_uncertainty
                values.append(torch.stack([maps.get(n) for n in maps.keys()]).flatten())
        v = torch.cat(values)
        points.append(dict(iteration=step * k, mean=v.mean().item(),
                           fraction_below_0_01=(v < 0.01).float().mean().item()))
    return dict(student=points, teacher=dict(
        mean=spread.mean().item(), fraction_below_0_01=(spread < 0.01).float().mean().item()))


def build_models(members: list[dict], students: dict[str, tuple[str, str]]) -> dict:
    from mmseg.registry import MODELS
    from mmseg_uncert.apis import init_uncertainty_model
    from mmseg_uncert.models.segmentors import build_member, mmseg_scope
    with mmseg_scope():
        models = {ENSEMBLE: MODELS.build(dict(type='EnsembleSegmentor', members=[
            dict(config=m['config'], checkpoint=m['checkpoint']) for m in members])).eval()}
        models[MEMBER_ROW] = build_member(dict(config=members[0]['config'],
                                               checkpoint=members[0]['checkpoint']),
                                          'member 0')[0].eval()
    for name, (config, ckpt) in students.items():
        # the deployment model: the student's parts alone, no teacher
        models[f'student {name}'] = init_uncertainty_model(config, ckpt)
    return models


def evaluate(models: dict, split: str, limit: int | None) -> tuple[dict, dict]:
    """Metrics of every model on ``split`` and their epistemic maps."""
    from mmseg_uncert.workflows.split_evaluation import build_split, evaluate_model
    dataset = build_split(MEMBER, split=split)
    metrics, maps = {}, {}
    for name, model in models.items():
        # the forum student's 19 per-class maps are judged by the collapse curve
        scores = ['max_prob', 'entropy'] if name == f'student {FORUM}' else None
        result = evaluate_model(model, dataset, scores, limit=limit, keep_maps=('epistemic', ),
                                log_interval=50, name=f'{name} on {split}')
        metrics[name] = result.metrics
        if 'epistemic' in result.maps:
            maps[name] = result.maps['epistemic']
    return metrics, maps


def recipe_spread(rows: dict, goals: dict, names: list[str]) -> dict | None:
    """Mean and standard deviation over the recipe student's seeds of its
    headline figures, and how many of its goals each seed met."""
    if len(names) < 2:
        return None
    import statistics
    figures = {
        'mIoU': [rows[n]['mIoU'] for n in names],
        'ECE': [rows[n]['ECE'] for n in names],
        'best misclassification AUROC': [rows[n]['best_misclassification'][1] for n in names],
        'best OOD AUROC': [rows[n]['best_ood'][1] for n in names],
        'epistemic OOD AUROC': [rows[n]['auroc']['ood']['epistemic'] for n in names],
        'epistemic Pearson with the ensemble': [
            rows[n]['epistemic_vs_ensemble']['pearson'] for n in names],
    }
    return dict(students=names, goals_met=[sum(g['met'] for g in goals[n]) for n in names],
                **{k: dict(mean=statistics.mean(v), std=statistics.stdev(v), values=v)
                   for k, v in figures.items()})


def resolution_ceiling(maps: torch.Tensor, height: int, width: int, stride: int = 8) -> float:
    """Pearson correlation of the ensemble's epistemic map with itself
    averaged over stride x stride cells and upsampled bilinearly: the best a
    student whose maps come out at 1/stride of the input could reach."""
    import torch.nn.functional as F
    full = maps.view(-1, 1, height, width).float()
    coarse = F.interpolate(F.avg_pool2d(full, stride), size=(height, width), mode='bilinear',
                           align_corners=False)
    return torch.corrcoef(torch.stack([coarse.flatten(), full.flatten()]))[0, 1].item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--iters', type=int, default=1000,
                        help='iterations of every member')
    parser.add_argument('--student-iters', type=int, default=500,
                        help='iterations of every student (from member 0)')
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'bench_distillation'))
    parser.add_argument('--limit', type=int, help='images per split (default all)')
    parser.add_argument('--students', default=','.join(STUDENTS),
                        help=f'comma-separated, of {list(STUDENTS)}')
    parser.add_argument('--recipe-seeds', default='',
                        help='comma-separated extra seeds of the recipe student '
                             f'(besides {STUDENT_SEED}), for its spread over seeds')
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results',
                                                  'distillation.json'))
    parser.add_argument('--tables', action='store_true',
                        help='print the markdown tables of the results file --out and stop')
    args = parser.parse_args()
    if args.tables:
        from mmseg_uncert.workflows.distillation_report import benchmark_tables
        with open(args.out) as f:
            print('\n'.join(benchmark_tables(json.load(f))))
        return
    import mmseg_uncert  # noqa: F401
    from mmseg_uncert.workflows.distillation_report import check_goals, summarise
    from mmseg_uncert.workflows.split_evaluation import build_split, map_correlations, time_test_steps
    torch.manual_seed(0)
    data_root = osp.join(ROOT, 'data', 'synthetic_streets')
    if not osp.isdir(osp.join(data_root, 'leftImg8bit', 'ood')):
        _run([sys.executable, 'tools/make_synthetic.py', '--out-dir', data_root,
              '--splits', 'train,val,ood', '--overwrite'])
    members = train_teachers(args.work_dir, args.iters)
    students = {}
    for name in args.students.split(','):
        if name not in STUDENTS:
            parser.error(f'unknown student {name!r}; choose from {list(STUDENTS)}')
        config = student_config(args.work_dir, name, members)
        checkpoints = FORUM_CHECKPOINTS if name == FORUM else 1
        iters = args.student_iters * SCHEDULE_FACTOR.get(name, 1)
        students[name] = (config, train_student(args.work_dir, config, iters, checkpoints))
        if name == RECIPE:
            for seed in (int(v) for v in args.recipe_seeds.split(',') if v):
                students[f'{name} (seed {seed})'] = (config, train_student(
                    args.work_dir, config, args.student_iters, seed=seed))
    models = build_models(members, students)
    val, val_maps = evaluate(models, 'val', args.limit)
    ood, ood_maps = evaluate(models, 'ood', args.limit)
    summaries = {name: summarise(name, val[name], ood[name]) for name in models}
    # speed from a separate pass, the models taking turns (see time_test_steps)
    seconds = time_test_steps(models, build_split(MEMBER, split='val'),
                              images=TIMING['images'], rounds=TIMING['rounds'])
    for name, summary in summaries.items():
        summary.seconds_per_image = seconds[name]
    reference = torch.cat([val_maps[ENSEMBLE], ood_maps[ENSEMBLE]])
    rows, goals = {}, {}
    for name, summary in summaries.items():
        row = dict(mIoU=summary.miou, ECE=summary.ece,
                   seconds_per_image=summary.seconds_per_image, auroc=summary.auroc,
                   best_misclassification=summary.best('misclassification'),
                   best_ood=summary.best('ood'))
        if name in val_maps and name != ENSEMBLE:
            row['epistemic_vs_ensemble'] = map_correlations(
                torch.cat([val_maps[name], ood_maps[name]]), reference)
        rows[name] = row
        if name.startswith('student'):
            pearson = row.get('epistemic_vs_ensemble', {}).get('pearson')
            goals[name] = [vars(g) for g in check_goals(
                summaries[ENSEMBLE], summaries[MEMBER_ROW], summary, pearson, MEMBERS)]
    # the recipe's seeds, not its other variants (e.g. the 2x schedule)
    spread = recipe_spread(rows, goals, [n for n in rows if n == f'student {RECIPE}'
                                         or n.startswith(f'student {RECIPE} (seed ')])
    collapse = (collapse_curve(students[FORUM][0], args.student_iters, models[ENSEMBLE])
                if FORUM in students else None)
    # every image of the benchmark is 256 x 512; Fast-SCNN's head predicts at 1/8
    ceiling = resolution_ceiling(reference, 256, 512, stride=8)
    result = dict(date=datetime.date.today().isoformat(), cores=os.cpu_count(),
                  torch_threads=torch.get_num_threads(), iters=args.iters,
                  student_iters=args.student_iters,
                  members=MEMBERS, member_options=BAGGING, timing=TIMING,
                  images_per_split=args.limit or 'all',
                  rows=rows, goals=goals, recipe_over_seeds=spread, forum_collapse=collapse,
                  epistemic_pearson_ceiling_at_stride_8=ceiling)
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2, default=float)
    print(json.dumps(result, indent=2, default=float))


if __name__ == '__main__':
    main()
