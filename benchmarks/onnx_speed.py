"""CPU seconds per image of the deployed student and of its plain member:
onnxruntime against PyTorch.

    python benchmarks/onnx_speed.py                 # 256x512, 20 runs after 3 warm-ups
    python benchmarks/onnx_speed.py --runs 40 --threads 1 2 4

The demo's student
(``configs/distill/distill-ensemble-3x_fast-scnn_1xb4-0.5k_synthetic-128x256.py``:
Fast-SCNN with a DualHead giving ``epistemic`` and ``aleatoric``) at the
demo's test size, 256x512 (H x W), batch 1, with seeded random weights:
time does not depend on the weights. Both sides run the same computation,
the exported one (:class:`~mmseg_uncert.apis.onnx_export.DeployedSegmentor`:
normalisation, ``encode_decode``, the split into logits and maps):
PyTorch eagerly under ``torch.inference_mode`` with ``torch.set_num_threads(t)``,
onnxruntime's CPU provider with ``intra_op_num_threads = t`` (and one
inter-op thread) on the graph ``tools/export_onnx.py`` writes (dynamic N, H,
W). The student's plain member (``configs/fastscnn/
fast-scnn_1xb4-1k_synthetic-128x256.py``: the same network without the
uncertainty branch) is exported and timed the same way, and so is the
student with its ``aleatoric`` map regressed instead of derived
(``derived_names=()``: the map the recipe's branch already regresses as an
auxiliary target, decoded at 1/8 resolution and resized, where the derived
one is an entropy at the image's resolution; the same weights, another
test-time output), the models taking turns image by image, so that all see
the same machine load. Reported per thread
count t: the median over ``--runs`` images after ``--warmup`` images, each
student / member ratio per runtime, and the largest output difference on
the timed input.
Writes ``benchmarks/results/onnx_speed.json``. Other processes on the machine
inflate both sides (the load average at the start is recorded).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import os.path as osp
import platform
import statistics
import sys
import tempfile
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
CONFIG = 'configs/distill/distill-ensemble-3x_fast-scnn_1xb4-0.5k_synthetic-128x256.py'
MEMBER_CONFIG = 'configs/fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py'
#: the student with every map regressed (its checkpoint has both maps' bins)
REGRESSED = {'model.decode_head.derived_names': (),
             'model.decode_head.regress_derived': False}


def median_seconds_in_turns(calls: dict, warmup: int, runs: int) -> dict[str, float]:
    """Median seconds of each call, the calls taking turns run by run."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    seconds = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, nargs=2, default=[256, 512], metavar=('H', 'W'))
    parser.add_argument('--runs', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--threads', type=int, nargs='+',
                        default=sorted({1, os.cpu_count() or 1}))
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results',
                                                  'onnx_speed.json'))
    args = parser.parse_args()

    import mmseg
    import onnx
    import onnxruntime as ort
    import onnxscript

    import mmseg_uncert
    from mmseg_uncert.apis import init_uncertainty_model
    from mmseg_uncert.apis.onnx_export import (DeployedSegmentor, export_onnx,
                                               onnx_session)

    load = os.getloadavg()[0]
    size = tuple(args.size)
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1)) * 255
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        graphs, sessions, feeds = {}, {}, {}
        export_seconds = {}
        for name, config, options in (
                ('student', CONFIG, None),
                ('student_regressed', CONFIG, REGRESSED),
                ('member', MEMBER_CONFIG, None)):
            torch.manual_seed(0)
            model = init_uncertainty_model(osp.join(ROOT, config), cfg_options=options)
            graphs[name] = DeployedSegmentor(model).eval()
            path = osp.join(tmp, f'{name}.onnx')
            start = time.perf_counter()
            written = export_onnx(model, path, shape=size)
            export_seconds[name] = round(time.perf_counter() - start, 1)
            sessions[name] = path
            feeds[name] = {written.input_name: image.numpy()}
            if name == 'student':
                outputs = written.output_names
        for threads in args.threads:
            torch.set_num_threads(threads)
            runs = {name: onnx_session(path, threads) for name, path in sessions.items()}
            with torch.inference_mode():
                torch_s = median_seconds_in_turns(
                    {n: (lambda g=g: g(image)) for n, g in graphs.items()},
                    args.warmup, args.runs)
                expected = {n: g(image) for n, g in graphs.items()}
            ort_s = median_seconds_in_turns(
                {n: (lambda n=n: runs[n].run(None, feeds[n])) for n in runs},
                args.warmup, args.runs)
            row = dict(threads=threads, torch_threads=torch.get_num_threads(),
                       ort_intra_op_threads=threads)
            for name in graphs:
                got = runs[name].run(None, feeds[name])
                diff = max(float((torch.from_numpy(g) - e).abs().max())
                           for g, e in zip(got, expected[name]))
                row[name] = dict(pytorch_seconds_per_image=round(torch_s[name], 4),
                                 onnxruntime_seconds_per_image=round(ort_s[name], 4),
                                 onnxruntime_speedup=round(torch_s[name] / ort_s[name], 2),
                                 max_abs_difference=diff)
            for student in ('student', 'student_regressed'):
                row[f'{student}_over_member'] = dict(
                    pytorch=round(torch_s[student] / torch_s['member'], 3),
                    onnxruntime=round(ort_s[student] / ort_s['member'], 3))
            rows.append(row)
            print(row, flush=True)
    result = dict(
        date=datetime.date.today().isoformat(), config=CONFIG, member_config=MEMBER_CONFIG,
        weights='seeded random (time does not depend on the weights)',
        size=list(size), batch=1, warmup=args.warmup, runs=args.runs, statistic='median',
        outputs=outputs, export_seconds=export_seconds,
        cores=os.cpu_count(), machine=platform.machine(), processor=platform.processor(),
        load_average_at_start=round(load, 2),
        versions=dict(python=platform.python_version(), torch=torch.__version__,
                      onnxruntime=ort.__version__, onnx=onnx.__version__,
                      onnxscript=onnxscript.__version__, mmseg=mmseg.__version__,
                      mmseg_uncert=mmseg_uncert.__version__),
        rows=rows)
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
