"""Generate the synthetic street-scene benchmark in the Cityscapes layout.

    python tools/make_synthetic.py --out-dir data/synthetic_streets
    python tools/make_synthetic.py --out-dir data/tiny --splits train,val \
        --train 16 --val 4 --height 64 --width 128 --seed 3

Splits: train, val, ood (objects never seen in training), shift_train and
shift_val (fog, night, colour cast, blur). Any Cityscapes config runs on the
result by pointing ``data_root`` at it; the file formats are described in
mmseg_uncert/datasets/synthetic_streets.py.
"""
import argparse
import os
import os.path as osp
import shutil
import sys
import time

from mmengine.utils import ProgressBar

from mmseg_uncert.datasets.synthetic_streets import (DEFAULT_COUNTS, SPLITS,
                                                     SceneSpec, generate)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out-dir', default='data/synthetic_streets',
                        help='data root to write (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0,
                        help='same seed, byte-identical files')
    parser.add_argument('--splits', default=','.join(SPLITS),
                        help='comma-separated splits (default: %(default)s)')
    for split, n in DEFAULT_COUNTS.items():
        parser.add_argument(f'--{split.replace("_", "-")}', type=int, default=n,
                            dest=split, help=f'images in {split} (default: {n})')
    defaults = SceneSpec()
    parser.add_argument('--height', type=int, default=defaults.height)
    parser.add_argument('--width', type=int, default=defaults.width)
    parser.add_argument('--boundary-jitter', type=int,
                        default=defaults.boundary_jitter,
                        help='largest label-boundary offset in pixels '
                        '(default: %(default)s)')
    parser.add_argument('--workers', type=int, default=None,
                        help='processes (default: all cores)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace the images and labels of an existing '
                        'data set in --out-dir')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    splits = [s.strip() for s in args.splits.split(',') if s.strip()]
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        sys.exit(f'error: --splits: unknown split(s) {unknown or args.splits!r}; '
                 f'choose from {", ".join(SPLITS)}')
    counts = {s: getattr(args, s) for s in splits}
    for split, n in counts.items():
        if n < 0:
            sys.exit(f'error: --{split.replace("_", "-")} must be >= 0, got {n}')
    if args.workers is not None and args.workers < 1:
        sys.exit(f'error: --workers must be >= 1, got {args.workers}')
    try:
        spec = SceneSpec(args.height, args.width, args.boundary_jitter)
    except ValueError as err:
        sys.exit(f'error: --height/--width/--boundary-jitter: {err}')
    if osp.isdir(args.out_dir) and os.listdir(args.out_dir):
        if not args.overwrite:
            sys.exit(f'error: {args.out_dir} exists and is not empty; pass '
                     f'--overwrite to replace its images and labels, or '
                     f'choose another --out-dir')
        for sub in ('leftImg8bit', 'gtFine'):
            shutil.rmtree(osp.join(args.out_dir, sub), ignore_errors=True)
    total = sum(counts.values())
    start = time.time()
    bar = ProgressBar(total)
    generate(args.out_dir, counts, seed=args.seed, spec=spec,
             workers=args.workers, progress=lambda done, _: bar.update())
    print(f'\nwrote {total} images ({", ".join(f"{s}: {n}" for s, n in counts.items())}) '
          f'to {args.out_dir} in {time.time() - start:.1f} s')


if __name__ == '__main__':
    main()
