"""Keeps ProDA's class prototypes and momentum network up to date."""
from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numpy as np

import torch
from mmengine import dist
from mmengine.dataset import pseudo_collate
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmseg.registry import HOOKS

from ...models.data_preprocessors import image_mask
from ...models.prototypes import PrototypeBank, class_feature_sums, ema_prototypes
from ...models.segmentors.proda_segmentor import network_features

_KEY = 'prototype_hook'


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global random states on exit."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def target_subset(length: int, count: int) -> list[int]:
    """This rank's share of a fixed random subset of ``count`` target
    indices (the same on every run, split over ranks)."""
    order = torch.randperm(length, generator=torch.Generator().manual_seed(0))
    rank, world = dist.get_rank(), dist.get_world_size()
    return order[rank::world][:count].tolist()


def target_batches(runner, model, batches: int, owner: str) -> Iterator[dict]:
    """Preprocessed batches (of the train loader's size) of the fixed target
    subset of :func:`target_subset`, read from the target dataset itself so
    that the train loader's batches stay unchanged."""
    dataset = getattr(runner.train_dataloader.dataset, 'target', None)
    if dataset is None:
        raise TypeError(f'{owner}: the train dataloader must give source/target '
                        f'batches (dataset type SourceTargetDataset)')
    batch_size = runner.train_dataloader.batch_size or 1
    order = target_subset(len(dataset), batches * batch_size)
    for start in range(0, len(order), batch_size):
        data = pseudo_collate([dataset[i] for i in order[start:start + batch_size]])
        yield model.data_preprocessor(data, True)


def rate_of_half_life(half_life: float) -> float:
    """The per-update factor r with r^half_life = 1/2."""
    return 0.5 ** (1.0 / half_life)


@HOOKS.register_module()
class PrototypeHook(Hook):
    """Class prototypes η_k as an exponential moving average of class-wise
    feature means of a momentum network, for
    :class:`~mmseg_uncert.models.segmentors.ProDASegmentor` (Zhang et al.,
    CVPR 2021):

    * before training, the momentum network is a copy of the model (the
      warm-up weights, loaded by ``load_from``) and the prototypes are the
      class-wise feature means over ``init_batches`` target batches,
      labelled by that network's own prediction;
    * after every optimizer step, θ̃ ← m·θ̃ + (1 − m)·θ, then for each
      image of the step and each class it predicts on at least
      ``min_pixels`` feature pixels, η_k ← λ·η_k + (1 − λ)·η'_k with η'_k
      the mean momentum feature of those pixels (ProDA's update: per image
      and class, classes under 10 pixels skipped).

    The rates are given as half-lives in iterations, so that they can be
    set relative to the schedule: m = 2^(−1/``momentum_half_life``), and
    λ = 2^(−1/(``prototype_half_life``·n)) for n images per iteration (all
    ranks), so that a class present in every image keeps half of its
    initial prototype after ``prototype_half_life`` iterations. ProDA's
    m = 0.999 is a half-life of 693 iterations, its λ = 1 − 10⁻⁴ per image
    at 4 images per iteration one of 1733 (its schedule: tens of thousands
    of iterations). The defaults are ProDA's; a run shorter than two
    half-lives is warned about.

    How far they moved is logged every iteration: ``momentum_start_share``
    (m^t, the share of the starting weights left in the momentum network),
    ``prototype_start_share`` (the mean over classes of λ^(updates of the
    class)) and ``prototype_drift`` (the mean over classes of
    ‖η_k − η_k⁰‖ / ‖η_k⁰‖, η⁰ the initial prototypes).

    With several processes, initial sums are summed over ranks and per-image
    sums gathered in rank order, so every process holds the same
    prototypes. The prototypes, which exist, the momentum network and the
    movement statistics are saved in the checkpoint (key
    ``prototype_hook``) and restored on resume, so a resumed run continues
    as if uninterrupted.

    Args:
        momentum_half_life: the momentum network's half-life, iterations.
        prototype_half_life: the prototypes' half-life, iterations.
        min_pixels: fewest feature pixels of a class in an image to update it.
        init_batches: target batches that initialise the prototypes.
    """

    priority = 'NORMAL'

    def __init__(self, momentum_half_life: float = 693.0,
                 prototype_half_life: float = 1733.0, min_pixels: int = 10,
                 init_batches: int = 50) -> None:
        for name, value in (('momentum_half_life', momentum_half_life),
                            ('prototype_half_life', prototype_half_life)):
            if not value > 0:
                raise ValueError(f'PrototypeHook: {name} must be > 0 iterations, '
                                 f'got {value}')
        if init_batches < 1:
            raise ValueError(f'PrototypeHook: init_batches must be >= 1, got {init_batches}')
        if min_pixels < 1:
            raise ValueError(f'PrototypeHook: min_pixels must be >= 1, '
                             f'got {min_pixels}')
        self.momentum_half_life = float(momentum_half_life)
        self.prototype_half_life = float(prototype_half_life)
        self.momentum = rate_of_half_life(self.momentum_half_life)
        self.min_pixels, self.init_batches = min_pixels, init_batches
        self.bank: PrototypeBank | None = None
        self._resumed: dict[str, Any] | None = None
        #: m^t, and per class the product of its λ: what is left of the start
        self.momentum_start_share = 1.0
        self.prototype_start_share: torch.Tensor | None = None
        self.initial_prototypes: torch.Tensor | None = None

    @staticmethod
    def _segmentor(runner) -> Any:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'prototype_bank') or not hasattr(model, 'network'):
            raise TypeError(f'PrototypeHook works with ProDASegmentor, not '
                            f'{type(model).__name__}')
        return model

    def before_train(self, runner) -> None:
        model = self._segmentor(runner)
        self.bank = model.prototype_bank
        if self.bank is None:
            runner.logger.info('PrototypeHook: the model neither rectifies nor '
                               'learns structure; there are no prototypes to keep')
            return
        # the momentum network starts from the weights load_from just loaded
        self.bank.restart(model.network(), self.momentum)
        if self._resumed is not None:
            self.load_state(self._resumed)
            self._resumed = None
        else:
            # reading the target images must not move the training's random
            # streams (augmentations), or a resumed run, which skips this,
            # would draw different ones
            with preserved_rng():
                self.initialise(runner, model)
        iterations = getattr(runner, 'max_iters', None)
        for name, half_life in (('momentum network', self.momentum_half_life),
                                ('prototypes', self.prototype_half_life)):
            if iterations is not None and iterations < 2 * half_life:
                runner.logger.warning(
                    f'PrototypeHook: the {name} move {iterations / half_life:.2f} '
                    f'half-lives in this run of {iterations} iterations (half-life '
                    f'{half_life:g}); set a half-life of at most {iterations / 2:g} '
                    f'for them to leave their start behind')

    @torch.no_grad()
    def initialise(self, runner, model) -> None:
        """Prototypes from ``init_batches`` batches of the target dataset
        (a fixed random subset, split over ranks)."""
        world = dist.get_world_size()
        bank = self.bank
        sums = bank.prototypes.new_zeros(bank.prototypes.shape, dtype=torch.float64)
        counts = bank.prototypes.new_zeros(bank.num_classes, dtype=torch.float64)
        network = bank.momentum_network.module
        images = 0
        for batch in target_batches(runner, model, self.init_batches, 'PrototypeHook'):
            images += len(batch['data_samples'])
            logits, feature = network_features(network, batch['inputs'])
            valid = image_mask([s.metainfo for s in batch['data_samples']],
                               feature.shape[2:], feature.device,
                               batch['inputs'].shape[2:])
            s, c = class_feature_sums(feature, logits.argmax(1), bank.num_classes, valid)
            sums += s
            counts += c
        self.initial_update(sums, counts)
        runner.logger.info(f'PrototypeHook: {int(bank.initialised.sum())} of '
                           f'{bank.num_classes} class prototypes initialised from '
                           f'{images} target images'
                           + (f' on each of {world} processes' if world > 1 else ''))

    def initial_update(self, sums: torch.Tensor, counts: torch.Tensor) -> None:
        """Each class's prototype: its mean over every rank's pixels."""
        if dist.get_world_size() > 1:
            dist.all_reduce(sums, op='sum')
            dist.all_reduce(counts, op='sum')
        bank = self.bank
        ema_prototypes(bank.prototypes, bank.initialised, sums, counts, decay=0.0)
        self.initial_prototypes = bank.prototypes.detach().clone()
        self.prototype_start_share = torch.ones(bank.num_classes, dtype=torch.float64)
        self.momentum_start_share = 1.0

    def per_image_update(self, sums: torch.Tensor, counts: torch.Tensor) -> None:
        """ProDA's update from per-image sums (B, K, F) and counts (B, K) of
        this rank, gathered over ranks in rank order."""
        if dist.get_world_size() > 1:
            sums = torch.cat(dist.all_gather(sums))
            counts = torch.cat(dist.all_gather(counts))
        bank = self.bank
        decay = rate_of_half_life(self.prototype_half_life * sums.shape[0])
        updates = ema_prototypes(bank.prototypes, bank.initialised, sums, counts,
                                 decay, self.min_pixels)
        self.prototype_start_share *= decay ** updates.cpu()

    def movement(self) -> dict[str, float]:
        """How far the momentum network and the prototypes have left their
        start (see the class docstring)."""
        initial = self.initial_prototypes.cpu()
        # classes with a nonzero starting prototype: a drift relative to it
        known = self.bank.initialised.cpu() & (initial.norm(dim=1) > 0)
        if not known.any():
            return dict(momentum_start_share=self.momentum_start_share,
                        prototype_start_share=1.0, prototype_drift=0.0)
        start, now = initial[known], self.bank.prototypes.cpu()[known]
        drift = (now - start).norm(dim=1) / start.norm(dim=1)
        share = self.prototype_start_share[known]
        return dict(momentum_start_share=self.momentum_start_share,
                    prototype_start_share=float(share.mean()),
                    prototype_drift=float(drift.mean()))

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        """After the optimizer step: momentum network, then prototypes."""
        model = self._segmentor(runner)
        bank = self.bank
        if bank is None:
            return
        bank.momentum_network.update_parameters(model.network())
        self.momentum_start_share *= self.momentum
        pending, bank.pending = bank.pending, None
        if pending is None:
            raise RuntimeError('PrototypeHook: the model produced no target '
                               'features this iteration (train on '
                               'SourceTargetDataset batches)')
        feature, label, valid = pending
        sums, counts = class_feature_sums(feature, label, bank.num_classes, valid,
                                          per_image=True)
        self.per_image_update(sums, counts)
        for key, value in self.movement().items():
            runner.message_hub.update_scalar(f'train/{key}', value)

    def state(self) -> dict[str, Any]:
        bank = self.bank
        return dict(prototypes=bank.prototypes.cpu(), initialised=bank.initialised.cpu(),
                    momentum_network=bank.momentum_network.state_dict(),
                    initial_prototypes=self.initial_prototypes.cpu(),
                    prototype_start_share=self.prototype_start_share.clone(),
                    momentum_start_share=self.momentum_start_share)

    def load_state(self, state: dict[str, Any]) -> None:
        bank = self.bank
        if state['prototypes'].shape != bank.prototypes.shape:
            raise ValueError(
                f"PrototypeHook: the checkpoint's prototypes are "
                f"{tuple(state['prototypes'].shape)} (classes x feature channels), "
                f'the model needs {tuple(bank.prototypes.shape)}')
        bank.prototypes.copy_(state['prototypes'])
        bank.initialised.copy_(state['initialised'])
        bank.momentum_network.load_state_dict(state['momentum_network'])
        self.initial_prototypes = state['initial_prototypes'].to(bank.prototypes)
        self.prototype_start_share = state['prototype_start_share'].clone()
        self.momentum_start_share = float(state['momentum_start_share'])

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.bank is not None:
            checkpoint[_KEY] = self.state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # resume comes before before_train, which restarts the bank
        if _KEY in checkpoint:
            self._resumed = checkpoint[_KEY]
