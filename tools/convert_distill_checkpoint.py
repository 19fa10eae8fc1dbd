"""Keep the student of a distillation checkpoint, for deployment.

    python tools/convert_distill_checkpoint.py IN.pth OUT.pth [--prefix student.]

EnsembleDistiller's own checkpoints already hold the student only (plus the
distillation losses' few parameters, which this drops). Checkpoints written
by other distillation code hold teacher and student under prefixes (e.g.
mmrazor's ``architecture.`` for the student and ``distiller.`` for the
rest): the student's keys are kept without their prefix, everything else is
dropped. The result loads into a plain UncertaintyEncoderDecoder (or
EncoderDecoder) config with the student's backbone and head.
"""
from __future__ import annotations

import argparse
import os.path as osp

import torch

import mmseg_uncert  # noqa: F401  (checkpoint allow-list)
from mmseg_uncert.apis import student_state_dict
from mmseg_uncert.compat import load_local_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='distillation checkpoint')
    parser.add_argument('dst', help='where to write the student checkpoint')
    parser.add_argument('--prefix', help='the student keys\' prefix (default: '
                        'student. or architecture., else the unprefixed keys)')
    args = parser.parse_args()
    if not osp.isfile(args.src):
        raise SystemExit(f'checkpoint {args.src} does not exist')
    checkpoint = load_local_checkpoint(args.src, map_location='cpu')
    state = checkpoint.get('state_dict', checkpoint)
    try:
        student = student_state_dict(state, args.prefix)
    except KeyError as error:
        raise SystemExit(f'{args.src}: {error.args[0]}') from error
    meta = checkpoint.get('meta', {}) if isinstance(checkpoint, dict) else {}
    torch.save(dict(state_dict=student, meta=meta), args.dst)
    print(f'{len(student)} student tensors of {len(state)} written to {args.dst}')


if __name__ == '__main__':
    main()
