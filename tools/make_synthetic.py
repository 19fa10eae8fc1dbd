"""Generate the synthetic street-scene benchmark in the Cityscapes layout.

    python tools/make_synthetic.py --out-dir data/synthetic_streets
    python tools/make_synthetic.py --out-dir data/tiny --train 16 --val 4 \
        --height 64 --width 128 --seed 3

Any Cityscapes config runs on the result by pointing ``data_root`` at it.
"""
import argparse
import os
import os.path as osp
import shutil
import sys

from mmengine.utils import ProgressBar

from mmseg_uncert.datasets.synthetic_streets import SceneSize, generate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out-dir', default='data/synthetic_streets',
                        help='data root to write (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0,
                        help='same seed, byte-identical files')
    parser.add_argument('--height', type=int, default=256)
    parser.add_argument('--width', type=int, default=512)
    parser.add_argument('--train', type=int, default=1000,
                        help='number of train images')
    parser.add_argument('--val', type=int, default=200,
                        help='number of val images')
    parser.add_argument('--workers', type=int, default=None,
                        help='processes (default: all cores)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace the images and labels of an existing '
                        'data set in --out-dir')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    counts = {'train': args.train, 'val': args.val}
    for name, value in [*counts.items(), ('height', args.height),
                        ('width', args.width)]:
        if value < 0:
            sys.exit(f'error: --{name} must be >= 0, got {value}')
    try:
        size = SceneSize(args.height, args.width)
    except ValueError as err:
        sys.exit(f'error: --height/--width: {err}')
    if osp.isdir(args.out_dir) and os.listdir(args.out_dir):
        if not args.overwrite:
            sys.exit(f'error: {args.out_dir} exists and is not empty; pass '
                     f'--overwrite to replace its images and labels, or '
                     f'choose another --out-dir')
        for sub in ('leftImg8bit', 'gtFine'):
            shutil.rmtree(osp.join(args.out_dir, sub), ignore_errors=True)
    total = sum(counts.values())
    bar = ProgressBar(total)
    generate(args.out_dir, counts, seed=args.seed, size=size,
             workers=args.workers, progress=lambda done, _: bar.update())
    print(f'\nwrote {total} images to {args.out_dir}')


if __name__ == '__main__':
    main()
