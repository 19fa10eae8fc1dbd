"""Which kind of member diversity makes the ensemble's epistemic map find
unknown objects (goal of the main job: OOD AUROC >= 0.90, above its
aleatoric map), at what cost in accuracy and time.

    python benchmarks/member_diversity.py [--limit N]

Three ensembles of M = 3 members, each member the recipe of
``configs/fastscnn/fast-scnn_1xb4-1k_synthetic-128x256.py`` (1000 iterations) unless
said otherwise:

* ``seeds``: members differ only by their seed (initialisation, crops,
  batch order): the demo's ensemble, shared with ``benchmarks/distillation.py``
  (``WORK_DIR/ensemble``);
* ``bootstrap``: the same, each member trained on its own bootstrap sample
  of train (:class:`~mmseg_uncert.datasets.BootstrapSampler`, bagging);
* ``mixed architectures``: members 0 and 1 of ``seeds`` with a CGNet
  (``configs/cgnet/cgnet_1xb4-1k_synthetic-128x256.py``, seed 2) in place of
  member 2.

Each is evaluated on every val and ood image: mIoU, ECE, misclassification
AUROC (best score), OOD AUROC of the epistemic and aleatoric maps and of the
best score, ambiguous-pixel AUROC of the aleatoric map, the mean epistemic
map (nats) on OOD pixels and on the other pixels of the ood images, and
seconds per image. Training is skipped where its checkpoints exist (so the
seeds ensemble of ``benchmarks/distillation.py`` is reused). Results:
``benchmarks/results/member_diversity.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import os.path as osp
import subprocess
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MEMBER = osp.join(ROOT, 'configs', 'fastscnn', 'fast-scnn_1xb4-1k_synthetic-128x256.py')
CGNET = osp.join(ROOT, 'configs', 'cgnet', 'cgnet_1xb4-1k_synthetic-128x256.py')
MEMBERS = 3


def _run(command: list[str]) -> None:
    print('$', ' '.join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def train_ensemble(ens_dir: str, *cfg_options: str) -> list[dict]:
    """M Fast-SCNN members (seeds 0..M-1) side by side; finished ones are kept."""
    command = [sys.executable, 'tools/train_ensemble.py', MEMBER, '--members', str(MEMBERS),
               '--jobs', str(MEMBERS), '--work-dir', ens_dir]
    if cfg_options:
        command += ['--cfg-options', *cfg_options]
    _run(command)
    return [json.load(open(osp.join(ens_dir, f'member_{i}', 'member.json')))
            for i in range(MEMBERS)]


def train_cgnet(run_dir: str, seed: int) -> dict:
    checkpoint = osp.join(run_dir, 'iter_1000.pth')
    if not osp.isfile(checkpoint):
        _run([sys.executable, 'tools/train.py', CGNET, '--work-dir', run_dir,
              '--cfg-options', f'randomness.seed={seed}', 'train_cfg.val_interval=1001'])
    return dict(config=osp.join(run_dir, osp.basename(CGNET)), checkpoint=checkpoint)


def ood_masks(dataset, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel of the ood images, flattened in evaluation order: OOD, and
    known (not OOD, not ignored)."""
    from mmengine.dataset import pseudo_collate
    n = len(dataset) if limit is None else min(limit, len(dataset))
    unknown, known = [], []
    for i in range(n):
        sample = pseudo_collate([dataset[i]])['data_samples'][0]
        ood = sample.gt_ood.data[0].bool()
        unknown.append(ood.flatten())
        known.append(((~ood) & (sample.gt_sem_seg.data[0] != 255)).flatten())
    return torch.cat(unknown), torch.cat(known)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'bench_distillation'))
    parser.add_argument('--limit', type=int, help='images per split (default all)')
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results',
                                                  'member_diversity.json'))
    args = parser.parse_args()
    import mmseg_uncert  # noqa: F401
    from mmseg.registry import MODELS
    from mmseg_uncert.workflows.distillation_report import summarise
    from mmseg_uncert.workflows.split_evaluation import build_split, evaluate_model
    from mmseg_uncert.models.segmentors import mmseg_scope
    torch.manual_seed(0)
    seeds = train_ensemble(osp.join(args.work_dir, 'ensemble'))
    bootstrap = train_ensemble(osp.join(args.work_dir, 'ensemble_bootstrap'),
                               'train_dataloader.sampler.type=BootstrapSampler')
    cgnet = train_cgnet(osp.join(args.work_dir, 'ensemble_mixed', 'cgnet_member'), seed=2)
    variants = {'seeds': seeds, 'bootstrap': bootstrap,
                'mixed architectures': [*seeds[:2], cgnet]}
    val, ood = build_split(MEMBER, split='val'), build_split(MEMBER, split='ood')
    # the same images for every ensemble: the masks are read once
    unknown, known = ood_masks(ood, args.limit)
    rows = {}
    for name, members in variants.items():
        with mmseg_scope():
            model = MODELS.build(dict(type='EnsembleSegmentor', members=[
                dict(config=m['config'], checkpoint=m['checkpoint']) for m in members])).eval()
        on_val = evaluate_model(model, val, limit=args.limit, log_interval=50,
                                name=f'{name} on val')
        on_ood = evaluate_model(model, ood, limit=args.limit, keep_maps=('epistemic', ),
                                log_interval=50, name=f'{name} on ood')
        summary = summarise(name, on_val.metrics, on_ood.metrics)
        epistemic = on_ood.maps['epistemic'].double()
        if epistemic.numel() != unknown.numel():
            raise ValueError(f'{epistemic.numel()} map pixels for {unknown.numel()} label pixels')
        rows[name] = dict(
            members=[osp.relpath(m['config'], ROOT) for m in members],
            mIoU=summary.miou, ECE=summary.ece, seconds_per_image=summary.seconds_per_image,
            best_misclassification=summary.best('misclassification'),
            best_ood=summary.best('ood'),
            ood_epistemic=summary.auroc['ood']['epistemic'],
            ood_aleatoric=summary.auroc['ood']['aleatoric'],
            ambiguous_aleatoric=summary.auroc['ambiguous']['aleatoric'],
            ambiguous_epistemic=summary.auroc['ambiguous']['epistemic'],
            mean_epistemic_on_ood_pixels=epistemic[unknown].mean().item(),
            mean_epistemic_on_known_pixels_of_ood_images=epistemic[known].mean().item())
        print(name, json.dumps(rows[name], indent=2), flush=True)
    result = dict(date=datetime.date.today().isoformat(), cores=os.cpu_count(),
                  torch_threads=torch.get_num_threads(), members=MEMBERS,
                  images_per_split=args.limit or 'all',
                  goal='ensemble epistemic OOD AUROC >= 0.90, above its aleatoric map',
                  rows=rows)
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2, default=float)
    print(json.dumps(result, indent=2, default=float))


if __name__ == '__main__':
    main()
