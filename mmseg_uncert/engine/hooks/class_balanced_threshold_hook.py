"""CBST's class-balanced confidence thresholds for ProDASegmentor's plain
self-training."""
from __future__ import annotations

from typing import Any

import torch
from mmengine import dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import Tensor

from mmseg.registry import HOOKS

from ...models.data_preprocessors import image_mask
from .prototype_hook import preserved_rng, target_batches

_KEY = 'class_balanced_thresholds'


def class_confidence_histograms(prob: Tensor, valid: Tensor, bins: int) -> Tensor:
    """Per class k, a histogram over [0, 1] (``bins`` equal bins) of the
    confidence max_j p_j of the pixels whose argmax is k: (K, bins), float64.

    Args:
        prob: (B, K, H, W) probabilities.
        valid: (B, H, W) bool, the pixels to count.
    """
    confidence, label = prob.detach().max(1)
    confidence, label = confidence[valid].double(), label[valid]
    # the top bin is closed: a confidence of exactly 1 falls into it
    index = (confidence * bins).long().clamp_(0, bins - 1)
    flat = label * bins + index
    k = prob.shape[1]
    return torch.bincount(flat, minlength=k * bins).double().reshape(k, bins)


def class_balanced_thresholds(histograms: Tensor, portion: float) -> Tensor:
    """CBST's λ_k (Zou et al., "Unsupervised Domain Adaptation for Semantic
    Segmentation via Class-Balanced Self-Training", ECCV 2018): the
    confidence at rank ⌈p·N_k⌉ from the top among the N_k pixels predicted
    as k, so the portion p of each class's pixels reaches its threshold,
    to the histograms' resolution (the lower edge of the bin holding that
    rank). A class no pixel was predicted as gets +inf: no pseudo-label of
    it is ever kept.

    Args:
        histograms: (K, bins) from :func:`class_confidence_histograms`.
        portion: p in (0, 1].
    """
    bins = histograms.shape[1]
    counts = histograms.sum(1)
    # pixels at or above each bin's lower edge, from the top bin down
    above = histograms.flip(1).cumsum(1).flip(1)
    rank = torch.ceil(portion * counts).clamp_min(1)
    # the highest bin whose count from the top reaches the rank
    reaches = above >= rank[:, None]
    highest = bins - 1 - reaches.flip(1).float().argmax(1)
    thresholds = highest.double() / bins
    return torch.where(counts > 0, thresholds, torch.full_like(thresholds, float('inf')))


@HOOKS.register_module()
class ClassBalancedThresholdHook(Hook):
    """Before training, the class-balanced thresholds λ_k of
    :class:`~mmseg_uncert.models.segmentors.ProDASegmentor`'s
    ``class_balanced_portion`` (CBST) from its frozen pseudo-labeller's
    predictions on ``init_batches`` target batches (the same fixed random
    subset :class:`~mmseg_uncert.engine.PrototypeHook` reads). The
    pseudo-labeller never trains, so one pass gives the thresholds of the
    whole stage. The histograms are summed over ranks, so every process
    holds the same λ; they are saved in the checkpoint (key
    ``class_balanced_thresholds``) and restored on resume.

    Args:
        init_batches: target batches to read.
        bins: histogram bins over [0, 1]; λ_k is exact to 1 / ``bins``.
    """

    priority = 'NORMAL'

    def __init__(self, init_batches: int = 50, bins: int = 10000) -> None:
        if init_batches < 1:
            raise ValueError(f'ClassBalancedThresholdHook: init_batches must be >= 1, '
                             f'got {init_batches}')
        if bins < 2:
            raise ValueError(f'ClassBalancedThresholdHook: bins must be >= 2, got {bins}')
        self.init_batches, self.bins = init_batches, bins
        self._resumed: Tensor | None = None

    @staticmethod
    def _segmentor(runner) -> Any:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if getattr(model, 'class_balanced_portion', None) is None:
            raise TypeError(
                f'ClassBalancedThresholdHook needs a ProDASegmentor with '
                f'model.class_balanced_portion set, not {type(model).__name__}'
                + (' without it' if hasattr(model, 'class_balanced_portion') else ''))
        return model

    def before_train(self, runner) -> None:
        model = self._segmentor(runner)
        if self._resumed is not None:
            model.class_thresholds.copy_(self._resumed)
            self._resumed = None
            return
        with preserved_rng():
            thresholds = self.compute(runner, model)
        model.class_thresholds.copy_(thresholds)
        kept = torch.isfinite(thresholds)
        runner.logger.info(
            f'ClassBalancedThresholdHook: portion {model.class_balanced_portion}, '
            f'thresholds of {int(kept.sum())} classes (the others are never '
            f'predicted on the target): '
            + ', '.join(f'{k}: {float(t):.3f}' for k, t in enumerate(thresholds)
                        if torch.isfinite(t)))

    @torch.no_grad()
    def compute(self, runner, model) -> Tensor:
        """λ from the pseudo-labeller's weak-view predictions."""
        histograms = None
        for batch in target_batches(runner, model, self.init_batches,
                                    'ClassBalancedThresholdHook'):
            metas = [s.metainfo for s in batch['data_samples']]
            inputs = batch['inputs']
            prob = model.pseudo_label_probabilities(inputs, metas)
            valid = image_mask(metas, inputs.shape[2:], inputs.device)
            h = class_confidence_histograms(prob, valid, self.bins)
            histograms = h if histograms is None else histograms + h
        if dist.get_world_size() > 1:
            dist.all_reduce(histograms, op='sum')
        return class_balanced_thresholds(histograms, model.class_balanced_portion).to(
            model.class_thresholds)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        model = self._segmentor(runner)
        checkpoint[_KEY] = model.class_thresholds.detach().cpu()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # resume comes before before_train
        if _KEY in checkpoint:
            self._resumed = checkpoint[_KEY]
