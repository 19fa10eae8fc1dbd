"""Wall time of the main job (`make demo`) from nothing, against its goals.

    python benchmarks/demo_wall_time.py            # full demo: goal 20 min on 2 CPU cores
    python benchmarks/demo_wall_time.py --quick    # quick demo: goal 5 min

Runs ``tools/demo.py`` in a fresh work dir with a fresh data root (so the
data is generated too, as on a fresh clone), records the total wall time,
each step's time (from the demo's step stamps), every model's metrics, the
side-by-side timing of the three models (``eval/timing/timing.json``) and
the report's goals of the main job (``goals.json``), and merges them into ``benchmarks/results/demo.json`` under the
mode's name. Nothing else should run on the machine meanwhile.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
GOALS = dict(full=20 * 60, quick=5 * 60)
MODELS = ('ensemble', 'member_0', 'student')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results', 'demo.json'))
    args = parser.parse_args()
    mode = 'quick' if args.quick else 'full'
    base = osp.join(ROOT, 'work_dirs', f'bench_demo_{mode}')
    shutil.rmtree(base, ignore_errors=True)
    work, data = osp.join(base, 'work'), osp.join(base, 'data')
    command = [sys.executable, 'tools/demo.py', '--work-dir', work, '--data-root', data]
    if args.quick:
        command.append('--quick')
    start = time.time()
    subprocess.run(command, check=True, cwd=ROOT)
    wall = time.time() - start
    steps = []
    for k in range(1, 8):
        with open(osp.join(work, '.steps', f'step_{k}.done')) as f:
            steps.append(float(f.read()))
    metrics = {}
    for split in ('val', 'ood'):
        for name in MODELS:
            with open(osp.join(work, 'eval', split, name, 'metrics.json')) as f:
                m = json.load(f)
            metrics[f'{split}/{name}'] = {k: v for k, v in m.items() if k in (
                'mIoU', 'ECE', 'seconds_per_image', 'images') or k.split('/')[0] in (
                'auroc', 'ood_auroc', 'aleatoric_auroc')}
    # the report's goals of the main job, as the demo judged them
    with open(osp.join(work, 'goals.json')) as f:
        goals = json.load(f)
    # the speed goal's timing: the three models side by side (step 5)
    with open(osp.join(work, 'eval', 'timing', 'timing.json')) as f:
        timing = json.load(f)
    result = dict(date=datetime.date.today().isoformat(), cores=os.cpu_count(),
                  wall_seconds=wall, step_seconds=steps, goal_seconds=GOALS[mode],
                  goal_met=wall <= GOALS[mode], metrics=metrics, timing=timing,
                  main_job_goals=goals['goals'], pearson_epistemic=goals['pearson_epistemic'])
    everything = {}
    if osp.isfile(args.out):
        with open(args.out) as f:
            everything = json.load(f)
    everything[mode] = result
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(everything, f, indent=2)
    print(f'{mode} demo: {wall:.0f} s (goal {GOALS[mode]} s: '
          f"{'met' if result['goal_met'] else 'NOT met'}); steps {[round(s) for s in steps]}")


if __name__ == '__main__':
    main()
