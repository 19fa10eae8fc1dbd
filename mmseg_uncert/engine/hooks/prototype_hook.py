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
    * after every optimizer step, θ̃ ← m·θ̃ + (1 − m)·θ (m = ``momentum``,
      0.999), then η_k ← λ·η_k + (1 − λ)·η'_k (λ = ``decay``, 0.9999) with
      η'_k the mean momentum feature of the target pixels it predicts as k
      in this step; classes absent from the step keep their prototype.

    Feature sums and counts are summed over all ranks before the update, so
    every process holds the same prototypes. The prototypes, which exist,
    and the momentum network are saved in the checkpoint (key
    ``prototype_hook``) and restored on resume, so a resumed run continues
    as if uninterrupted.

    Args:
        decay: λ.
        momentum: m.
        init_batches: target batches that initialise the prototypes.
    """

    priority = 'NORMAL'

    def __init__(self, decay: float = 0.9999, momentum: float = 0.999,
                 init_batches: int = 50) -> None:
        for name, value in (('decay', decay), ('momentum', momentum)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f'PrototypeHook: {name} must lie in [0, 1), got {value}')
        if init_batches < 1:
            raise ValueError(f'PrototypeHook: init_batches must be >= 1, got {init_batches}')
        self.decay, self.momentum, self.init_batches = decay, momentum, init_batches
        self.bank: PrototypeBank | None = None
        self._resumed: dict[str, Any] | None = None

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
            logits, feature = model.network_features(network, batch['inputs'])
            valid = image_mask([s.metainfo for s in batch['data_samples']],
                               feature.shape[2:], feature.device,
                               batch['inputs'].shape[2:])
            s, c = class_feature_sums(feature, logits.argmax(1), bank.num_classes, valid)
            sums += s
            counts += c
        self._reduce_and_update(sums, counts, decay=0.0)
        runner.logger.info(f'PrototypeHook: {int(bank.initialised.sum())} of '
                           f'{bank.num_classes} class prototypes initialised from '
                           f'{images} target images'
                           + (f' on each of {world} processes' if world > 1 else ''))

    def _reduce_and_update(self, sums: torch.Tensor, counts: torch.Tensor,
                           decay: float) -> None:
        if dist.get_world_size() > 1:
            dist.all_reduce(sums, op='sum')
            dist.all_reduce(counts, op='sum')
        # λ = 0 at initialisation: each present class takes its plain mean
        ema_prototypes(self.bank.prototypes, self.bank.initialised, sums, counts, decay)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        """After the optimizer step: momentum network, then prototypes."""
        model = self._segmentor(runner)
        bank = self.bank
        if bank is None:
            return
        bank.momentum_network.update_parameters(model.network())
        pending, bank.pending = bank.pending, None
        if pending is None:
            raise RuntimeError('PrototypeHook: the model produced no target '
                               'features this iteration (train on '
                               'SourceTargetDataset batches)')
        feature, label, valid = pending
        sums, counts = class_feature_sums(feature, label, bank.num_classes, valid)
        self._reduce_and_update(sums, counts, self.decay)

    def state(self) -> dict[str, Any]:
        bank = self.bank
        return dict(prototypes=bank.prototypes.cpu(), initialised=bank.initialised.cpu(),
                    momentum_network=bank.momentum_network.state_dict())

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

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.bank is not None:
            checkpoint[_KEY] = self.state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # resume comes before before_train, which restarts the bank
        if _KEY in checkpoint:
            self._resumed = checkpoint[_KEY]
