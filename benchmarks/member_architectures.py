"""Which mmseg architecture learns the embedded scenes within the demo's
budget on 2 CPU cores (goal: a member reaches val mIoU >= 75).

    python benchmarks/member_architectures.py [--iters 1000] [--jobs 2]

Each candidate is the member config
(``configs/fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py``:
data, 128x256 crops, batch 4, AdamW 2e-3, warm-up and poly decay) with
another model, trained from random initialisation by ``tools/train.py``
``--jobs`` at a time (one intra-op thread each, as ``tools/train_ensemble.py``
trains members), validated on all of val every quarter of the schedule.
Per candidate: val mIoU at each quarter, seconds per training iteration and
per val image (both while ``--jobs`` runs share the machine). Results: ``benchmarks/results/member_architectures.json``.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MEMBER = osp.join(ROOT, 'configs', 'fastscnn', 'fast-scnn_1xb4-1k_synthetic-128x256.py')
BN = dict(type='BN', requires_grad=True)
PLAIN_CE = dict(_delete_=True, type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)
#: candidate (also its run folder): the model overrides of the member config
CANDIDATES = {
    'fast-scnn_enet-class-weights': {},  # the recipe
    'fast-scnn_plain-ce': dict(decode_head=dict(loss_decode=PLAIN_CE)),
    'cgnet-m3n21_plain-ce': dict(
        backbone=dict(_delete_=True, type='CGNet', norm_cfg=dict(BN, eps=1e-3),
                      in_channels=3, num_channels=(32, 64, 128), num_blocks=(3, 21),
                      dilations=(2, 4), reductions=(8, 16)),
        decode_head=dict(_delete_=True, type='FCNHead', in_channels=256, in_index=2,
                         channels=256, num_convs=0, concat_input=False, dropout_ratio=0,
                         num_classes=19, norm_cfg=dict(BN, eps=1e-3), align_corners=False,
                         loss_decode=PLAIN_CE)),
    # the former member
    'mobilenet-v3-small-fcn_plain-ce': dict(
        backbone=dict(_delete_=True, type='MobileNetV3', arch='small', out_indices=(12, ),
                      norm_cfg=BN),
        decode_head=dict(_delete_=True, type='FCNHead', in_channels=576, in_index=0,
                         channels=64, num_convs=1, concat_input=False, dropout_ratio=0.1,
                         num_classes=19, norm_cfg=BN, align_corners=False,
                         loss_decode=PLAIN_CE)),
}


def candidate_config(work: str, name: str, iters: int) -> str:
    from mmengine.config import Config
    cfg = Config.fromfile(MEMBER)
    cfg.merge_from_dict(dict(model=CANDIDATES[name]))
    quarter = max(1, iters // 4)
    cfg.train_cfg.max_iters, cfg.train_cfg.val_interval = iters, quarter
    cfg.param_scheduler[1].end = iters
    cfg.default_hooks.checkpoint.interval = iters
    cfg.default_hooks.logger.interval = 50
    cfg.val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU'])]
    cfg.train_dataloader.num_workers = cfg.val_dataloader.num_workers = 1
    path = osp.join(work, name + '.py')
    cfg.dump(path)
    return path


def read_scalars(run_dir: str) -> dict:
    """mIoU per validation and the mean training time per iteration, from
    mmengine's ``vis_data/scalars.json``."""
    files = sorted(glob.glob(osp.join(run_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        raise FileNotFoundError(f'no vis_data/scalars.json under {run_dir}')
    miou, times, val_times = {}, [], []
    with open(files[-1]) as f:
        for line in f:
            entry = json.loads(line)
            if 'mIoU' in entry:
                miou[int(entry['step'])] = entry['mIoU']
                if 'time' in entry:
                    val_times.append(entry['time'])
            elif 'time' in entry and 'loss' in entry:
                times.append(entry['time'])
    return dict(miou=miou, seconds_per_iter=sum(times) / max(len(times), 1),
                seconds_per_val_image=val_times[-1] if val_times else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--iters', type=int, default=1000)
    parser.add_argument('--jobs', type=int, default=2)
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'bench_members'))
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results',
                                                  'member_architectures.json'))
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    pending = list(CANDIDATES)
    running: list[tuple[str, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            run_dir = osp.join(args.work_dir, name)
            if osp.isfile(osp.join(run_dir, f'iter_{args.iters}.pth')):
                continue
            config = candidate_config(args.work_dir, name, args.iters)
            log = open(run_dir + '.log', 'w')
            print(f'training {name} -> {run_dir}', flush=True)
            running.append((name, subprocess.Popen(
                [sys.executable, 'tools/train.py', config, '--work-dir', run_dir],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)))
        name, proc = running.pop(0)
        if proc.wait() != 0:
            raise SystemExit(f'{name} failed; see {osp.join(args.work_dir, name)}.log')
    results = {name: read_scalars(osp.join(args.work_dir, name)) for name in CANDIDATES}
    out = dict(date=datetime.date.today().isoformat(), cores=os.cpu_count(), iters=args.iters,
               jobs=args.jobs, threads_per_job=1, goal='val mIoU >= 75', candidates=results)
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(out, f, indent=2)
    print(json.dumps(out, indent=2))


if __name__ == '__main__':
    main()
