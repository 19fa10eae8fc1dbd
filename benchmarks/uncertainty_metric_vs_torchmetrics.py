"""UncertaintyMetric vs torchmetrics on the same pixels: speed and memory.

    python benchmarks/uncertainty_metric_vs_torchmetrics.py            # 48 x 1024x1024 = 50.3 M pixels
    python benchmarks/uncertainty_metric_vs_torchmetrics.py --images 4 # quick look

torchmetrics side: ``MulticlassCalibrationError`` (ECE, 15 bins) and
``BinaryAUROC`` (exact, ``thresholds=None``) of the wrong-pixel detection by
1 - max probability. Our side: ``UncertaintyMetric(scores=['max_prob'])``,
which computes those and more (MCE, class-wise and adaptive ECE, NLL, Brier,
AUPR, FPR95, AURC, E-AURC, pixel and patch PAvPU). Each side runs in its own
process on the same seeded logits (19 classes), generated image by image.
Reported: pixels per second of the metric calls alone, the peak resident
memory above the process's level once the first image exists, and the bytes
the metric keeps as state at the end.
"""
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


def run_side(side: str, images: int, size: int) -> dict:
    torch.set_num_threads(os.cpu_count() or 1)
    # imports first: the baseline is the process with its libraries and data
    from torchmetrics.classification import (BinaryAUROC,
                                             MulticlassCalibrationError)

    from mmseg_uncert.evaluation import UncertaintyMetric
    # the high-water mark of making and holding one image is the baseline
    first = _image(0, size)
    del first
    base = _peak_mib()
    seconds = 0.0
    if side == 'ours':
        metric = UncertaintyMetric(scores=['max_prob'])
        for i in range(images):
            logits, label = _image(i, size)
            sample = dict(img_path=f'{i}.png', seg_logits=dict(data=logits),
                          gt_sem_seg=dict(data=label[None]))
            start = time.perf_counter()
            metric.process({}, [sample])
            seconds += time.perf_counter() - start
            del logits, label, sample
        state = _state_bytes(t for part in metric.results for t in part.values())
        state += _state_bytes(metric._pending.values())
        start = time.perf_counter()
        result = metric.evaluate(images)
        seconds += time.perf_counter() - start
        out = dict(ECE=result['ECE'], AUROC=result['auroc/max_prob'])
    else:
        ece = MulticlassCalibrationError(NUM_CLASSES, n_bins=15, norm='l1')
        auroc = BinaryAUROC(thresholds=None)
        for i in range(images):
            logits, label = _image(i, size)
            start = time.perf_counter()
            prob = torch.softmax(logits, 0).flatten(1).T
            target = label.flatten()
            conf, pred = prob.max(1)
            ece.update(prob, target)
            auroc.update(1 - conf, (pred != target).long())
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
    return dict(side=side, pixels=pixels, seconds=round(seconds, 2),
                pixels_per_second=round(pixels / seconds),
                peak_mib_above_data=round(_peak_mib() - base, 1),
                state_mib=round(state / 2**20, 3), **out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=48)
    parser.add_argument('--size', type=int, default=1024)
    parser.add_argument('--side', choices=['ours', 'torchmetrics'])
    parser.add_argument('--mmap-threshold', type=int, default=None,
                        help='glibc MALLOC_MMAP_THRESHOLD_ for both sides '
                        '(default: the allocator as users run it)')
    parser.add_argument('--out', default=osp.join(
        osp.dirname(osp.abspath(__file__)), 'results',
        'uncertainty_metric_vs_torchmetrics.json'))
    args = parser.parse_args()
    if args.side:  # one side, in its own process
        print(json.dumps(run_side(args.side, args.images, args.size)))
        return
    # Optionally both sides run with glibc's mmap threshold fixed: by default
    # glibc raises it after large frees and keeps freed buffers in its heaps,
    # so resident memory partly measures the allocator's cache (fixing it
    # trades that memory for mmap calls, i.e. speed).
    env = dict(os.environ)
    if args.mmap_threshold:
        env['MALLOC_MMAP_THRESHOLD_'] = str(args.mmap_threshold)
    sides = {}
    for side in ('ours', 'torchmetrics'):
        proc = subprocess.run(
            [sys.executable, __file__, '--side', side, '--images',
             str(args.images), '--size', str(args.size)],
            capture_output=True, text=True, check=True, env=env)
        sides[side] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(side, sides[side], flush=True)
    ours, theirs = sides['ours'], sides['torchmetrics']
    result = dict(
        date=datetime.date.today().isoformat(), cores=os.cpu_count(),
        malloc_mmap_threshold=args.mmap_threshold,
        images=args.images, size=args.size, sides=sides,
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
          f"ratio: {result['peak_memory_ratio']}; state memory ratio: "
          f"{result['state_memory_ratio']}; |dECE| = {result['ece_difference']:.2e}, "
          f"|dAUROC| = {result['auroc_difference']:.2e}")


if __name__ == '__main__':
    main()
