"""The main job on the embedded benchmark: generate data -> train -> test.

    python tools/demo.py             # full run (work_dirs/demo)
    python tools/demo.py --quick     # a few minutes: small data, short schedule

Resumable: finished steps are skipped, an interrupted training run resumes
from its last checkpoint. Every step runs this package's tools, so what the
demo does is what a user's commands do.
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time

from mmseg_uncert.datasets.synthetic_streets import DEFAULT_COUNTS

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'demo'))
    parser.add_argument('--data-root', default=osp.join('data', 'synthetic_streets'))
    parser.add_argument('--quick', action='store_true',
                        help='small data set (80 train images) and 200 '
                        'iterations')
    return parser.parse_args()


def run_step(k: int, n: int, title: str, cmd: list[str], log: str,
             start: float) -> None:
    elapsed = time.time() - start
    print(f'\n=== step {k} of {n}: {title}  (elapsed {elapsed:.0f} s) ===',
          flush=True)
    print('$ ' + ' '.join(cmd), flush=True)
    with open(log, 'a') as log_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        for line in proc.stdout:
            sys.stdout.write(line)
            log_file.write(line)
        if proc.wait() != 0:
            sys.exit(f'demo: step {k} of {n} ({title}) failed with exit code '
                     f'{proc.returncode}; its log is {log}. Fix the cause and '
                     f'rerun: finished steps are skipped.')


def main() -> None:
    args = parse_args()
    work_dir = osp.abspath(args.work_dir)
    data_root = osp.abspath(args.data_root)
    os.makedirs(work_dir, exist_ok=True)
    counts = (dict(train=80, val=20, ood=20, shift_train=40, shift_val=20)
              if args.quick else DEFAULT_COUNTS)
    iters = 200 if args.quick else 2000
    start = time.time()
    py = sys.executable
    steps = 3

    count_args = [arg for split, n in counts.items()
                  for arg in (f'--{split.replace("_", "-")}', str(n))]
    data_stamp = osp.join(data_root, '.complete-' + '-'.join(
        str(n) for n in counts.values()))
    if osp.exists(data_stamp):
        print(f'=== step 1 of {steps}: data in {data_root} exists, skipped ===')
    else:
        run_step(1, steps, 'generate the synthetic benchmark',
                 [py, 'tools/make_synthetic.py', '--out-dir', data_root,
                  *count_args, '--overwrite'],
                 osp.join(work_dir, 'generate.log'), start)
        open(data_stamp, 'w').close()

    train_dir = osp.join(work_dir, 'train')
    ckpt = osp.join(train_dir, f'iter_{iters}.pth')
    interval = max(iters // 4, 1)
    options = [f'train_dataloader.dataset.data_root={data_root}',
               f'val_dataloader.dataset.data_root={data_root}',
               f'test_dataloader.dataset.data_root={data_root}',
               f'train_cfg.max_iters={iters}',
               f'train_cfg.val_interval={iters}',
               f'default_hooks.checkpoint.interval={interval}',
               f'param_scheduler.1.end={iters}']
    if osp.exists(ckpt):
        print(f'=== step 2 of {steps}: {ckpt} exists, training skipped ===')
    else:
        run_step(2, steps, f'train the segmentor ({iters} iterations)',
                 [py, 'tools/train.py', CONFIG, '--work-dir', train_dir,
                  '--resume', '--cfg-options', *options],
                 osp.join(work_dir, 'train.log'), start)

    test_dir = osp.join(work_dir, 'test')
    run_step(3, steps, 'test on val',
             [py, 'tools/test.py', CONFIG, ckpt, '--work-dir', test_dir,
              '--out', osp.join(test_dir, 'pred'), '--cfg-options', *options],
             osp.join(work_dir, 'test.log'), start)
    # mmengine writes <work_dir>/<timestamp>/<timestamp>.json
    results = sorted(f for f in glob.glob(osp.join(test_dir, '*', '*.json'))
                     if osp.basename(f)[:-5] == osp.basename(osp.dirname(f)))
    metrics = json.load(open(results[-1]))
    print(f'\ndemo finished in {time.time() - start:.0f} s: val mIoU '
          f"{metrics['mIoU']:.2f}, aAcc {metrics['aAcc']:.2f} "
          f'(results: {results[-1]}; predictions: {test_dir}/pred)')


if __name__ == '__main__':
    main()
