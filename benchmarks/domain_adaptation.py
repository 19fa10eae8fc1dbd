"""ProDA's ablation on the embedded benchmark: source = ``train`` scenes,
target = ``shift_train`` (fog, night, colour cast, blur; its labels unused),
evaluated on ``shift_val`` (and on the source ``val``, to see what the source
domain keeps).

    python benchmarks/domain_adaptation.py                     # all steps
    python benchmarks/domain_adaptation.py --iters 300         # shorter stages

Rows, each starting from the warm-up (source-only) weights but the last:

1. source only (the warm-up model);
2. + self-training: symmetric cross-entropy on the warm-up model's
   confident pseudo-labels (argmax of its soft prediction where its
   probability is at least 0.9), plus the regulariser;
3. + prototypical denoising: every pseudo-label, rectified by the prototypes;
4. + structure learning: KL between weak and strong views' prototype
   assignments (the full stage 1);
5. + distillation: a student (from row 4's weights) taught by row 4 on its
   confident target pixels.

Each step is skipped when its checkpoint exists (the run resumes); all under
``--work-dir`` (default ``work_dirs/bench_uda``). Results go to
``benchmarks/results/domain_adaptation.json``.
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
WARMUP = 'configs/fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py'
PRODA = 'configs/proda_fcn_mobilenet-v3-s_1xb4-1k_synthetic-to-shift-128x256.py'
DISTILL = 'configs/proda-distill_fcn_mobilenet-v3-s_1xb4-1k_synthetic-to-shift-128x256.py'
#: row name -> ProDASegmentor switches
STAGE1 = {
    '+ self-training': dict(rectify=False, structure_weight=0.0,
                            confidence_threshold=0.9),
    '+ prototypical denoising': dict(rectify=True, structure_weight=0.0),
    # the recipe's structure weight (1; ProDA's 10 cost 4 mIoU here)
    '+ structure learning': dict(rectify=True),
}


def _run(command: list[str]) -> None:
    print('$', ' '.join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def _train(config: str, work: str, iters: int, options: list[str]) -> str:
    final = osp.join(work, f'iter_{iters}.pth')
    if osp.isfile(final):
        return final
    command = [sys.executable, 'tools/train.py', config, '--work-dir', work,
               '--cfg-options', f'train_cfg.max_iters={iters}',
               f'train_cfg.val_interval={iters}',
               f'default_hooks.checkpoint.interval={iters}', *options]
    if osp.isfile(osp.join(work, 'last_checkpoint')):
        command.append('--resume')
    _run(command)
    return final


def _dataset(split: str):
    from mmengine.config import Config

    from mmseg.registry import DATASETS
    from mmseg_uncert.models.segmentors import mmseg_scope
    ds = Config.fromfile(osp.join(ROOT, WARMUP)).test_dataloader.dataset
    ds.data_prefix = dict(img_path=f'leftImg8bit/{split}', seg_map_path=f'gtFine/{split}')
    with mmseg_scope():
        return DATASETS.build(ds)


def evaluate(checkpoint: str, split: str, limit: int | None) -> dict:
    """mIoU and ECE of the plain segmentor with ``checkpoint`` on ``split``."""
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
    return dict(mIoU=metrics['mIoU'], ECE=metrics['ECE'])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--warmup-iters', type=int, default=600)
    parser.add_argument('--iters', type=int, default=300, help='iterations per stage')
    parser.add_argument('--warmup-checkpoint',
                        help='an existing source-only checkpoint of '
                             f'{WARMUP} (skips training the warm-up)')
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'bench_uda'))
    parser.add_argument('--limit', type=int, help='images per split (default all)')
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results',
                                                  'domain_adaptation.json'))
    args = parser.parse_args()
    import mmseg_uncert  # noqa: F401
    if not osp.isdir(osp.join(ROOT, 'data', 'synthetic_streets', 'leftImg8bit', 'shift_val')):
        # every split, the ones already there included (same seed, same files)
        _run([sys.executable, 'tools/make_synthetic.py', '--out-dir',
              'data/synthetic_streets', '--overwrite'])
    start = time.time()
    warmup = args.warmup_checkpoint or _train(
        WARMUP, osp.join(args.work_dir, 'warmup'), args.warmup_iters, [])
    warmup = osp.abspath(warmup)
    checkpoints = {'source only (warm-up)': warmup}
    common = [f'load_from={warmup}', f'model.pseudo_labeller.checkpoint={warmup}',
              f'param_scheduler.0.end={args.iters}']
    for row, switches in STAGE1.items():
        name = row[2:].replace(' ', '_').replace('-', '_')
        options = common + [f'model.{k}={v}' for k, v in switches.items()]
        checkpoints[row] = _train(PRODA, osp.join(args.work_dir, name), args.iters, options)
    teacher = osp.abspath(checkpoints['+ structure learning'])
    checkpoints['+ distillation'] = _train(
        DISTILL, osp.join(args.work_dir, 'distillation'), args.iters,
        [f'load_from={teacher}', f'model.teacher.checkpoint={teacher}',
         f'param_scheduler.0.end={args.iters}'])
    rows = {}
    for row, checkpoint in checkpoints.items():
        target = evaluate(checkpoint, 'shift_val', args.limit)
        source = evaluate(checkpoint, 'val', args.limit)
        rows[row] = dict(target_mIoU=float(target['mIoU']), target_ECE=target['ECE'],
                         source_mIoU=float(source['mIoU']))
        print(row, rows[row], flush=True)
    result = dict(date=datetime.date.today().isoformat(), cores=os.cpu_count(),
                  warmup_iters=None if args.warmup_checkpoint else args.warmup_iters,
                  iters_per_stage=args.iters, images_per_split=args.limit,
                  minutes=round((time.time() - start) / 60, 1), rows=rows)
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2, default=float)
    print(json.dumps(result, indent=2))


if __name__ == '__main__':
    main()
