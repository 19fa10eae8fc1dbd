"""What the demo's one-pass student costs against the plain member it wraps.

    python benchmarks/student_cost.py          # 6 images of 256x512, 2 settings

The member is ``configs/fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py``
(Fast-SCNN), the student the demo's distillation config deployed
(``configs/distill/distill-ensemble-3x_fast-scnn_1xb4-0.5k_synthetic-128x256.py``:
the same Fast-SCNN with a DualHead giving ``epistemic`` and ``aleatoric``),
both with seeded random weights (time does not depend on them), on generated
256x512 street scenes, batch 1, every core. Three timing methods, each the
median over rounds, the two models taking turns:

* ``turns``: ``test_step`` over the images, as the demo's step 5 times them
  (:func:`~mmseg_uncert.workflows.split_evaluation.time_test_steps`);
* ``one_image``: ``test_step`` on one image, 15 rounds;
* ``tensor``: the network alone (``mode='tensor'``: no post-processing), 15
  rounds.

Each in two processes: glibc's default malloc, which maps large tensors
fresh from the OS and unmaps them on free (so each step faults its
temporaries in again), and with :func:`~mmseg_uncert.engine.cpu_memory.keep_freed_memory`,
as ``CompatRunner`` runs on CPU. Also a profile of each model's
``test_step`` (the five operators with the most self time). Writes
``benchmarks/results/student_cost.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
MEMBER = 'configs/fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py'
STUDENT = 'configs/distill/distill-ensemble-3x_fast-scnn_1xb4-0.5k_synthetic-128x256.py'
RESULTS = osp.join(ROOT, 'benchmarks', 'results', 'student_cost.json')


def measure(data_root: str, images: int, keep: bool) -> dict:
    """The three timings and the profiles, in this process."""
    import torch
    from mmengine.dataset import pseudo_collate
    from torch.profiler import ProfilerActivity, profile

    import mmseg_uncert  # noqa: F401
    from mmseg_uncert.apis import init_uncertainty_model
    from mmseg_uncert.engine.cpu_memory import keep_freed_memory
    from mmseg_uncert.workflows.split_evaluation import build_split, time_test_steps
    if keep and not keep_freed_memory():
        raise SystemExit('keep_freed_memory: this C library has no mallopt')
    torch.manual_seed(0)
    models = {name: init_uncertainty_model(osp.join(ROOT, config))
              for name, config in (('member', MEMBER), ('student', STUDENT))}
    dataset = build_split(osp.join(ROOT, STUDENT), data_root=data_root, split='val',
                          indices=images)
    out = dict(turns=time_test_steps(models, dataset, images=images, rounds=5))
    batch = pseudo_collate([dataset[0]])
    data = models['member'].data_preprocessor(batch, False)

    def rounds(step) -> dict:
        times: dict[str, list[float]] = {name: [] for name in models}
        with torch.no_grad():
            for _ in range(15):
                for name, model in models.items():
                    start = time.perf_counter()
                    step(model)
                    times[name].append(time.perf_counter() - start)
        return {name: statistics.median(values) for name, values in times.items()}

    out['one_image'] = rounds(lambda model: model.test_step(batch))
    out['tensor'] = rounds(lambda model: model(data['inputs'], data['data_samples'],
                                               mode='tensor'))
    out = {method: dict(times, ratio=times['student'] / times['member'])
           for method, times in out.items()}
    out['profile_ms_per_step'] = {}
    for name, model in models.items():
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                model.test_step(batch)
        top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:5]
        out['profile_ms_per_step'][name] = {
            e.key: round(e.self_cpu_time_total / 5 / 1000, 2) for e in top}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=6)
    parser.add_argument('--measure', nargs=2, metavar=('DATA_ROOT', 'KEEP'),
                        help=argparse.SUPPRESS)  # one setting, in a child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], args.images, args.measure[1] == '1')))
        return
    from mmseg_uncert.datasets.synthetic_streets import SceneSpec, generate
    results = dict(date=datetime.date.today().isoformat(), cores=os.cpu_count(),
                   images=args.images, size='256x512', load_average=os.getloadavg()[0])
    with tempfile.TemporaryDirectory() as data_root:
        generate(data_root, {'val': args.images}, seed=0, spec=SceneSpec(256, 512),
                 workers=1)
        for setting, keep in (('default_malloc', '0'), ('keep_freed_memory', '1')):
            proc = subprocess.run(
                [sys.executable, __file__, '--images', str(args.images), '--measure',
                 data_root, keep], capture_output=True, text=True, check=True, cwd=ROOT)
            results[setting] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(setting, {m: round(v['ratio'], 2) for m, v in results[setting].items()
                            if 'ratio' in v})
    with open(RESULTS, 'w') as f:
        json.dump(results, f, indent=1)
        f.write('\n')
    print(f'wrote {RESULTS}')


if __name__ == '__main__':
    main()
