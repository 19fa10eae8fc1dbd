"""Time the default synthetic benchmark (goal: under 60 s on 2 cores).

    python benchmarks/generate_synthetic.py [--out benchmarks/results/generate_synthetic.json]

Generates every split at the default counts and size into a temporary
directory with all cores, as `tools/make_synthetic.py` does, and records the
wall time, the size on disk and the sizes of the unknown objects of the
``ood`` split (connected components of its OOD masks).
"""
import argparse
import datetime
import json
import os
import os.path as osp
import tempfile
import time

from mmseg_uncert.datasets.synthetic_streets import (DEFAULT_COUNTS, SceneSpec,
                                                     generate, ood_statistics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=osp.join(
        osp.dirname(osp.abspath(__file__)), 'results', 'generate_synthetic.json'))
    args = parser.parse_args()
    spec = SceneSpec()
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        generate(root, DEFAULT_COUNTS, seed=0, spec=spec)
        seconds = time.perf_counter() - start
        size = sum(osp.getsize(osp.join(d, f))
                   for d, _, files in os.walk(root) for f in files)
        ood = ood_statistics(root)
    images = sum(DEFAULT_COUNTS.values())
    result = dict(date=datetime.date.today().isoformat(), cores=os.cpu_count(),
                  counts=DEFAULT_COUNTS, size=[spec.height, spec.width],
                  images=images, seconds=round(seconds, 1),
                  images_per_second=round(images / seconds, 1),
                  megabytes=round(size / 2**20, 1), goal_seconds=60,
                  goal_met=seconds < 60, ood_objects=ood)
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == '__main__':
    main()
