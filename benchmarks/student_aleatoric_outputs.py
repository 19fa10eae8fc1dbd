"""The demo student's two ways to output its aleatoric map, from one
checkpoint: how well each finds ambiguous pixels, and what each costs in
onnxruntime against the plain member.

    python benchmarks/student_aleatoric_outputs.py     # after `make demo`
    python benchmarks/student_aleatoric_outputs.py --work-dir work_dirs/demo --limit 200

Run from the repository root. The recipe's student
(``configs/distill/distill-ensemble-3x_fast-scnn_…``) regresses the
teacher's ``epistemic`` and ``aleatoric`` maps and outputs:

* ``derived`` (the recipe): aleatoric = max(0, H[softmax(z)] − epistemic),
  the entropy of its own prediction at the image's resolution less the
  regressed epistemic map;
* ``regressed`` (``derived_names=()``, ``regress_derived=False``): the
  branch's regressed aleatoric map, decoded at 1/8 resolution and resized
  (no full-resolution entropy).

The same weights (``WORK_DIR/student/iter_500.pth``); only the test-time
output differs. On the first ``--limit`` val and ood images, every pixel
(:func:`~mmseg_uncert.workflows.split_evaluation.evaluate_model`): the
aleatoric map's AUROC for ambiguous pixels (true label entropy > 0), for
misclassified pixels and for unknown objects. Then both exported as ONNX
graphs (seeded random weights: time does not depend on them) and timed in
onnxruntime at 256x512 on one thread beside the plain member, taking turns
image by image: median of ``--runs`` images after 3 warm-ups.

Writes ``benchmarks/results/student_aleatoric_outputs.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import os.path as osp
import sys
import tempfile

import torch

from onnx_speed import median_seconds_in_turns  # this script's folder

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
MEMBER_CONFIG = 'configs/fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py'
#: test-time options of each output, on the student's config
OUTPUTS = {'derived': {},
           'regressed': {'model.decode_head.derived_names': (),
                         'model.decode_head.regress_derived': False}}
KEYS = ('mIoU', 'ECE', 'aleatoric_auroc/aleatoric', 'auroc/aleatoric',
        'ood_auroc/aleatoric', 'aleatoric_auroc/max_prob', 'aleatoric_auroc/entropy')


def onnx_seconds(config: str, runs: int) -> dict[str, float]:
    """Median onnxruntime seconds per 256x512 image, one thread, of each
    output's graph and of the plain member, taking turns."""
    from mmseg_uncert.apis import init_uncertainty_model
    from mmseg_uncert.apis.onnx_export import export_onnx, onnx_session
    image = torch.rand(1, 3, 256, 512, generator=torch.Generator().manual_seed(1)) * 255
    calls = {}
    with tempfile.TemporaryDirectory() as tmp:
        graphs = [(name, config, options) for name, options in OUTPUTS.items()]
        graphs.append(('member', osp.join(ROOT, MEMBER_CONFIG), None))
        for name, cfg, options in graphs:
            torch.manual_seed(0)
            model = init_uncertainty_model(cfg, cfg_options=options)
            path = osp.join(tmp, f'{name}.onnx')
            written = export_onnx(model, path, shape=(256, 512))
            session = onnx_session(written.path, 1)
            feed = {written.input_name: image.numpy()}
            calls[name] = lambda s=session, f=feed: s.run(None, f)
        return median_seconds_in_turns(calls, warmup=3, runs=runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'demo'))
    parser.add_argument('--data-root',
                        default=osp.join(ROOT, 'data', 'synthetic_streets'),
                        help='the demo\'s data (default: where `make demo` writes it)')
    parser.add_argument('--limit', type=int, default=200)
    parser.add_argument('--runs', type=int, default=20)
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results',
                                                  'student_aleatoric_outputs.json'))
    args = parser.parse_args()
    from mmseg_uncert.apis import init_uncertainty_model
    from mmseg_uncert.workflows.split_evaluation import build_split, evaluate_model

    config = osp.join(args.work_dir, 'student', 'distill.py')
    checkpoint = osp.join(args.work_dir, 'student', 'iter_500.pth')
    for path in (config, checkpoint):
        if not osp.isfile(path):
            raise SystemExit(f'{path} does not exist: run `make demo` first, or give '
                             f'the demo\'s work dir with --work-dir')
    torch.set_num_threads(2)
    quality = {}
    for name, options in OUTPUTS.items():
        model = init_uncertainty_model(config, checkpoint, cfg_options=options)
        for split in ('val', 'ood'):
            dataset = build_split(config, data_root=args.data_root, split=split)
            metrics = evaluate_model(model, dataset, limit=args.limit).metrics
            quality[f'{split}/{name}'] = {k: round(metrics[k], 4) for k in KEYS
                                          if k in metrics}
            print(name, split, quality[f'{split}/{name}'], flush=True)
    seconds = onnx_seconds(config, args.runs)
    onnx = {name: dict(seconds_per_image=round(s, 4),
                       over_member=round(s / seconds['member'], 3))
            for name, s in seconds.items()}
    print(onnx, flush=True)
    import onnxruntime
    result = dict(date=datetime.date.today().isoformat(),
                  checkpoint=osp.relpath(checkpoint, ROOT),
                  images_per_split=args.limit, outputs=OUTPUTS, quality=quality,
                  onnx=dict(size=[256, 512], threads=1, runs=args.runs,
                            statistic='median', weights='seeded random', models=onnx,
                            onnxruntime=onnxruntime.__version__),
                  cores=os.cpu_count())
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
