"""Test (and evaluate) a segmentor: mmseg's tools/test.py plus fixes.

Same flags as mmseg's script. Differences: ``test_evaluator`` may be a list
of metrics (``--out`` is given to every metric that takes an ``output_dir``;
mmseg's script breaks on a list), ``--launcher pytorch`` works on CPU-only
machines, and the package's components and checkpoint allow-list are loaded.
"""
import argparse
import inspect
import os
import os.path as osp

from mmengine.config import Config, ConfigDict, DictAction

import mmseg_uncert  # noqa: F401  (registers components, checkpoint allow-list)
from mmseg.registry import METRICS, MODELS
from mmseg_uncert.engine import build_runner, load_run_config
from mmseg_uncert.visualization import plot_metric_curves


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='MMSeg test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        'checkpoint', nargs='?', default=None,
        help='checkpoint file; left out (or \'none\', e.g. for '
        'tools/dist_test.sh) for a model whose parts carry their own weights '
        '(EnsembleSegmentor, MCDropoutSegmentor)')
    parser.add_argument(
        '--work-dir',
        help='directory where the evaluation results are dumped as json')
    parser.add_argument(
        '--out', type=str,
        help='directory to save the predictions (and every metric\'s '
        'files) for offline evaluation')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images of every test image are saved '
        '(a relative path is taken inside --work-dir)')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings in the config, as key=value pairs')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none', help='job launcher')
    parser.add_argument(
        '--tta', action='store_true', help='test time augmentation')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if args.checkpoint == 'none':
        args.checkpoint = None
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def trigger_visualization_hook(cfg: Config, args: argparse.Namespace) -> None:
    hooks = cfg.default_hooks
    if 'visualization' not in hooks:
        raise RuntimeError(
            '--show/--show-dir need a VisualizationHook in default_hooks: add '
            "visualization=dict(type='SegVisualizationHook') to the config")
    hooks['visualization']['draw'] = True
    # mmseg's hook draws every 50th batch by default; asked for pictures, a
    # user wants every image unless the config chose an interval.
    hooks['visualization'].setdefault('interval', 1)
    if args.show:
        hooks['visualization']['show'] = True
        hooks['visualization']['wait_time'] = args.wait_time
    if args.show_dir:
        cfg.visualizer['save_dir'] = osp.join(cfg.work_dir, args.show_dir)


def _accepts(metric_type: str, arg: str) -> bool:
    metric_cls = METRICS.get(metric_type)
    if metric_cls is None:
        raise KeyError(f'test_evaluator: metric type {metric_type!r} is not '
                       f'registered in the {METRICS.scope}::metric registry')
    return arg in inspect.signature(metric_cls.__init__).parameters


def set_output_dir(evaluator: ConfigDict | list, out: str) -> None:
    """Give ``--out`` to every metric in ``test_evaluator`` that takes it."""
    metrics = evaluator if isinstance(evaluator, list) else [evaluator]
    for metric in metrics:
        if _accepts(metric['type'], 'output_dir'):
            metric['output_dir'] = out
        if _accepts(metric['type'], 'keep_results'):
            metric['keep_results'] = True


def main() -> None:
    args = parse_args()
    cfg = load_run_config(args.config, args.launcher, args.cfg_options,
                          args.work_dir)
    if args.checkpoint is None:
        model_cls = MODELS.get(cfg.model.get('type', ''))
        if not getattr(model_cls, 'carries_weights', False):
            raise SystemExit(
                f"tools/test.py: give a checkpoint for {cfg.model.get('type')} "
                f"(only models whose parts carry their own weights, such as "
                f"EnsembleSegmentor and MCDropoutSegmentor, are tested "
                f"without one)")
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        trigger_visualization_hook(cfg, args)
    if args.tta:
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    if args.out is not None:
        set_output_dir(cfg.test_evaluator, args.out)

    runner = build_runner(cfg)
    runner.test()
    if args.out is not None:
        plot_metric_curves(args.out)  # the uncertainty metric's curves, drawn


if __name__ == '__main__':
    main()
