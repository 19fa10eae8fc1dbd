"""Ensemble and MC-dropout inference: time per image and peak memory.

    python benchmarks/ensemble_inference.py                 # 512x1024, 3 images per setting
    python benchmarks/ensemble_inference.py --size 256 512  # quicker

Members are the project's CPU segmentor (MobileNetV3-small + FCN, 19 classes,
``configs/fcn/fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py``) with seeded
random weights: time and memory do not depend on the weights. Settings:

* ``stream``: :class:`~mmseg_uncert.models.segmentors.EnsembleSegmentor` with
  M = 1, 3, 5 (running statistics, one member's output at a time);
* ``naive``: the same members, their M softmax maps stacked into an
  [M, B, C, H, W] tensor and the same maps computed from it;
* ``mc``: :class:`~mmseg_uncert.models.segmentors.MCDropoutSegmentor`, T = 20.

Each setting runs in its own process. Reported: seconds per image (batch 1,
after one warm-up image) and the peak resident memory of inference above the
process's level once the models are built and the inputs made.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import os.path as osp
import resource
import subprocess
import sys
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'fcn',
                  'fcn_mobilenet-v3-s_1xb4-2k_synthetic-128x256.py')
SETTINGS = [('stream', 1), ('stream', 3), ('stream', 5), ('naive', 3),
            ('naive', 5), ('mc', 20)]


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _naive_predict(ensemble, inputs, samples):
    """The maps of EnsembleSegmentor.predict from the stacked member maps."""
    from mmseg_uncert.models import UNCERTAINTY_NAMES, entropy
    from mmseg_uncert.models.segmentors.postprocess import samples_with_uncertainty
    metas = [s.metainfo for s in samples]
    stack = torch.stack([m.inference(inputs, [dict(x) for x in metas]).softmax(1)
                         for m in ensemble.members])
    mean = stack.mean(0)
    total = entropy(mean)
    aleatoric = entropy(stack, dim=2).mean(0)
    pred = mean.argmax(1, keepdim=True)
    at = stack.gather(2, pred.expand(stack.shape[0], *pred.shape))[:, :, 0]
    votes = torch.nn.functional.one_hot(stack.argmax(2), stack.shape[2]).sum(0)
    maps = dict(total=total, aleatoric=aleatoric,
                epistemic=(total - aleatoric).clamp(min=0),
                std=at.std(0, unbiased=False),
                variation_ratio=1 - votes.amax(-1).float() / stack.shape[0])
    return samples_with_uncertainty(
        ensemble, mean.clamp_min(1e-38).log(),
        torch.stack([maps[n] for n in UNCERTAINTY_NAMES], 1), UNCERTAINTY_NAMES,
        samples)


def run_setting(kind: str, count: int, size: tuple[int, int], images: int) -> dict:
    from mmengine.config import Config

    import mmseg_uncert  # noqa: F401
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg_uncert.models.segmentors import mmseg_scope

    torch.set_num_threads(os.cpu_count() or 1)
    model_cfg = Config.fromfile(CONFIG).model.to_dict()
    torch.manual_seed(0)
    with mmseg_scope():
        if kind == 'mc':
            model = MODELS.build(dict(type='MCDropoutSegmentor', num_samples=count,
                                      model=dict(model=model_cfg)))
        else:
            model = MODELS.build(dict(type='EnsembleSegmentor',
                                      members=[dict(model=model_cfg)] * count))
    model.eval()
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(1, 3, *size, generator=g) for _ in range(images + 1)]

    def samples():
        return [SegDataSample(metainfo=dict(ori_shape=size, img_shape=size,
                                            pad_shape=size,
                                            padding_size=[0, 0, 0, 0]))]

    base = _peak_mib()
    seconds = []
    with torch.no_grad():
        for i, x in enumerate(inputs):
            start = time.perf_counter()
            out = (_naive_predict(model, x, samples()) if kind == 'naive'
                   else model.predict(x, samples()))
            if i:  # the first image warms up
                seconds.append(time.perf_counter() - start)
            del out
    return dict(kind=kind, count=count, seconds_per_image=round(
        sum(seconds) / len(seconds), 3), peak_mib=round(_peak_mib() - base, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, nargs=2, default=[512, 1024])
    parser.add_argument('--images', type=int, default=3)
    parser.add_argument('--setting', help='kind:count, one setting in this process')
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results',
                                                  'ensemble_inference.json'))
    args = parser.parse_args()
    size = tuple(args.size)
    if args.setting:
        kind, count = args.setting.split(':')
        print(json.dumps(run_setting(kind, int(count), size, args.images)))
        return
    rows = []
    for kind, count in SETTINGS:
        proc = subprocess.run(
            [sys.executable, __file__, '--setting', f'{kind}:{count}', '--size',
             *map(str, size), '--images', str(args.images)],
            capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f'{kind}:{count} failed:\n{proc.stderr[-3000:]}')
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    by = {(r['kind'], r['count']): r for r in rows}
    one = by[('stream', 1)]['peak_mib']
    result = dict(
        date=datetime.date.today().isoformat(), cores=os.cpu_count(),
        size=list(size), images=args.images, rows=rows,
        stream_m5_over_m1=round(by[('stream', 5)]['peak_mib'] / one, 2),
        naive_m5_over_m1=round(by[('naive', 5)]['peak_mib'] / one, 2))
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)
    print(f"peak memory M=5 / M=1: streaming {result['stream_m5_over_m1']}x "
          f"(goal <= 1.3x), naive stacking {result['naive_m5_over_m1']}x")


if __name__ == '__main__':
    main()
