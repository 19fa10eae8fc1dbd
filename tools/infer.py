"""Predictions and uncertainty maps of images, a folder or a video.

    python tools/infer.py CONFIG CHECKPOINT INPUT --out-dir DIR
        [--vis] [--device cpu|cuda] [--batch-size N]

INPUT is an image file, a folder (its images, recursively) or a video (its
frames, named ``<video stem>_<frame index:06d>``). For each image named
``<name>`` (its file's stem; for a folder's images the path inside the folder
without extension) DIR gets ``pred/<name>_pred.png`` (class index per pixel),
``pred/<name>_<map>.npy`` (each uncertainty map, float32, at the image's
size) and, with ``--vis``, ``vis/<name>.png`` (the config's visualizer's
picture: image, prediction and maps). CHECKPOINT may be ``none`` for an
ensemble or MC-dropout config (its members name their checkpoints); a
distillation or ProDA config runs its student alone. See
mmseg_uncert.apis.UncertaintyInferencer.
"""
from __future__ import annotations

import argparse

import torch

import mmseg_uncert  # noqa: F401  (registers the components)
from mmseg_uncert.apis.infer_files import infer_files
from mmseg_uncert.apis.inference_inputs import InferenceInputError


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help="checkpoint, or 'none'")
    parser.add_argument('input', help='an image, a folder of images or a video')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--vis', action='store_true',
                        help='also write the visualizer\'s picture of each image')
    parser.add_argument('--device', choices=['cpu', 'cuda'],
                        help='default: cuda where available')
    parser.add_argument('--batch-size', type=int, default=1)
    args = parser.parse_args()
    if args.batch_size < 1:
        parser.error(f'--batch-size {args.batch_size}: give at least 1')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is available here')
    return args


def main() -> None:
    args = parse_args()
    checkpoint = None if args.checkpoint == 'none' else args.checkpoint
    try:
        done = infer_files(args.config, checkpoint, args.input, args.out_dir,
                           vis=args.vis, device=args.device,
                           batch_size=args.batch_size)
    except (FileNotFoundError, InferenceInputError) as error:
        raise SystemExit(f'tools/infer.py: {error}') from error
    print(f'\n{done} images written to {args.out_dir}')


if __name__ == '__main__':
    main()
