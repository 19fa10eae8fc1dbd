"""Train a segmentor: mmseg's tools/train.py plus this package's fixes.

Same flags as mmseg's script. Differences: the package is imported (its
components are registered and checkpoints load on torch >= 2.6 without
``weights_only=False``), ``--launcher pytorch`` also works on CPU-only
machines (gloo), and ``--amp`` without a GPU stops with a clear message.
Plain mmseg configs work unchanged.
"""
import argparse
import logging
import os

from mmengine.config import Config, DictAction
from mmengine.device import get_device
from mmengine.logging import print_log
from mmengine.runner import find_latest_checkpoint

import mmseg_uncert  # noqa: F401  (registers components, checkpoint allow-list)
from mmseg_uncert.engine import build_runner, load_run_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', action='store_true', default=False,
        help='resume from the latest checkpoint in the work_dir automatically')
    parser.add_argument(
        '--amp', action='store_true', default=False,
        help='enable automatic-mixed-precision training (needs a GPU)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings in the config, as key=value pairs, e.g. '
        'train_cfg.max_iters=100 or key="[a,b]"; no white space allowed')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def enable_amp(cfg: Config) -> None:
    if get_device() == 'cpu':
        raise SystemExit('--amp needs a GPU (or NPU/MLU): mmengine\'s '
                         'AmpOptimWrapper does not run on CPU. Drop --amp here.')
    optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if optim_wrapper == 'AmpOptimWrapper':
        print_log('AMP training is already enabled in your config.',
                  logger='current', level=logging.WARNING)
        return
    if optim_wrapper != 'OptimWrapper':
        raise SystemExit(f'--amp works with optim_wrapper.type=OptimWrapper, '
                         f'but the config has {optim_wrapper}.')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'


def resume_from_work_dir(cfg: Config) -> None:
    """``--resume`` with ``load_from`` set (a run that starts from other
    weights, e.g. domain adaptation from its warm-up model): mmengine would
    resume from ``load_from``, which holds weights only. Resume from the work
    dir's latest checkpoint instead, or, when there is none yet, start from
    ``load_from`` as a fresh run."""
    latest = find_latest_checkpoint(cfg.work_dir)
    if latest:
        print_log(f'--resume: resuming from {latest}, not from load_from '
                  f'({cfg.load_from}), which only initialised the run',
                  logger='current')
        cfg.load_from = None
    else:
        print_log(f'--resume: no checkpoint in {cfg.work_dir} yet; starting '
                  f'from load_from ({cfg.load_from})', logger='current')
        cfg.resume = False


def main() -> None:
    args = parse_args()
    cfg = load_run_config(args.config, args.launcher, args.cfg_options,
                          args.work_dir)
    if args.amp:
        enable_amp(cfg)
    cfg.resume = args.resume
    if args.resume and cfg.get('load_from'):
        resume_from_work_dir(cfg)
    runner = build_runner(cfg)
    runner.train()


if __name__ == '__main__':
    main()
