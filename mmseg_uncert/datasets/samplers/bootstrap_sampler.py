"""Bootstrap resampling of the training set, for bagged ensemble members."""
from __future__ import annotations

from typing import Iterator, Optional, Sized

import torch
from mmengine.dataset import InfiniteSampler
from mmengine.registry import DATA_SAMPLERS


@DATA_SAMPLERS.register_module()
class BootstrapSampler(InfiniteSampler):
    """An infinite sampler over one bootstrap sample of the dataset (bagging).

    Bagging (Breiman, "Bagging predictors", 1996) trains each ensemble member
    on its own bootstrap sample: N indices drawn uniformly *with replacement*
    from the N images, so a member sees about 1 - 1/e ≈ 63.2 % of the distinct
    images, some of them several times. Deep ensembles usually rely on random
    initialisation alone (Lakshminarayanan et al., NeurIPS 2017, found bagging
    worse); this sampler lets a user measure it on their data
    (``benchmarks/member_diversity.py``).

    The sample is drawn once from ``seed`` (the runner passes
    ``randomness.seed``, which ``tools/train_ensemble.py`` sets to
    ``seed + i`` for member ``i``, so every member gets its own sample). The
    sampler then yields that sample forever, reshuffled every pass when
    ``shuffle``, and split between ranks as :class:`InfiniteSampler` does.

    Args:
        dataset: the training dataset (N = ``len(dataset)``).
        shuffle: reshuffle the sample on every pass.
        seed: seed of the bootstrap draw and of the shuffles; ``None`` picks
            one shared by all ranks.
        ratio: size of the bootstrap sample as a fraction of N (1 is the
            classic bootstrap).
    """

    def __init__(self, dataset: Sized, shuffle: bool = True,
                 seed: Optional[int] = None, ratio: float = 1.0) -> None:
        if not ratio > 0:
            raise ValueError(f'BootstrapSampler: ratio must be > 0, got {ratio}')
        if len(dataset) == 0:
            raise ValueError('BootstrapSampler: the dataset is empty; check the '
                             "train_dataloader's data_root and data_prefix")
        self.ratio = ratio
        super().__init__(dataset, shuffle=shuffle, seed=seed)
        generator = torch.Generator().manual_seed(self.seed)
        count = max(1, round(ratio * self.size))
        #: the bootstrap sample: dataset indices, with repeats
        self.sample = torch.randint(self.size, (count, ), generator=generator).tolist()

    def _infinite_indices(self) -> Iterator[int]:
        # a separate stream for the shuffles, so that the sample itself does
        # not depend on how many passes are made
        generator = torch.Generator().manual_seed(self.seed + 1)
        while True:
            order = (torch.randperm(len(self.sample), generator=generator).tolist()
                     if self.shuffle else range(len(self.sample)))
            yield from (self.sample[i] for i in order)
