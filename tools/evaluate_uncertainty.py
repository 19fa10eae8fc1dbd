"""Evaluate one or more models on one split, side by side, with timings and
the correlation of their uncertainty maps with a reference model's.

    python tools/evaluate_uncertainty.py --out-dir DIR \\
        --model ensemble work_dirs/ens/ensemble.py \\
        --model student configs/distill/....py work_dirs/student/iter_2000.pth \\
        [--split val] [--data-root DIR] [--limit N] \\
        [--reference ensemble] [--save-maps std] [--reference-maps FILE.npz] \\
        [--time 20 [--time-only]]

Every model (``--model NAME CONFIG [CHECKPOINT]``; a distillation or ProDA
config is evaluated as the network it trains, an ensemble config needs no
checkpoint) runs image by image on the test dataset of the first model's
config (``--split`` and ``--data-root`` replace its images and labels in the
Cityscapes layout). For each model this writes, under ``DIR/NAME/``:

* ``metrics.json``: mIoU, calibration (ECE, MCE, aECE, NLL, Brier),
  misclassification, OOD and aleatoric-region detection per score (every
  ``pred_uncertainty`` map the model gives, plus max_prob and entropy), and
  ``seconds_per_image`` (the forward pass alone);
* ``reliability_diagram.png/.json`` and ``risk_coverage_<score>.png/.json``;
* with ``--save-maps S``: ``maps.npz``, its per-pixel ``S`` maps (float16);

and ``DIR/metrics.json`` with the metrics of every model evaluated into DIR
(this run's replace earlier ones of the same name). With ``--reference NAME``
(a model of this run) or ``--reference-maps FILE`` (saved by an earlier run on
the same images), each model's ``--correlate`` map (default ``std``) gets its
Pearson and Spearman correlation with the reference's, and the fraction of its
pixels below 0.01 (a collapsed uncertainty head predicts ~0 everywhere).

``seconds_per_image`` in ``metrics.json`` is measured while the model is
evaluated, one model after the other, so each carries whatever else the
machine did meanwhile (the metrics' own work included). To compare models'
speed, ``--time N`` times every model's ``test_step`` on the first N images
(at most ``--limit``),
the models taking turns, median of 3 rounds
(:func:`mmseg_uncert.workflows.split_evaluation.time_test_steps`), into
``DIR/timing.json``; ``--time-only`` skips the metrics. On the CPU the timing
keeps freed memory in the process, as training's ``CompatRunner`` does:
otherwise each large tensor of a step is mapped fresh and faulted in again,
which charges a model for its allocations rather than its work
(``benchmarks/student_cost.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp

import torch

import mmseg_uncert  # noqa: F401  (registers the components)
from mmseg_uncert.apis import init_uncertainty_model
from mmseg_uncert.engine.cpu_memory import keep_freed_memory
from mmseg_uncert.workflows.split_evaluation import (build_split, evaluate_model, load_maps,
                                          map_correlations, save_maps, time_test_steps)

#: rounds of --time; the median counts
TIMING_ROUNDS = 3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', nargs='+', action='append', required=True,
                        metavar='NAME CONFIG [CHECKPOINT]',
                        help='a model to evaluate (repeat for several)')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--split', help='e.g. val or ood: leftImg8bit/<split> '
                        'and gtFine/<split> under the data root')
    parser.add_argument('--data-root', help='replaces the config\'s data root')
    parser.add_argument('--limit', type=int, help='the first N images only')
    parser.add_argument('--save-maps', nargs='+', default=[], metavar='SCORE',
                        help='keep these per-pixel maps in DIR/NAME/maps.npz')
    parser.add_argument('--reference', metavar='NAME',
                        help='correlate the other models\' maps with this one\'s')
    parser.add_argument('--reference-maps', metavar='FILE',
                        help='correlate with maps saved by --save-maps')
    parser.add_argument('--correlate', default='std', metavar='SCORE',
                        help='the map to correlate (default std)')
    parser.add_argument('--time', type=int, default=0, metavar='N',
                        help='time every model on the first N images, taking turns '
                             '(DIR/timing.json)')
    parser.add_argument('--time-only', action='store_true',
                        help='with --time: time the models, compute no metrics')
    args = parser.parse_args()
    if args.time < 0:
        parser.error(f'--time takes a number of images (>= 1; 0 times nothing), '
                     f'got {args.time}')
    if args.time_only and not args.time:
        parser.error('--time-only needs --time N (the images to time)')
    if args.time_only and (args.save_maps or args.reference or args.reference_maps):
        parser.error('--time-only computes no metrics: it cannot save maps or correlate '
                     'them (drop --save-maps / --reference / --reference-maps, or --time-only)')
    names = []
    for spec in args.model:
        if len(spec) not in (2, 3):
            parser.error(f'--model takes NAME CONFIG [CHECKPOINT], got {spec}')
        if not osp.isfile(spec[1]):
            parser.error(f'model {spec[0]}: config {spec[1]} does not exist')
        if len(spec) == 3 and not osp.isfile(spec[2]):
            parser.error(f'model {spec[0]}: checkpoint {spec[2]} does not exist')
        names.append(spec[0])
    if len(set(names)) != len(names):
        parser.error(f'model names must differ, got {names}')
    if args.reference and args.reference not in names:
        parser.error(f'--reference {args.reference} is not a --model name ({names})')
    if args.reference and args.reference_maps:
        parser.error('give --reference or --reference-maps, not both')
    return args


def time_models(args: argparse.Namespace, dataset) -> None:
    """DIR/timing.json: every model's seconds per image, the models built
    together and taking turns."""
    if not torch.cuda.is_available():
        keep_freed_memory()
    models = {name: init_uncertainty_model(config, checkpoint[0] if checkpoint else None)
              for name, config, *checkpoint in args.model}
    # the evaluated images, no more: --limit bounds the timing too
    images = min(args.time, args.limit or len(dataset), len(dataset))
    seconds = time_test_steps(models, dataset, images=images, rounds=TIMING_ROUNDS)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(osp.join(args.out_dir, 'timing.json'), 'w') as f:
        json.dump(dict(seconds_per_image=seconds, images=images, rounds=TIMING_ROUNDS,
                       threads=torch.get_num_threads(),
                       freed_memory_kept=not torch.cuda.is_available()), f, indent=2)
    print('seconds per image (test_step, models taking turns, median of '
          f'{TIMING_ROUNDS} rounds): '
          + ', '.join(f'{name} {v:.3f}' for name, v in seconds.items()), flush=True)


def main() -> None:
    args = parse_args()
    dataset = build_split(args.model[0][1], args.data_root, args.split)
    if args.time_only:
        time_models(args, dataset)
        return
    correlating = bool(args.reference or args.reference_maps)
    wanted = tuple(sorted({*args.save_maps, *([args.correlate] if correlating else [])}))
    results, maps, img_paths = {}, {}, None
    for name, config, *checkpoint in args.model:
        model = init_uncertainty_model(config, checkpoint[0] if checkpoint else None)
        out_dir = osp.join(args.out_dir, name)
        os.makedirs(out_dir, exist_ok=True)
        evaluation = evaluate_model(model, dataset, limit=args.limit, output_dir=out_dir,
                                    keep_maps=wanted, log_interval=50, name=name)
        del model
        for absent in sorted(set(args.save_maps) - set(evaluation.maps)):
            print(f'model {name} gives no {absent!r} map (it gives '
                  f'{evaluation.scores}): nothing to save', flush=True)
        if set(args.save_maps) & set(evaluation.maps):
            save_maps(osp.join(out_dir, 'maps.npz'), evaluation)
        results[name], maps[name] = evaluation.metrics, evaluation.maps
        img_paths = evaluation.img_paths
        print(f'{name}: ' + ', '.join(
            f'{k} {results[name][k]:.4f}' for k in
            ('mIoU', 'ECE', 'seconds_per_image') if k in results[name]), flush=True)
    if correlating:
        reference = (maps[args.reference].get(args.correlate) if args.reference
                     else load_maps(args.reference_maps, args.correlate, img_paths))
        if reference is None:
            raise SystemExit(f'the reference {args.reference} gives no '
                             f'{args.correlate!r} map')
        for name, metrics in results.items():
            ours = maps[name].get(args.correlate)
            if ours is None or name == args.reference:
                continue
            stats = map_correlations(ours, reference)
            metrics.update({f'{k}/{args.correlate}': v for k, v in stats.items()})
            print(f'{name}: {args.correlate} vs the reference: Pearson '
                  f'{stats["pearson"]:.3f}, Spearman {stats["spearman"]:.3f}',
                  flush=True)
    for name, metrics in results.items():
        with open(osp.join(args.out_dir, name, 'metrics.json'), 'w') as f:
            json.dump(metrics, f, indent=2)
    # DIR/metrics.json gathers every model evaluated into DIR, run after run
    gathered = osp.join(args.out_dir, 'metrics.json')
    everything = {}
    if osp.isfile(gathered):
        with open(gathered) as f:
            everything = json.load(f)
    everything.update(results)
    with open(gathered, 'w') as f:
        json.dump(everything, f, indent=2)
    print(f'metrics of {list(results)} written to {args.out_dir}')
    if args.time:
        time_models(args, dataset)


if __name__ == '__main__':
    torch.set_grad_enabled(False)
    main()
