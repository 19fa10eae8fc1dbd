"""Uncertainty under growing corruption: mIoU, ECE and misclassification
AUROC of the demo's models against the severity of ImageNet-C-style
corruptions, per corruption family and averaged.

    python benchmarks/shift.py                            # after `make demo`
    python benchmarks/shift.py --work-dir work_dirs/demo --data-root data/synthetic_streets \\
        --images 16

Run from the repository root. The models are the demo's (Ovadia et al., "Can
you trust your model's uncertainty?", NeurIPS 2019, compare the same kinds):

* ``member``: member 0 of the ensemble, alone;
* ``ensemble``: the three members (``WORK_DIR/ensemble/ensemble.py``);
* ``mc_dropout``: member 0 with its dropout on, ``--mc-samples`` passes;
* ``student``: the distilled student;
* ``student_ts``: the student with temperature scaling fitted on the first
  ``--fit-images`` val images (``tools/calibrate.py``'s fit).

Each corruption of ``--corruptions`` (two per family of Hendrycks &
Dietterich by default) is applied by this package's ``ImageCorruption`` at
severities 1–5 to the val images from position ``--fit-images`` on (never
those the temperature was fitted on), ``--images`` of them; severity 0 is
the clean images. Metrics are mmseg's IoUMetric and this package's
UncertaintyMetric on every pixel (misclassification AUROC of the predictive
entropy, the score every model has). Writes ``--out`` (JSON) and ``--plot``
(PNG: one column per family and the average, one row per metric).
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

import numpy as np
from mmengine.config import Config

import mmseg_uncert  # noqa: F401  (registers the components)
from mmseg.registry import MODELS
from mmseg_uncert.apis import init_uncertainty_model
from mmseg_uncert.workflows.post_hoc_calibration import calibrate
from mmseg_uncert.workflows.split_evaluation import build_split, evaluate_model
from mmseg_uncert.datasets.transforms import CORRUPTION_FAMILIES
from mmseg_uncert.models.segmentors import mmseg_scope

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CORRUPTIONS = ('gaussian_noise', 'impulse_noise', 'defocus_blur', 'motion_blur',
                       'fog', 'brightness', 'contrast', 'jpeg_compression')
METRICS = (('mIoU', 'mIoU'), ('ECE', 'ECE'), ('auroc/entropy', 'misclassification AUROC'))


def latest(folder: str) -> str:
    files = glob.glob(osp.join(folder, 'iter_*.pth'))
    if not files:
        raise FileNotFoundError(f'no checkpoint in {folder}: run `make demo` first')
    return max(files, key=lambda p: int(osp.basename(p)[5:-4]))


def family(corruption: str) -> str:
    return next(f for f, names in CORRUPTION_FAMILIES.items() if corruption in names)


def build_models(work_dir: str, data_root: str, fit_images: int, mc_samples: int,
                 scratch: str) -> tuple[dict, str, float]:
    """The five models, the member's config (whose test pipeline is used)
    and the student's fitted temperature."""
    member_dir = osp.join(work_dir, 'ensemble', 'member_0')
    member_cfg = glob.glob(osp.join(member_dir, '*.py'))[0]
    member_ckpt = latest(member_dir)
    student_cfg = osp.join(work_dir, 'student', 'distill.py')
    student_ckpt = latest(osp.join(work_dir, 'student'))
    fitted = calibrate(student_cfg, student_ckpt, 'temperature', 'val',
                       osp.join(scratch, 'student_ts'), data_root=data_root,
                       limit=fit_images)
    with mmseg_scope():
        mc = MODELS.build(dict(type='MCDropoutSegmentor',
                               model=dict(config=member_cfg, checkpoint=member_ckpt),
                               num_samples=mc_samples))
        calibrated = MODELS.build(Config.fromfile(fitted.config_path).model)
    models = dict(
        member=init_uncertainty_model(member_cfg, member_ckpt),
        ensemble=init_uncertainty_model(osp.join(work_dir, 'ensemble', 'ensemble.py')),
        mc_dropout=mc,
        student=init_uncertainty_model(student_cfg, student_ckpt),
        student_ts=calibrated)
    for model in models.values():
        model.eval()
    return models, member_cfg, fitted.fit['temperature']


def plot(payload: dict, path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    families = [*payload['families'], 'average']
    fig = Figure(figsize=(3.2 * len(families), 8.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(METRICS), len(families), squeeze=False)
    severities = list(range(6))
    for col, fam in enumerate(families):
        for row, (key, label) in enumerate(METRICS):
            ax = axes[row][col]
            for name, curves in payload['curves'].items():
                ax.plot(severities, curves[fam][key], marker='o', ms=3, label=name)
            ax.set_xticks(severities)
            if row == 0:
                ax.set_title(fam if fam == 'average' else
                             f"{fam} ({', '.join(payload['families'][fam])})", fontsize=8)
            if col == 0:
                ax.set_ylabel(label)
            if row == len(METRICS) - 1:
                ax.set_xlabel('severity (0 = clean)')
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"Embedded benchmark, {payload['images']} val images per point "
                 f"({payload['date']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'demo'))
    parser.add_argument('--data-root', default=osp.join(ROOT, 'data', 'synthetic_streets'))
    parser.add_argument('--corruptions', nargs='+', default=list(DEFAULT_CORRUPTIONS))
    parser.add_argument('--images', type=int, default=16)
    parser.add_argument('--fit-images', type=int, default=100)
    parser.add_argument('--mc-samples', type=int, default=10)
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results', 'shift.json'))
    parser.add_argument('--plot', default=osp.join(ROOT, 'benchmarks', 'results', 'shift.png'))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    scratch = tempfile.mkdtemp(prefix='shift_benchmark_')
    models, config, temperature = build_models(args.work_dir, args.data_root,
                                               args.fit_images, args.mc_samples, scratch)
    indices = list(range(args.fit_images, args.fit_images + args.images))
    conditions = [(None, 0)] + [(c, s) for c in args.corruptions for s in range(1, 6)]
    raw: dict = {name: {} for name in models}
    start = time.time()
    for corruption, severity in conditions:
        dataset = build_split(config, args.data_root, 'val', indices=indices,
                              corruption=None if corruption is None else dict(
                                  corruption=corruption, severity=severity))
        label = 'clean' if corruption is None else f'{corruption}/{severity}'
        for name, model in models.items():
            metrics = evaluate_model(model, dataset, scores=['max_prob', 'entropy'],
                                     name=name).metrics
            raw[name][label] = {key: metrics[key] for key, _ in METRICS}
            print(f'{label:22s} {name:11s} ' + ' '.join(
                f'{k}={metrics[k]:.4f}' for k, _ in METRICS) +
                f'  ({time.time() - start:.0f} s)', flush=True)
    families: dict = {}
    for corruption in args.corruptions:
        families.setdefault(family(corruption), []).append(corruption)
    curves: dict = {}
    for name in models:
        curves[name] = {}
        for fam, members in [*families.items(), ('average', args.corruptions)]:
            curves[name][fam] = {
                key: [raw[name]['clean'][key]] + [
                    float(np.mean([raw[name][f'{c}/{s}'][key] for c in members]))
                    for s in range(1, 6)]
                for key, _ in METRICS}
    growth = {name: curves[name]['average']['ECE'][5] - curves[name]['average']['ECE'][0]
              for name in models}
    payload = dict(
        date=datetime.date.today().isoformat(),
        machine=f'{os.cpu_count()} CPU cores, no GPU',
        images=args.images, image_indices=f'val {indices[0]}..{indices[-1]}',
        mc_samples=args.mc_samples, student_temperature=temperature,
        families=families, curves=curves, raw=raw,
        ece_growth_clean_to_severity_5=growth,
        ensemble_ece_grows_slower_than_member=bool(growth['ensemble'] < growth['member']),
        seconds=time.time() - start)
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(payload, f, indent=2)
    plot(payload, args.plot)
    print(json.dumps(growth, indent=2))


if __name__ == '__main__':
    main()
