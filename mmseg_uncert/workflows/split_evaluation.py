"""Evaluate models image by image on one data split, as the test loop does,
keeping what the test loop does not: seconds per image and the per-pixel
uncertainty maps (to correlate a student's with its teacher's)."""
from __future__ import annotations

import copy
import os.path as osp
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.evaluator import Evaluator
from mmengine.logging import print_log
from torch import Tensor, nn

from ..evaluation.metrics.uncertainty_metric import BUILTIN_SCORES
from ..models.segmentors import mmseg_scope
from ..visualization import plot_metric_curves


@dataclass
class SplitEvaluation:
    """What :func:`evaluate_model` measured.

    Attributes:
        metrics: mmseg's IoUMetric and this package's UncertaintyMetric on
            every pixel, plus ``seconds_per_image`` (the model's ``test_step``
            alone, no data loading or metric).
        scores: the UncertaintyMetric scores evaluated.
        maps: the kept ``pred_uncertainty`` maps, every image's pixels
            flattened one image after the other (float32).
        img_paths: the images, in order.
    """
    metrics: dict[str, float]
    scores: list[str] = field(default_factory=list)
    maps: dict[str, Tensor] = field(default_factory=dict)
    img_paths: list[str] = field(default_factory=list)


def build_split(config: str | Config, data_root: str | None = None,
                split: str | None = None, indices: int | list[int] | None = None,
                corruption: dict | None = None):
    """The test dataset of ``config``; ``data_root`` and ``split`` (Cityscapes
    layout: ``leftImg8bit/<split>``, ``gtFine/<split>``) replace the config's.

    ``indices``: the first N images, or the images at these positions (as
    mmengine's datasets take it). ``corruption``: an ``ImageCorruption``
    transform config (``dict(corruption=..., severity=...)``) put right
    after the pipeline's image loading.
    """
    from mmseg.registry import DATASETS
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    dataset = copy.deepcopy(cfg.test_dataloader.dataset)
    if data_root is not None:
        dataset.data_root = data_root
    if split is not None:
        dataset.data_prefix = dict(img_path=osp.join('leftImg8bit', split),
                                   seg_map_path=osp.join('gtFine', split))
    if indices is not None:
        dataset.indices = indices
    if corruption is not None:
        steps = [step.get('type') for step in dataset.pipeline]
        if 'LoadImageFromFile' not in steps:
            raise ValueError(f'the test pipeline {steps} has no LoadImageFromFile to '
                             f'corrupt the image after')
        dataset.pipeline.insert(steps.index('LoadImageFromFile') + 1,
                                dict(type='ImageCorruption', **corruption))
    with mmseg_scope():
        return DATASETS.build(dataset)


def evaluate_model(model: nn.Module, dataset, scores: list[str] | None = None,
                   limit: int | None = None, output_dir: str | None = None,
                   keep_maps: tuple[str, ...] = (), log_interval: int = 0,
                   name: str = 'model') -> SplitEvaluation:
    """mIoU and uncertainty metrics of ``model`` on ``dataset``.

    Args:
        model: a segmentor in eval mode.
        dataset: a test dataset (its pipeline loads the annotations).
        scores: UncertaintyMetric scores; default: max_prob, entropy and
            every ``pred_uncertainty`` map of the model's first output.
        limit: the first ``limit`` images only (default all).
        output_dir: where UncertaintyMetric writes the reliability diagram
            and risk–coverage curves (JSON), drawn beside them (PNG).
        keep_maps: ``pred_uncertainty`` maps to keep per pixel; those the
            model does not give are left out of ``maps``.
        log_interval: log progress every this many images (0: never).
        name: the model in the progress log.
    """
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise ValueError(f'the data set has no image (data root '
                         f'{getattr(dataset, "data_root", "?")})')
    evaluator, keep = None, ()
    seconds = 0.0
    kept: dict[str, list[Tensor]] = {}
    img_paths = []
    for i in range(n):
        batch = pseudo_collate([dataset[i]])
        start = time.perf_counter()
        with torch.no_grad():
            outputs = model.test_step(batch)
        seconds += time.perf_counter() - start
        maps = outputs[0].get('pred_uncertainty')
        if evaluator is None:
            # the scores follow from what the model gives (known once it ran)
            available = sorted(maps.keys()) if maps is not None else []
            scores = list(scores or [*BUILTIN_SCORES, *available])
            keep = tuple(k for k in keep_maps if k in available)
            kept = {k: [] for k in keep}
            with mmseg_scope():
                evaluator = Evaluator([
                    dict(type='IoUMetric', iou_metrics=['mIoU']),
                    dict(type='UncertaintyMetric', scores=scores,
                         output_dir=output_dir)])
            evaluator.dataset_meta = dataset.metainfo
        for kept_name in keep:
            kept[kept_name].append(maps.get(kept_name).flatten().float())
        img_paths.append(outputs[0].img_path)
        evaluator.process(data_samples=outputs, data_batch=batch)
        if log_interval and ((i + 1) % log_interval == 0 or i + 1 == n):
            print_log(f'{name}: {i + 1}/{n} images, {seconds / (i + 1):.3f} s '
                      f'per image (forward pass)', logger='current')
    # plain floats (IoUMetric gives numpy scalars), ready for JSON
    metrics = {k: float(v) for k, v in evaluator.evaluate(n).items()}
    if output_dir:
        plot_metric_curves(output_dir)
    metrics['seconds_per_image'] = seconds / n
    metrics['images'] = n
    return SplitEvaluation(metrics=metrics, scores=scores,
                           maps={k: torch.cat(v) for k, v in kept.items()},
                           img_paths=img_paths)


def time_test_steps(models: dict[str, nn.Module], dataset, images: int = 20,
                    rounds: int = 3, clock=time.perf_counter) -> dict[str, float]:
    """Seconds per image of each model's ``test_step`` on the first
    ``images`` images of ``dataset``: the median over ``rounds`` rounds, the
    models taking turns within each round.

    A model timed once, minutes apart from the next, carries whatever else
    the machine did in those minutes; taking turns exposes every model to
    the same conditions, and the median drops the odd disturbed round.
    """
    if images < 1 or rounds < 1:
        raise ValueError(f'images ({images}) and rounds ({rounds}) must be >= 1')
    batches = [pseudo_collate([dataset[i]]) for i in range(min(images, len(dataset)))]
    if not batches:
        raise ValueError('time_test_steps: the data set has no image')
    per_round: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for _ in range(rounds):
            for name, model in models.items():
                start = clock()
                for batch in batches:
                    model.test_step(batch)
                per_round[name].append((clock() - start) / len(batches))
    return {name: float(np.median(values)) for name, values in per_round.items()}


def _ranks(x: Tensor) -> Tensor:
    """Average ranks (ties share the mean of their ranks), as Spearman's
    coefficient needs."""
    _, inverse, counts = torch.unique(x, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() + 1) / 2  # 0-based mean rank of a tie
    return mean_rank[inverse]


def map_correlations(ours: Tensor, reference: Tensor) -> dict[str, float]:
    """Pearson and Spearman correlation of two per-pixel maps (same pixels,
    same order): how well a student's uncertainty follows its teacher's; and
    the fraction of ``ours`` below 0.01 (a collapsed uncertainty head
    predicts about 0 everywhere)."""
    if ours.shape != reference.shape:
        raise ValueError(f'the maps differ in size ({ours.numel()} vs '
                         f'{reference.numel()} pixels): evaluate both on the '
                         f'same images')
    a, b = ours.double(), reference.double()
    pearson = torch.corrcoef(torch.stack([a, b]))[0, 1]
    spearman = torch.corrcoef(torch.stack([_ranks(a), _ranks(b)]))[0, 1]
    return dict(pearson=pearson.item(), spearman=spearman.item(),
                fraction_below_0_01=(ours < 0.01).double().mean().item())


def save_maps(path: str, evaluation: SplitEvaluation) -> None:
    """The kept maps (float16, to halve the file) with their images' paths."""
    np.savez(path, img_paths=np.array(evaluation.img_paths),
             **{name: m.half().numpy() for name, m in evaluation.maps.items()})


def load_maps(path: str, name: str, img_paths: list[str]) -> Tensor:
    """Map ``name`` saved by :func:`save_maps`, checked to be of the same
    images in the same order."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'reference maps {path} do not exist; write '
                                f'them with --save-maps')
    with np.load(path) as saved:
        if name not in saved.files:
            raise KeyError(f'{path} holds no {name!r} map (it holds '
                           f'{[f for f in saved.files if f != "img_paths"]})')
        theirs = [str(p) for p in saved['img_paths']]
        if theirs != list(img_paths):
            raise ValueError(f'{path} was saved for other images ({len(theirs)} '
                             f'images from {theirs[:1]}) than these '
                             f'({len(img_paths)} from {img_paths[:1]})')
        return torch.from_numpy(saved[name].astype(np.float32))
