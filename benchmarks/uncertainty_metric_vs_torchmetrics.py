"""UncertaintyMetric vs torchmetrics on the same pixels: speed and memory.

    python benchmarks/uncertainty_metric_vs_torchmetrics.py            # 48 x 1024x1024 = 50.3 M pixels
    python benchmarks/uncertainty_metric_vs_torchmetrics.py --images 4 # quick look
    python benchmarks/uncertainty_metric_vs_torchmetrics.py --device cuda --out X.json

torchmetrics side: ``MulticlassCalibrationError`` (ECE, 15 bins) and
``BinaryAUROC`` (exact, ``thresholds=None``) of the wrong-pixel detection by
1 - max probability. Our side: ``UncertaintyMetric(scores=['max_prob'])``,
which computes those and more (MCE, class-wise and adaptive ECE, NLL, Brier,
AUPR, FPR95, AURC, E-AURC, pixel and patch PAvPU). Each side runs in its own
process on the same seeded logits (19 classes).

The images are written to disk first and each process memory-maps them one at
a time, as an evaluation reads its data, so that the data's memory comes and
goes the same way for every image. (Generating them in the measuring process
instead leaves the allocator's heap shaped by the generator: ±30 MiB of peak
resident memory that belong to neither metric.) A third process, ``data``,
runs the same loop without a metric: the harness's own noise floor.

Each side runs ``--repeats`` times (default 3), the sides taking turns, so
that a slow spell of the machine does not fall on one side only; for each side
the fastest run counts (timing noise only ever slows a run down), with every
run's speed kept, and the largest peak memory of its runs. Reported: pixels
per second of the metric calls alone, the peak resident
memory above the process's level once the first image has been read (code
pages the metric's ops bring in count, as they do for a user), and the bytes
the metric keeps as state at the end.

``--device cuda``: each image is moved to the GPU before its metric call, as
the evaluator hands the metric a GPU model's outputs, and a fourth side,
``ours_cpu_first``, moves each sample to the CPU inside the timed call before
the metric reduces it: the alternative to reducing it where it is. Peak GPU
memory (``peak_gpu_mib``) is the allocator's high-water mark above the image.
"""
import argparse
import datetime
import json
import os
import os.path as osp
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import torch

NUM_CLASSES = 19


def _image(index: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and a label that is right with probability = the confidence."""
    g = torch.Generator().manual_seed(index)
    logits = torch.randn(NUM_CLASSES, size, size, generator=g) * 3
    conf, label = torch.softmax(logits, 0).max(0)
    flip = torch.rand(size, size, generator=g) > conf
    other = torch.randint(1, NUM_CLASSES, (int(flip.sum()), ), generator=g)
    label[flip] = (label[flip] + other) % NUM_CLASSES
    return logits, label


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _state_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def write_images(images: int, size: int, data_dir: str) -> None:
    for i in range(images):
        logits, label = _image(i, size)
        torch.save(dict(logits=logits, label=label),
                   osp.join(data_dir, f'{i}.pt'))


def _read(data_dir: str, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.load(osp.join(data_dir, f'{index}.pt'), mmap=True)
    return data['logits'], data['label']


def _to_cpu(sample: dict) -> dict:
    return {k: (dict(data=v['data'].cpu()) if isinstance(v, dict) else v)
            for k, v in sample.items()}


def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def run_side(side: str, images: int, size: int, data_dir: str,
             device: str = 'cpu') -> dict:
    torch.set_num_threads(os.cpu_count() or 1)
    # imports first: the baseline is the process with its libraries and data
    from torchmetrics.classification import (BinaryAUROC,
                                             MulticlassCalibrationError)

    from mmseg_uncert.evaluation import UncertaintyMetric
    # the high-water mark of reading one image is the baseline
    logits, label = _read(data_dir, 0)
    float(logits.sum() + label.sum())
    del logits, label
    base = _peak_mib()
    gpu_base = 0.0
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        gpu_base = (size * size * (NUM_CLASSES * 4 + 8)) / 2**20
    seconds = 0.0
    state = 0
    out = {}
    if side == 'data':  # the harness alone: read and touch every image
        for i in range(images):
            logits, label = _read(data_dir, i)
            start = time.perf_counter()
            float(logits.sum() + label.sum())
            seconds += time.perf_counter() - start
            del logits, label
    elif side in ('ours', 'ours_cpu_first'):
        metric = UncertaintyMetric(scores=['max_prob'])
        for i in range(images):
            logits, label = _read(data_dir, i)
            sample = dict(img_path=f'{i}.pt', seg_logits=dict(data=logits.to(device)),
                          gt_sem_seg=dict(data=label[None].to(device)))
            _sync(device)
            start = time.perf_counter()
            metric.process({}, [_to_cpu(sample) if side == 'ours_cpu_first'
                                else sample])
            _sync(device)
            seconds += time.perf_counter() - start
            del logits, label, sample
        state = _state_bytes(t for part in metric.results for t in part.values())
        state += _state_bytes((metric._latest or {}).values())
        start = time.perf_counter()
        result = metric.evaluate(images)
        seconds += time.perf_counter() - start
        out = dict(ECE=result['ECE'], AUROC=result['auroc/max_prob'])
    else:
        ece = MulticlassCalibrationError(NUM_CLASSES, n_bins=15, norm='l1')
        auroc = BinaryAUROC(thresholds=None)
        ece, auroc = ece.to(device), auroc.to(device)
        for i in range(images):
            logits, label = _read(data_dir, i)
            logits, label = logits.to(device), label.to(device)
            _sync(device)
            start = time.perf_counter()
            prob = torch.softmax(logits, 0).flatten(1).T
            target = label.flatten()
            conf, pred = prob.max(1)
            ece.update(prob, target)
            auroc.update(1 - conf, (pred != target).long())
            _sync(device)
            seconds += time.perf_counter() - start
            del logits, label, prob, target, conf, pred
        state = _state_bytes(
            t for m in (ece, auroc) for name in m._defaults
            for t in (getattr(m, name) if isinstance(getattr(m, name), list)
                      else [getattr(m, name)]))
        start = time.perf_counter()
        out = dict(ECE=ece.compute().item(), AUROC=auroc.compute().item())
        seconds += time.perf_counter() - start
    pixels = images * size * size
    extra = {}
    if device == 'cuda':
        extra['peak_gpu_mib'] = round(torch.cuda.max_memory_allocated() / 2**20
                                      - gpu_base, 1)
    return dict(side=side, device=device, pixels=pixels, seconds=round(seconds, 2),
                pixels_per_second=round(pixels / max(seconds, 1e-9)),
                peak_mib_above_data=round(_peak_mib() - base, 1),
                state_mib=round(state / 2**20, 3), **extra, **out)


def _best(results: list[dict]) -> dict:
    """One side over its repeats: the fastest run's figures (timing noise
    only ever slows a run down), the largest peak memory of all runs, and
    every run's speed."""
    best = dict(max(results, key=lambda r: r['pixels_per_second']))
    for key in ('peak_mib_above_data', 'peak_gpu_mib'):
        if key in best:
            best[key] = max(r[key] for r in results)
    best['pixels_per_second_of_each_run'] = [r['pixels_per_second'] for r in results]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=48)
    parser.add_argument('--size', type=int, default=1024)
    parser.add_argument('--side', choices=['data', 'ours', 'ours_cpu_first',
                                           'torchmetrics'])
    parser.add_argument('--repeats', type=int, default=3,
                        help='runs per side, taking turns; the fastest counts')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'],
                        help='where the images are when the metrics get them')
    parser.add_argument('--data-dir', help='where the images are written '
                        '(default: a temporary folder, removed at the end; '
                        '80 MiB per 1024x1024 image)')
    parser.add_argument('--out', default=osp.join(
        osp.dirname(osp.abspath(__file__)), 'results',
        'uncertainty_metric_vs_torchmetrics.json'))
    args = parser.parse_args()
    if args.side:  # one side, in its own process
        print(json.dumps(run_side(args.side, args.images, args.size,
                                  args.data_dir, args.device)))
        return
    data_dir = args.data_dir or tempfile.mkdtemp(prefix='uncertainty-bench-')
    try:
        os.makedirs(data_dir, exist_ok=True)
        write_images(args.images, args.size, data_dir)
        runs: dict[str, list[dict]] = {}
        sides_run = ['data', 'ours', 'torchmetrics']
        if args.device == 'cuda':
            sides_run.insert(2, 'ours_cpu_first')
        # the sides take turns, so that a slow spell of a shared machine
        # does not fall on one side only
        for _ in range(args.repeats):
            for side in sides_run:
                proc = subprocess.run(
                    [sys.executable, __file__, '--side', side, '--images',
                     str(args.images), '--size', str(args.size), '--data-dir',
                     data_dir, '--device', args.device], capture_output=True,
                    text=True, check=True)
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                runs.setdefault(side, []).append(result)
                print(side, result, flush=True)
        sides = {side: _best(results) for side, results in runs.items()}
    finally:
        if not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    ours, theirs = sides['ours'], sides['torchmetrics']
    result = dict(
        date=datetime.date.today().isoformat(), cores=os.cpu_count(),
        device=args.device, torch=torch.__version__, images=args.images,
        size=args.size, repeats=args.repeats, sides=sides,
        speed_ratio=round(ours['pixels_per_second'] / theirs['pixels_per_second'], 2),
        peak_memory_ratio=round(ours['peak_mib_above_data']
                                / max(theirs['peak_mib_above_data'], 1e-9), 4),
        state_memory_ratio=round(ours['state_mib'] / theirs['state_mib'], 5),
        ece_difference=abs(ours['ECE'] - theirs['ECE']),
        auroc_difference=abs(ours['AUROC'] - theirs['AUROC']))
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)
    print(f"speed (ours / torchmetrics): {result['speed_ratio']}x; peak memory "
          f"ratio: {result['peak_memory_ratio']} (1/"
          f"{1 / max(result['peak_memory_ratio'], 1e-9):.0f}); state memory "
          f"ratio: {result['state_memory_ratio']}; "
          f"|dECE| = {result['ece_difference']:.2e}, "
          f"|dAUROC| = {result['auroc_difference']:.2e}")


if __name__ == '__main__':
    main()
