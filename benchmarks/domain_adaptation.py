"""ProDA's ablation on the embedded benchmark, over several seeds: source =
``train`` scenes, target = ``shift_train`` (fog, night, colour cast, blur;
its labels unused in training but by the oracle row), evaluated on
``shift_val`` (and on the source ``val``, to see what the source domain
keeps). The recipe's choices were made on ``shift_val``; as a check on
images they were not made on, every row is also scored on the first
``--check-images`` ``shift_train`` images with their labels (the oracle's
training images: its figure there is not a target score).

    python benchmarks/domain_adaptation.py                       # everything
    python benchmarks/domain_adaptation.py --seeds 1 --threads 1 # one seed, 1 core

The network and warm-up are the main job's member recipe
(``configs/fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py``: Fast-SCNN, 1000
iterations from random initialisation, without the demo's bagging), trained
once per seed. The chain, each row one part or stage more than the row
before it, each stage ``--iters`` iterations with ProDA's recipe
(``configs/proda/``; rates as half-lives of 1/10 and 1/4 of the stage):

1. source only (the warm-up model);
2. + self-training: symmetric cross-entropy on the warm-up model's confident
   pseudo-labels (probability ≥ 0.9) of the weak view, learnt on the strong
   view (RandAugment's geometric operations and a cut-out; labels carried),
   plus the regulariser;
3. + prototypical denoising: every pixel's pseudo-label rectified by the
   prototypes (ProDA's rule);
4. + structure learning: row 3 plus γ₁ = 10 times the KL between the weak
   and strong views' prototype assignments, averaged over pixels and
   classes: ProDA's stage 1 (but for the view SCE learns on and the
   source loss's class weights);
5. + distillation: a student from row 4's weights taught, on the strong
   view, by row 4's flip-averaged prediction where it is ≥ 0.95 confident;
6. + a second distillation: the same, row 5 teaching a student from its
   weights (ProDA's stage 3);
7. + a third distillation: once more, row 6 the teacher (beyond ProDA).

Rows 2 to 4 each start from the warm-up weights (each is stage 1 with one
part more); rows 5 to 7 from their teacher's, and learn with plain
cross-entropy (ProDA's; stage 1's source loss keeps the class weights).
Beside the chain: a fourth distillation; self-training on the weak view
(ProDA's view for SCE); CBST (class-balanced thresholds instead of row 2's
0.9); stage 1 with ProDA's source loss (no class weights) and its two
distillations; three distillations that each differ from row 5 in one
point: the student starting from the warm-up weights (ProDA's student is a
network other than its teacher), the class-weighted cross-entropy, ProDA's
SGD (its rates as they are: 6e-4, the head at 10×); and the target oracle,
the warm-up recipe trained on ``shift_train`` with its labels, for the
table only. For each row, the share of the source-only → oracle gap it
closes, (row − source only) / (oracle − source only), per seed. Every row
keeps its final checkpoint: none is chosen with target labels.

For the rows with prototypes, the last logged movement: the share of its
starting weights left in the momentum network, the mean share of the
initial prototypes left, their mean relative drift, and the share of
pixels the rectification changed.

Each training is skipped when its final checkpoint exists and each
evaluation when its result is stored beside the checkpoint, so the script
resumes, and several invocations (other ``--seeds``) can share the cores
and one ``--work-dir`` (default ``work_dirs/bench_uda``). Seconds per
iteration: each kind of stage trains ``--timing-iters`` more iterations
alone on the machine at the end (median of mmengine's logged ``time``; the
per-seed figures were logged while other trainings may have shared the
cores). Stages of ``--iters`` iterations are trained in
``seed_N/<iters>_iters/``. Results go to
``benchmarks/results/domain_adaptation.json`` (with another ``--iters``:
``domain_adaptation_<iters>_iters.json``): per seed, and mean ± std (sample
std, n − 1) over the seeds given.
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
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
WARMUP = 'configs/fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py'
PRODA = 'configs/proda/proda_fast-scnn_1xb4-0.3k_synthetic-to-shift-128x256.py'
DISTILL = ('configs/proda/'
           'proda-distill_fast-scnn_1xb4-0.3k_synthetic-to-shift-128x256.py')
#: each sets every switch the config sets, so a change there changes no row
SELF_TRAINING = dict(rectify=False, structure_weight=0.0, confidence_threshold=0.9,
                     pseudo_label_view='strong', strong_geometric=True)
DENOISING = dict(SELF_TRAINING, rectify=True, confidence_threshold=0.0)
STRUCTURE = dict(DENOISING, structure_weight=10.0)
#: ProDA's cross-entropy, without class weights
PLAIN_CE = {'model.decode_head.loss_decode': dict(
    _delete_=True, type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)}
STAGE1_PLAIN_CE = 'stage 1, the source loss without class weights (ProDA)'
SOURCE_ONLY = 'source only (warm-up)'
ORACLE = 'target oracle (shift_train labels)'
#: stage-1 rows: name -> (work dir, settings of the config's model)
STAGE1 = {
    '+ self-training': ('self_training_strong_view', SELF_TRAINING),
    '+ prototypical denoising': ('denoising_strong_view', DENOISING),
    '+ structure learning (ProDA stage 1)': ('structure_strong_view', STRUCTURE),
    'self-training on the weak view (ProDA)': (
        'self_training', dict(SELF_TRAINING, pseudo_label_view='weak')),
    'self-training, CBST thresholds (p = 0.5)': (
        'cbst_strong_view', dict(SELF_TRAINING, confidence_threshold=0.0,
                                 class_balanced_portion=0.5)),
    STAGE1_PLAIN_CE: ('structure_plain_ce', dict(STRUCTURE, **{
        'decode_head.loss_decode': PLAIN_CE['model.decode_head.loss_decode']})),
}
#: the stage-1 model the distillation rows learn from: the full stage 1
DISTILL_FROM = '+ structure learning (ProDA stage 1)'
DISTILLATION = '+ distillation'
SECOND_DISTILLATION = '+ a second distillation (ProDA stage 3)'
THIRD_DISTILLATION = '+ a third distillation (beyond ProDA)'
DISTILLATION_FROM_WARMUP = 'distillation, the student from the warm-up weights'
#: the stage-1 config's source loss, with its class weights
CLASS_WEIGHTED_CE = {'model.decode_head.loss_decode': dict(
    _delete_=True,
    **Config.fromfile(osp.join(ROOT, PRODA)).model.decode_head.loss_decode.to_dict())}
#: ProDA's distillation optimiser, its rates as they are (stage 2's command:
#: SGD at 6e-4 with momentum 0.9 and weight decay 2e-4, the head at 10x)
PRODA_SGD = {'optim_wrapper.optimizer': dict(
                 _delete_=True, type='SGD', lr=6e-4, momentum=0.9, weight_decay=2e-4),
             'optim_wrapper.paramwise_cfg': dict(
                 custom_keys={'decode_head': dict(lr_mult=10.0)})}
#: distillation rows: name -> (work dir, teacher row, the row whose weights
#: the student starts from, config updates); a row's teacher comes before it
DISTILL_ROWS = {
    DISTILLATION: ('distillation', DISTILL_FROM, DISTILL_FROM, {}),
    SECOND_DISTILLATION: ('second_distillation', DISTILLATION, DISTILLATION, {}),
    THIRD_DISTILLATION: ('third_distillation', SECOND_DISTILLATION,
                         SECOND_DISTILLATION, {}),
    'a fourth distillation (beyond ProDA)': ('fourth_distillation', THIRD_DISTILLATION,
                                             THIRD_DISTILLATION, {}),
    DISTILLATION_FROM_WARMUP: ('distillation_from_warmup', DISTILL_FROM,
                               SOURCE_ONLY, {}),
    'distillation, class-weighted cross-entropy': (
        'distillation_class_weighted', DISTILL_FROM, DISTILL_FROM, CLASS_WEIGHTED_CE),
    "distillation, ProDA's SGD (6e-4, the head at 10×)": (
        'distillation_proda_sgd', DISTILL_FROM, DISTILL_FROM, PRODA_SGD),
    f'{STAGE1_PLAIN_CE}, + distillation': (
        's1plain_distillation', STAGE1_PLAIN_CE, STAGE1_PLAIN_CE, {}),
    f'{STAGE1_PLAIN_CE}, + a second distillation': (
        's1plain_second_distillation', f'{STAGE1_PLAIN_CE}, + distillation',
        f'{STAGE1_PLAIN_CE}, + distillation', {}),
}
#: the chain, each row one stage more than the one before, in table order
CHAIN = (SOURCE_ONLY, '+ self-training', '+ prototypical denoising', DISTILL_FROM,
         DISTILLATION, SECOND_DISTILLATION, THIRD_DISTILLATION)
#: the prototype hook's half-lives as shares of the stage's iterations
MOMENTUM_HALF_LIFE = 1 / 10
PROTOTYPE_HALF_LIFE = 1 / 4
#: the last logged value of each, for the rows with prototypes
MOVEMENT = ('momentum_start_share', 'prototype_start_share', 'prototype_drift',
            'target.rectified')


def _run(command: list[str], threads: int) -> None:
    print('$', ' '.join(command), flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    subprocess.run(command, check=True, cwd=ROOT, env=env)


def _write_config(base: str, path: str, updates: dict, hooks: list | None) -> None:
    """``base`` with ``updates`` merged (dotted keys) and, if given, its
    ``custom_hooks`` replaced, written to ``path`` by mmengine."""
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


def last_logged(work: str, keys: tuple[str, ...]) -> dict:
    """The last value mmengine logged in ``work`` of each of ``keys`` that
    it logged at all."""
    found = {}
    for path in sorted(glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    found.update({k: record[k] for k in keys if k in record})
    return found


def _dataset(split: str):
    from mmseg.registry import DATASETS
    from mmseg_uncert.models.segmentors import mmseg_scope
    ds = Config.fromfile(osp.join(ROOT, WARMUP)).test_dataloader.dataset
    ds.data_prefix = dict(img_path=f'leftImg8bit/{split}',
                          seg_map_path=f'gtFine/{split}')
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


def _hooks(switches: dict, iters: int) -> list:
    """The stage's custom hooks: the prototype hook with half-lives relative
    to ``iters``, and CBST's thresholds where the row needs them."""
    hooks = [dict(type='PrototypeHook', momentum_half_life=iters * MOMENTUM_HALF_LIFE,
                  prototype_half_life=iters * PROTOTYPE_HALF_LIFE, min_pixels=10,
                  init_batches=25)]
    if 'class_balanced_portion' in switches:
        hooks.append(dict(type='ClassBalancedThresholdHook', init_batches=25))
    return hooks


def stage_dir(work_dir: str, seed: int, iters: int) -> str:
    """Where one seed's stages of ``iters`` iterations are trained (its
    warm-up and oracle are one level up, shared by every stage length)."""
    return osp.join(work_dir, f'seed_{seed}', f'{iters}_iters')


def run_seed(seed: int, args) -> dict:
    """Every row for one seed: {row: {checkpoint, work}}, the chain first."""
    work = osp.join(args.work_dir, f'seed_{seed}')
    stages = stage_dir(args.work_dir, seed, args.iters)
    warmup = osp.abspath(train(WARMUP, osp.join(work, 'warmup'), args.warmup_iters,
                               {'randomness.seed': seed}, args.threads))
    rows = {SOURCE_ONLY: dict(checkpoint=warmup, work=osp.join(work, 'warmup'))}
    common = {'load_from': warmup, 'model.pseudo_labeller.checkpoint': warmup,
              'randomness.seed': seed, 'model.view_seed': seed,
              'param_scheduler.0.end': args.iters}
    for row, (name, switches) in STAGE1.items():
        row_work = osp.join(stages, name)
        rows[row] = dict(checkpoint=train(PRODA, row_work, args.iters,
                                          dict(common, **_model(switches)),
                                          args.threads, _hooks(switches, args.iters)),
                         work=row_work)
    for row, (name, teacher, start, updates) in DISTILL_ROWS.items():
        row_work = osp.join(stages, name)
        rows[row] = dict(checkpoint=train(
            DISTILL, row_work, args.iters,
            {'load_from': osp.abspath(rows[start]['checkpoint']),
             'model.teacher.model.checkpoint': osp.abspath(rows[teacher]['checkpoint']),
             'randomness.seed': seed, 'model.view_seed': seed,
             'param_scheduler.0.end': args.iters, **updates},
            args.threads), work=row_work)
    oracle_work = osp.join(work, 'oracle')
    rows[ORACLE] = dict(checkpoint=train(
        WARMUP, oracle_work, args.warmup_iters,
        {'randomness.seed': seed, 'train_dataloader.dataset.data_prefix': dict(
            img_path='leftImg8bit/shift_train', seg_map_path='gtFine/shift_train')},
        args.threads), work=oracle_work)
    chain = [row for row in CHAIN if row in rows]
    return {row: rows[row] for row in chain + [r for r in rows if r not in chain]}


def time_stages(args) -> dict:
    """Seconds per iteration of each kind of stage, measured alone: each
    trains ``--timing-iters`` iterations from seed 0's checkpoints with
    ``--timing-threads`` threads (median of the logged windows but the
    first)."""
    work = osp.join(args.work_dir, 'timing')
    seed0 = osp.join(args.work_dir, 'seed_0')
    warmup = osp.join(seed0, 'warmup', f'iter_{args.warmup_iters}.pth')
    teacher = osp.join(stage_dir(args.work_dir, 0, args.iters), STAGE1[DISTILL_FROM][0],
                       f'iter_{args.iters}.pth')
    n = args.timing_iters
    common = {'load_from': warmup, 'model.pseudo_labeller.checkpoint': warmup,
              'param_scheduler.0.end': n}
    runs = {SOURCE_ONLY: (WARMUP, {}, None)}
    for row, (_, switches) in STAGE1.items():
        runs[row] = (PRODA, dict(common, **_model(switches)), _hooks(switches, n))
    runs[DISTILLATION] = (DISTILL, {'load_from': teacher,
                                    'model.teacher.model.checkpoint': teacher,
                                    'param_scheduler.0.end': n}, None)
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
    parser.add_argument('--warmup-iters', type=int, default=1000)
    parser.add_argument('--iters', type=int, default=300, help='iterations per stage')
    parser.add_argument('--threads', type=int, default=2,
                        help='intra-op threads of each training (1 to run two '
                             'invocations side by side on 2 cores)')
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'bench_uda'))
    parser.add_argument('--limit', type=int, help='images per split (default all)')
    parser.add_argument('--check-images', type=int, default=200,
                        help='shift_train images each row is also scored on')
    parser.add_argument('--out', help='results file (default benchmarks/results/'
                                      'domain_adaptation.json; with another --iters, '
                                      'domain_adaptation_<iters>_iters.json)')
    parser.add_argument('--timing-iters', type=int, default=40,
                        help='iterations of each timing run (0: no timing runs)')
    parser.add_argument('--timing-threads', type=int, default=2)
    parser.add_argument('--no-report', action='store_true',
                        help='train and evaluate only; leave the results file alone')
    args = parser.parse_args()
    args.work_dir = osp.abspath(args.work_dir)
    if args.out is None:
        suffix = '' if args.iters == 300 else f'_{args.iters}_iters'
        args.out = osp.join(ROOT, 'benchmarks', 'results',
                            f'domain_adaptation{suffix}.json')
    import mmseg_uncert  # noqa: F401
    if not osp.isdir(osp.join(ROOT, 'data', 'synthetic_streets', 'leftImg8bit',
                              'shift_val')):
        # every split, the ones already there included (same seed, same files)
        _run([sys.executable, 'tools/make_synthetic.py', '--out-dir',
              'data/synthetic_streets', '--overwrite'], args.threads)
    start = time.time()
    torch.set_num_threads(args.threads)
    per_seed = {}
    for seed in args.seeds:
        rows = run_seed(seed, args)
        results = {}
        for row, info in rows.items():
            target = evaluate(info['checkpoint'], 'shift_val', args.limit)
            results[row] = dict(target_mIoU=target['mIoU'], target_ECE=target['ECE'],
                                source_mIoU=evaluate(info['checkpoint'], 'val',
                                                     args.limit)['mIoU'],
                                target_train_mIoU=evaluate(
                                    info['checkpoint'], 'shift_train',
                                    args.check_images)['mIoU'],
                                s_per_iter=seconds_per_iteration(info['work']),
                                **last_logged(info['work'], MOVEMENT))
        source = results[SOURCE_ONLY]['target_mIoU']
        oracle = results[ORACLE]['target_mIoU']
        for row, result in results.items():
            result['gap_closed'] = (result['target_mIoU'] - source) / (oracle - source)
            print(seed, row, result, flush=True)
        per_seed[seed] = results
    if args.no_report:
        return
    timing = time_stages(args) if args.timing_iters else {}
    summary = {}
    for row in per_seed[args.seeds[0]]:
        keys = [k for k in per_seed[args.seeds[0]][row]
                if all(per_seed[s][row].get(k) is not None for s in args.seeds)]
        summary[row] = dict(seeds=args.seeds, **{
            key: _mean_std([per_seed[s][row][key] for s in args.seeds])
            for key in keys})
    result = dict(date=datetime.date.today().isoformat(), cores=os.cpu_count(),
                  warmup=WARMUP, warmup_iters=args.warmup_iters, stage1=PRODA,
                  distillation=DISTILL, iters_per_stage=args.iters,
                  momentum_half_life=args.iters * MOMENTUM_HALF_LIFE,
                  prototype_half_life=args.iters * PROTOTYPE_HALF_LIFE,
                  images_per_split=args.limit, shift_train_images=args.check_images,
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
