"""Fit post-hoc calibration of a trained segmentor on a held-out split.

    python tools/calibrate.py CONFIG CHECKPOINT --method temperature \\
        --split val --out-dir work_dirs/calibrated [--data-root DIR] [--limit N]
    python tools/test.py work_dirs/calibrated/calibrated.py none

``--method``: ``temperature`` (one T), ``vector`` (a scale and bias per
class) or ``local`` (a per-pixel temperature from the logits and the image).
The split is the config's test data set with ``leftImg8bit/<split>`` and
``gtFine/<split>`` (Cityscapes layout) under its data root, or
``--data-root``. CHECKPOINT is ``none`` for an ensemble or MC-dropout config
(its members name theirs). Prints ECE / NLL / Brier on the split before and
after, and writes ``calibrated.py`` (the config that applies it, for
``tools/test.py``), ``calibration.json`` and, for ``local``,
``calibrator.pth``. Fit on a split the model was not trained on and that
you will not report results on.
"""
from __future__ import annotations

import argparse

import mmseg_uncert  # noqa: F401  (registers the components)
from mmseg_uncert.workflows.post_hoc_calibration import METHODS, calibrate


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help="checkpoint, or 'none'")
    parser.add_argument('--method', required=True, choices=sorted(METHODS))
    parser.add_argument('--split', required=True,
                        help='the held-out split to fit on, e.g. val')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--data-root', help="replaces the config's data root")
    parser.add_argument('--limit', type=int, help='the first N images only')
    parser.add_argument('--epochs', type=int, default=10,
                        help='local temperature scaling: passes over the split')
    parser.add_argument('--device', default='cpu', help='e.g. cuda:0')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    checkpoint = None if args.checkpoint == 'none' else args.checkpoint
    result = calibrate(args.config, checkpoint, args.method, args.split, args.out_dir,
                       data_root=args.data_root, limit=args.limit, epochs=args.epochs,
                       device=args.device)
    print(f'\n| {args.split} | ECE | NLL | Brier |\n| --- | --- | --- | --- |')
    for name, metrics in (('before', result.before), ('after', result.after)):
        print(f"| {name} | {metrics['ECE']:.4f} | {metrics['NLL']:.4f} | "
              f"{metrics['Brier']:.4f} |")
    print(f'\nfitted: {result.fit}\nconfig: {result.config_path}\n'
          f'test it: python tools/test.py {result.config_path} none')


if __name__ == '__main__':
    main()
