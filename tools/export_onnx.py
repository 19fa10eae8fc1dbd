"""Export a deployed segmentor (e.g. a distilled student) as one ONNX graph.

    python tools/export_onnx.py CONFIG CHECKPOINT --out student.onnx [--verify]

The graph takes a float32 (N, 3, H, W) image of 0..255 pixels in BGR order
(``--channel-order rgb`` for RGB; ``--normalized-input`` for the already
normalised batch) and returns ``seg_logits`` (N, C, H, W) and one (N, H, W)
output per uncertainty map of the model's head (e.g. ``epistemic``,
``aleatoric``). N, H and W are dynamic unless ``--static-size``. Ensembles
and MC dropout are refused: distil them into a student first. See
docs/deploy_onnx.md.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

from mmengine.config import DictAction

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from mmseg_uncert.apis.onnx_export import (CHANNEL_ORDERS,  # noqa: E402
                                           UnsupportedModelError,
                                           export_onnx_from_config, verify_onnx)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='the training or inference config')
    parser.add_argument('checkpoint', help='the .pth checkpoint (a distillation '
                        'checkpoint is fine: the student is kept)')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, default=[256, 512],
                        metavar=('H', 'W'), help='example image size the graph is '
                        'traced with (and fixed to with --static-size)')
    parser.add_argument('--opset', type=int, help='ONNX opset (default: the '
                        'exporter\'s recommended one)')
    parser.add_argument('--static-size', action='store_true',
                        help='fix H and W to --shape (the batch stays dynamic)')
    parser.add_argument('--normalized-input', action='store_true',
                        help='leave the data preprocessor\'s normalisation out of '
                        'the graph: its input is then the normalised batch')
    parser.add_argument('--channel-order', choices=CHANNEL_ORDERS, default='bgr',
                        help='channel order of the graph\'s 0..255 input (default '
                        'bgr, as cv2.imread and mmseg\'s pipeline load images)')
    parser.add_argument('--verify', action='store_true',
                        help='compare onnxruntime with PyTorch on random images at '
                        '--shape (and at an odd other size when H, W are dynamic)')
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='largest difference --verify accepts')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config keys, as tools/test.py does, e.g. '
                        'model.decode_head.derived_names="()" '
                        'model.decode_head.regress_derived=False (a DualHead student '
                        'trained with regress_derived outputs its regressed '
                        'aleatoric map: no full-resolution entropy)')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shape = tuple(args.shape)
    try:
        model, written = export_onnx_from_config(
            args.config, args.checkpoint, args.out, shape=shape, opset=args.opset,
            normalize_in_graph=not args.normalized_input,
            input_channel_order=args.channel_order, dynamic_size=not args.static_size,
            cfg_options=args.cfg_options)
    except (OSError, UnsupportedModelError, ValueError) as error:
        # bad input: the message names the file or model and the fix
        print(f'export_onnx: {error}', file=sys.stderr)
        return 2
    print(f'wrote {written.path}')
    print(f'  input  {written.input_name}: (N, 3, H, W) float32')
    for name in written.output_names:
        print(f'  output {name}: {tuple(written.output_shapes[name])}')
    if not args.verify:
        return 0
    shapes = [shape] if args.static_size else [shape, (shape[0] + 17, shape[1] + 31)]
    worst = 0.0
    for batch, size in zip((2, 1), shapes):
        diffs = verify_onnx(model, written.path, batch=batch, shape=size)
        worst = max(worst, *diffs.values())
        print(f'verify ({batch}, 3, {size[0]}, {size[1]}): max |onnxruntime - PyTorch| '
              + ', '.join(f'{n} {d:.2e}' for n, d in diffs.items()))
    if worst > args.atol:
        print(f'verification failed: difference {worst:.2e} > --atol {args.atol}',
              file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
