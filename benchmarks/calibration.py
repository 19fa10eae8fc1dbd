"""Post-hoc calibration of the demo's member and student: temperature,
vector and local temperature scaling, fitted on val, measured on held-out
val images and on the shifted domain.

    python benchmarks/calibration.py                     # after `make demo`
    python benchmarks/calibration.py --work-dir work_dirs/demo \\
        --data-root data/synthetic_streets --shift-root data/synthetic_streets_shift

Run from the repository root. The models are the demo's member 0
(``WORK_DIR/ensemble/member_0``) and its distilled student
(``WORK_DIR/student``), each with their config and latest checkpoint.
Each calibrator is fitted by ``mmseg_uncert.workflows.post_hoc_calibration.calibrate`` (as
``tools/calibrate.py`` does) on the first ``--fit-images`` val images; every
model, calibrated or not, is then evaluated by mmseg's IoUMetric and this
package's UncertaintyMetric on every pixel of the other val images
(``val_heldout``) and of ``--shift-images`` images of the ``shift_val``
split (a different palette, texture and lighting: the synthetic generator's
domain shift), generated into ``--shift-root`` when it has none. Writes
``--out`` (JSON) and prints the table.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import os.path as osp
import tempfile
import time

from mmengine.config import Config

import mmseg_uncert  # noqa: F401  (registers the components)
from mmseg.registry import MODELS
from mmseg_uncert.apis import init_uncertainty_model
from mmseg_uncert.workflows.post_hoc_calibration import calibrate
from mmseg_uncert.workflows.split_evaluation import build_split, evaluate_model
from mmseg_uncert.datasets import SceneSpec, generate
from mmseg_uncert.models.segmentors import mmseg_scope

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
KEYS = ('mIoU', 'ECE', 'NLL', 'Brier', 'auroc/max_prob')
METHODS = ('temperature', 'vector', 'local')


def latest(folder: str, pattern: str = 'iter_*.pth') -> str:
    files = glob.glob(osp.join(folder, pattern))
    if not files:
        raise FileNotFoundError(f'no {pattern} in {folder}: run `make demo` first')
    return max(files, key=lambda p: int(osp.basename(p)[5:-4]))


def demo_models(work_dir: str) -> dict[str, tuple[str, str]]:
    member = osp.join(work_dir, 'ensemble', 'member_0')
    configs = glob.glob(osp.join(member, "*.py"))
    if not configs:
        raise FileNotFoundError(f'no member config in {member}: run `make demo` first')
    student = osp.join(work_dir, 'student')
    return dict(member=(configs[0], latest(member)),
                student=(osp.join(student, 'distill.py'), latest(student)))


def shift_split(root: str, count: int) -> None:
    """Generate ``count`` shift_val images into ``root`` unless it has them."""
    have = len(glob.glob(osp.join(root, 'leftImg8bit', 'shift_val', '*', '*.png')))
    if have < count:
        generate(root, dict(shift_val=count), seed=0, spec=SceneSpec(256, 512))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'demo'))
    parser.add_argument('--data-root', default=osp.join(ROOT, 'data', 'synthetic_streets'))
    parser.add_argument('--shift-root',
                        default=osp.join(ROOT, 'data', 'synthetic_streets_shift'))
    parser.add_argument('--fit-images', type=int, default=100)
    parser.add_argument('--eval-images', type=int, default=100,
                        help='held-out val images after the fitted ones')
    parser.add_argument('--shift-images', type=int, default=100)
    parser.add_argument('--epochs', type=int, default=10, help='local temperature scaling')
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results',
                                                  'calibration.json'))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    shift_split(args.shift_root, args.shift_images)
    models = demo_models(args.work_dir)
    heldout = list(range(args.fit_images, args.fit_images + args.eval_images))
    results: dict = {}
    fits: dict = {}
    scratch = tempfile.mkdtemp(prefix='calibration_benchmark_')
    for name, (config, checkpoint) in models.items():
        splits = dict(
            val_heldout=build_split(config, args.data_root, 'val', indices=heldout),
            shift_val=build_split(config, args.shift_root, 'shift_val',
                                  indices=args.shift_images))
        variants = {'none': init_uncertainty_model(config, checkpoint)}
        for method in METHODS:
            start = time.perf_counter()
            result = calibrate(config, checkpoint, method, 'val',
                               osp.join(scratch, name, method), data_root=args.data_root,
                               limit=args.fit_images, epochs=args.epochs)
            fits[f'{name}/{method}'] = dict(result.fit, seconds=time.perf_counter() - start,
                                            fit_split_before=result.before,
                                            fit_split_after=result.after)
            with mmseg_scope():
                variants[method] = MODELS.build(Config.fromfile(result.config_path).model)
        for method, model in variants.items():
            model.eval()
            for split, dataset in splits.items():
                metrics = evaluate_model(model, dataset, scores=['max_prob', 'entropy'],
                                         name=f'{name}/{method}').metrics
                results.setdefault(name, {}).setdefault(method, {})[split] = {
                    k: metrics[k] for k in KEYS}
                print(f'{name:8s} {method:12s} {split:12s} ' + ' '.join(
                    f'{k}={metrics[k]:.4f}' for k in KEYS), flush=True)
    goals = {}
    for name in models:
        r = results[name]
        goals[f'{name}: temperature scaling lowers val ECE by >= 50%'] = (
            r['temperature']['val_heldout']['ECE'] <= 0.5 * r['none']['val_heldout']['ECE'])
        goals[f'{name}: temperature scaling leaves mIoU unchanged'] = (
            abs(r['temperature']['val_heldout']['mIoU'] - r['none']['val_heldout']['mIoU'])
            < 1e-9)
        goals[f'{name}: temperature scaling does not raise shift_val ECE'] = (
            r['temperature']['shift_val']['ECE'] <= r['none']['shift_val']['ECE'])
        goals[f'{name}: local temperature scaling beats temperature scaling on '
              f'shift_val ECE'] = (
            r['local']['shift_val']['ECE'] < r['temperature']['shift_val']['ECE'])
    payload = dict(
        date=datetime.date.today().isoformat(),
        machine=f'{os.cpu_count()} CPU cores, no GPU',
        models={k: dict(config='WORK_DIR/' + osp.relpath(c, args.work_dir),
                        checkpoint=osp.basename(p)) for k, (c, p) in models.items()},
        fit=dict(split='val', images=f'first {args.fit_images}'),
        eval=dict(val_heldout=f'val images {heldout[0]}..{heldout[-1]}',
                  shift_val=f'first {args.shift_images} shift_val images'),
        results=results, fits=fits, goals=goals)
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(payload, f, indent=2)
    for goal, met in goals.items():
        print(f'{"met   " if met else "missed"}  {goal}')


if __name__ == '__main__':
    main()
