"""ProDA's ablation on the embedded benchmark, over several seeds: source =
``train`` scenes, target = ``shift_train`` (fog, night, colour cast, blur;
its labels unused), evaluated on ``shift_val`` (and on the source ``val``, to
see what the source domain keeps).

    python benchmarks/domain_adaptation.py                       # everything
    python benchmarks/domain_adaptation.py --seeds 1 --threads 1 # one seed, 1 core

The network and warm-up are the main job's member recipe
(``configs/fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py``: Fast-SCNN, 1000
iterations from random initialisation, without the demo's bagging), trained
once per seed. Rows of the chain, each starting from the seed's warm-up
weights but the last:

1. source only (the warm-up model);
2. + self-training: symmetric cross-entropy on the warm-up model's confident
   pseudo-labels (probability ≥ 0.9), plus the regulariser;
3. + prototypical denoising: the pseudo-labels rectified by the prototypes,
   where their (rectified) confidence is ≥ 0.9;
4. + structure learning: row 3 plus the KL between weak and strong views'
   prototype assignments (``CHAIN_STRUCTURE``);
5. + distillation: a student taught on its confident target pixels by the
   stage-1 model the config keeps (``DISTILL_FROM``), from its weights.

Beside the chain: ProDA's denoising of every pixel; the CBST baseline
(class-balanced thresholds instead of row 2's 0.9); structure learning in
each form of ``VARIANTS`` (the assignment temperature, L2-normalised
features, the strong view's strength, the KL only where the weak view is
confident, a warm-up of γ₁) on top of the every-pixel denoising; and the
distillation of the earlier recipe's stage 1 (``DISTILL_ALSO``).

Each training is skipped when its final checkpoint exists and each
evaluation when its result is stored beside the checkpoint, so the script
resumes, and several invocations (other ``--seeds``) can share the cores
and one ``--work-dir`` (default ``work_dirs/bench_uda``). Seconds per
iteration: each kind of stage trains ``--timing-iters`` more iterations
alone on the machine at the end (median of mmengine's logged ``time``; the
per-seed figures were logged while other trainings may have shared the
cores). Results go to
``benchmarks/results/domain_adaptation.json``: per seed, and mean ± std
(sample std, n − 1) over the seeds given.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
WARMUP = 'configs/fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py'
PRODA = 'configs/proda/proda_fast-scnn_1xb4-0.3k_synthetic-to-shift-128x256.py'
DISTILL = ('configs/proda/'
           'proda-distill_fast-scnn_1xb4-0.3k_synthetic-to-shift-128x256.py')
SELF_TRAINING = dict(rectify=False, structure_weight=0.0, confidence_threshold=0.9)
#: ProDA's rule: every pixel's rectified pseudo-label
DENOISING_EVERY_PIXEL = dict(rectify=True, structure_weight=0.0, confidence_threshold=0.0)
#: the chain's: rectified pseudo-labels where their confidence is >= 0.9,
#: the pixels self-training keeps
DENOISING = dict(rectify=True, structure_weight=0.0, confidence_threshold=0.9)
#: stage-1 rows: name -> (work dir, ProDASegmentor switches over the config's;
#: each sets every switch the config sets, so a change there changes no row)
STAGE1 = {
    '+ self-training': ('self_training', SELF_TRAINING),
    '+ prototypical denoising': ('prototypical_denoising_confident', DENOISING),
    'prototypical denoising on every pixel (ProDA)':
        ('prototypical_denoising', DENOISING_EVERY_PIXEL),
    'self-training, CBST thresholds (p = 0.5)':
        ('self_training__CBST_thresholds__p___0_5',
         dict(rectify=False, structure_weight=0.0, confidence_threshold=0.0,
              class_balanced_portion=0.5)),
}
#: structure learning in each form measured, on top of ProDA's denoising on
#: every pixel (switches over DENOISING_EVERY_PIXEL)
VARIANTS = {
    'γ₁ = 1, τ = 1, Euclidean (the earlier recipe)':
        dict(structure_weight=1.0),
    'τ_s = 10': dict(structure_weight=1.0, structure_temperature=10.0),
    'τ_s = 0.1, L2-normalised features':
        dict(structure_weight=1.0, structure_temperature=0.1, structure_distance='cosine'),
    'strong view at half strength': dict(structure_weight=1.0, strong_strength=0.5),
    'KL only where confidence ≥ 0.9':
        dict(structure_weight=1.0, structure_confidence=0.9),
    # the first half of the 300-iteration stage
    'γ₁ ramped up over the first half': dict(structure_weight=1.0,
                                             structure_warmup_iters=150),
}
#: row 4 of the chain: this variant on top of the chain's denoising (chosen
#: as the one that counts the KL on the pixels the pseudo-labels train)
CHAIN_STRUCTURE = 'KL only where confidence ≥ 0.9'
#: the stage-1 model the config keeps, which teaches the distillation row
#: (structure learning helped in no form: the config leaves it off)
DISTILL_FROM = '+ prototypical denoising'
#: also distilled, for comparison: the earlier recipe's stage 1
DISTILL_ALSO = 'structure learning: γ₁ = 1, τ = 1, Euclidean (the earlier recipe)'


def _run(command: list[str], threads: int) -> None:
    print('$', ' '.join(command), flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    subprocess.run(command, check=True, cwd=ROOT, env=env)


def _write_config(base: str, path: str, updates: dict, hooks: list | None) -> None:
    """``base`` with ``updates`` merged (dotted keys) and, if given, its
    ``custom_hooks`` replaced, written to ``path`` by mmengine."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, base))
    cfg.merge_from_dict(updates)
    if hooks is not None:
        cfg.custom_hooks = hooks
    cfg.dump(path)


def train(base: str, work: str, iters: int, updates: dict, threads: int,
          hooks: list | None = None) -> str:
    """Train ``base`` with ``updates`` for ``iters`` iterations in ``work``
    (resumed if interrupted); the final checkpoint."""
    final = osp.join(work, f'iter_{iters}.pth')
    if osp.isfile(final):
        return final
    os.makedirs(work, exist_ok=True)
    config = osp.join(work, 'config.py')
    _write_config(base, config, {
        'train_cfg.max_iters': iters, 'train_cfg.val_interval': iters + 1,
        'val_cfg': None, 'val_dataloader': None, 'val_evaluator': None,
        'default_hooks.checkpoint.interval': max(1, iters // 4),
        'default_hooks.logger.interval': 10, **updates}, hooks)
    command = [sys.executable, 'tools/train.py', config, '--work-dir', work]
    if osp.isfile(osp.join(work, 'last_checkpoint')):
        command.append('--resume')
    _run(command, threads)
    return final


def seconds_per_iteration(work: str) -> float | None:
    """Median of the iteration times mmengine logged in ``work`` (all runs,
    the first logged window of each left out: it holds the start-up)."""
    times = []
    for path in glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json')):
        with open(path) as f:
            values = [json.loads(line).get('time') for line in f if line.strip()]
        times += [v for v in values if v is not None][1:]
    return round(statistics.median(times), 3) if times else None


def _dataset(split: str):
    from mmengine.config import Config

    from mmseg.registry import DATASETS
    from mmseg_uncert.models.segmentors import mmseg_scope
    ds = Config.fromfile(osp.join(ROOT, WARMUP)).test_dataloader.dataset
    ds.data_prefix = dict(img_path=f'leftImg8bit/{split}', seg_map_path=f'gtFine/{split}')
    with mmseg_scope():
        return DATASETS.build(ds)


def evaluate(checkpoint: str, split: str, limit: int | None) -> dict:
    """mIoU and ECE of the plain segmentor with ``checkpoint`` on ``split``,
    stored beside the checkpoint and read back from there next time."""
    stored = f'{checkpoint}.{split}.{limit or "all"}.json'
    if osp.isfile(stored):
        with open(stored) as f:
            return json.load(f)
    from mmengine.dataset import pseudo_collate
    from mmengine.evaluator import Evaluator

    from mmseg_uncert.models.segmentors import build_member, mmseg_scope
    model, _ = build_member(dict(config=osp.join(ROOT, WARMUP), checkpoint=checkpoint),
                            'evaluated model')
    dataset = _dataset(split)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    with mmseg_scope():
        evaluator = Evaluator([dict(type='IoUMetric', iou_metrics=['mIoU']),
                               dict(type='UncertaintyMetric', scores=['max_prob'])])
    evaluator.dataset_meta = dataset.metainfo
    for i in range(n):
        batch = pseudo_collate([dataset[i]])
        with torch.no_grad():
            evaluator.process(data_samples=model.test_step(batch), data_batch=batch)
    metrics = evaluator.evaluate(n)
    result = dict(mIoU=float(metrics['mIoU']), ECE=float(metrics['ECE']))
    with open(stored, 'w') as f:
        json.dump(result, f)
    return result


def run_seed(seed: int, args, variants: bool) -> dict:
    """Every row for one seed: {row: {checkpoint, work}}."""
    work = osp.join(args.work_dir, f'seed_{seed}')
    warmup = osp.abspath(train(WARMUP, osp.join(work, 'warmup'), args.warmup_iters,
                               {'randomness.seed': seed}, args.threads))
    rows = {'source only (warm-up)': dict(checkpoint=warmup,
                                          work=osp.join(work, 'warmup'))}
    common = {'load_from': warmup, 'model.pseudo_labeller.checkpoint': warmup,
              'randomness.seed': seed, 'model.view_seed': seed,
              'param_scheduler.0.end': args.iters}
    stage1 = {row: (osp.join(work, name), switches)
              for row, (name, switches) in STAGE1.items()}
    stage1['+ structure learning'] = (
        osp.join(work, 'structure_learning_on_confident_denoising'),
        dict(DENOISING, **VARIANTS[CHAIN_STRUCTURE]))
    for name, switches in VARIANTS.items():
        row = f'structure learning: {name}'
        if variants or row == DISTILL_ALSO:
            stage1[row] = (osp.join(work, _slug(row)), dict(DENOISING_EVERY_PIXEL, **switches))
    for row, (row_work, switches) in stage1.items():
        hooks = ([dict(type='ClassBalancedThresholdHook', init_batches=25)]
                 if 'class_balanced_portion' in switches else None)
        rows[row] = dict(checkpoint=train(PRODA, row_work, args.iters,
                                          dict(common, **_model(switches)),
                                          args.threads, hooks), work=row_work)
    for row, teacher_row in (('+ distillation', DISTILL_FROM),
                             (f'distillation from {DISTILL_ALSO}', DISTILL_ALSO)):
        teacher = osp.abspath(rows[teacher_row]['checkpoint'])
        distill_work = osp.join(work, 'distillation_from_' + osp.basename(
            osp.dirname(teacher)))
        rows[row] = dict(checkpoint=train(
            DISTILL, distill_work, args.iters,
            {'load_from': teacher, 'model.teacher.checkpoint': teacher,
             'randomness.seed': seed, 'param_scheduler.0.end': args.iters},
            args.threads), work=distill_work)
    return rows


def time_stages(args) -> dict:
    """Seconds per iteration of each kind of stage, measured alone: each
    trains ``--timing-iters`` iterations from seed 0's checkpoints with
    ``--timing-threads`` threads (median of the logged windows but the
    first)."""
    work = osp.join(args.work_dir, 'timing')
    seed0 = osp.join(args.work_dir, 'seed_0')
    warmup = osp.join(seed0, 'warmup', f'iter_{args.warmup_iters}.pth')
    teacher = osp.join(seed0, STAGE1[DISTILL_FROM][0], f'iter_{args.iters}.pth')
    n = args.timing_iters
    common = {'load_from': warmup, 'model.pseudo_labeller.checkpoint': warmup,
              'param_scheduler.0.end': n}
    runs = {
        'source only (warm-up)': (WARMUP, {}, None),
        '+ self-training': (PRODA, dict(common, **_model(SELF_TRAINING)), None),
        'self-training, CBST thresholds': (
            PRODA, dict(common, **_model(STAGE1['self-training, CBST thresholds (p = 0.5)'][1])),
            [dict(type='ClassBalancedThresholdHook', init_batches=25)]),
        '+ prototypical denoising': (PRODA, dict(common, **_model(DENOISING)), None),
        '+ structure learning': (PRODA, dict(common, **_model(
            dict(DENOISING, **VARIANTS[CHAIN_STRUCTURE]))), None),
        '+ distillation': (DISTILL, {'load_from': teacher, 'model.teacher.checkpoint': teacher,
                                     'param_scheduler.0.end': n}, None),
    }
    times = {}
    for row, (config, updates, hooks) in runs.items():
        row_work = osp.join(work, _slug(row))
        train(config, row_work, n, updates, args.timing_threads, hooks)
        times[row] = seconds_per_iteration(row_work)
        print('timing', row, times[row], flush=True)
    return times


def _slug(row: str) -> str:
    return ''.join(c if c.isalnum() else '_' for c in row.strip('+ ')).strip('_')


def _model(switches: dict) -> dict:
    return {f'model.{k}': v for k, v in switches.items()}


def _mean_std(values: list[float]) -> dict:
    return dict(mean=statistics.mean(values),
                std=statistics.stdev(values) if len(values) > 1 else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--variant-seeds', type=int, nargs='*', default=None,
                        help='seeds that also run the structure-learning variants '
                             '(default: all of --seeds)')
    parser.add_argument('--warmup-iters', type=int, default=1000)
    parser.add_argument('--iters', type=int, default=300, help='iterations per stage')
    parser.add_argument('--threads', type=int, default=2,
                        help='intra-op threads of each training (1 to run two '
                             'invocations side by side on 2 cores)')
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'bench_uda'))
    parser.add_argument('--limit', type=int, help='images per split (default all)')
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results',
                                                  'domain_adaptation.json'))
    parser.add_argument('--timing-iters', type=int, default=40,
                        help='iterations of each timing run (0: no timing runs)')
    parser.add_argument('--timing-threads', type=int, default=2)
    parser.add_argument('--no-report', action='store_true',
                        help='train and evaluate only; leave the results file alone')
    args = parser.parse_args()
    variant_seeds = args.seeds if args.variant_seeds is None else args.variant_seeds
    args.work_dir = osp.abspath(args.work_dir)
    import mmseg_uncert  # noqa: F401
    if not osp.isdir(osp.join(ROOT, 'data', 'synthetic_streets', 'leftImg8bit', 'shift_val')):
        # every split, the ones already there included (same seed, same files)
        _run([sys.executable, 'tools/make_synthetic.py', '--out-dir',
              'data/synthetic_streets', '--overwrite'], args.threads)
    start = time.time()
    torch.set_num_threads(args.threads)
    per_seed = {}
    for seed in args.seeds:
        rows = run_seed(seed, args, seed in variant_seeds)
        results = {}
        for row, info in rows.items():
            target = evaluate(info['checkpoint'], 'shift_val', args.limit)
            results[row] = dict(target_mIoU=target['mIoU'], target_ECE=target['ECE'],
                                s_per_iter=seconds_per_iteration(info['work']))
            if not row.startswith('structure learning:'):
                results[row]['source_mIoU'] = evaluate(info['checkpoint'], 'val',
                                                       args.limit)['mIoU']
            print(seed, row, results[row], flush=True)
        per_seed[seed] = results
    if args.no_report:
        return
    timing = time_stages(args) if args.timing_iters else {}
    summary = {}
    for row in per_seed[args.seeds[0]]:
        seeds = [s for s in args.seeds if row in per_seed[s]]
        summary[row] = dict(seeds=seeds, **{
            key: _mean_std([per_seed[s][row][key] for s in seeds])
            for key in ('target_mIoU', 'target_ECE', 'source_mIoU', 's_per_iter')
            if all(per_seed[s][row].get(key) is not None for s in seeds)})
    result = dict(date=datetime.date.today().isoformat(), cores=os.cpu_count(),
                  warmup=WARMUP, warmup_iters=args.warmup_iters, stage1=PRODA,
                  distillation=DISTILL, iters_per_stage=args.iters,
                  images_per_split=args.limit,
                  minutes_this_invocation=round((time.time() - start) / 60, 1),
                  seconds_per_iteration=dict(
                      threads=args.timing_threads, iterations=args.timing_iters,
                      note='each stage alone on the machine; the per-seed s_per_iter '
                           'were logged while other trainings shared the cores',
                      **timing),
                  summary=summary, per_seed=per_seed)
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2, ensure_ascii=False)
    print(json.dumps(summary, indent=2, ensure_ascii=False))


if __name__ == '__main__':
    main()
