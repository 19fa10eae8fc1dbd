"""Under torchrun (gloo, 2 processes): each rank feeds PrototypeHook its own
features, for the initial prototypes and then for one per-image update;
rank r writes what it ends with to OUT_r.pt."""
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from mmseg_uncert.engine import PrototypeHook
from mmseg_uncert.models import PrototypeBank, class_feature_sums


def main(out: str) -> None:
    dist.init_process_group('gloo')
    rank = dist.get_rank()
    hook = PrototypeHook(prototype_half_life=1.0)
    hook.bank = PrototypeBank(3, 2, nn.Identity())
    # rank 0 sees classes 0 and 1, rank 1 sees classes 1 and 2
    feature = torch.full((1, 2, 1, 2), float(rank + 1))
    feature[0, 1] *= 10
    label = torch.tensor([[[rank, rank + 1]]])
    sums, counts = class_feature_sums(feature, label, 3)
    hook.initial_update(sums, counts)
    initial = hook.bank.prototypes.clone()
    # one image each, class 0 on 10 pixels of value 3 (rank 0) or 5 (rank 1)
    feature = torch.full((1, 2, 2, 5), 3.0 + 2 * rank)
    label = torch.zeros(1, 2, 5, dtype=torch.long)
    sums, counts = class_feature_sums(feature, label, 3, per_image=True)
    hook.per_image_update(sums, counts)
    torch.save(dict(initial=initial, prototypes=hook.bank.prototypes,
                    initialised=hook.bank.initialised,
                    share=hook.prototype_start_share), f'{out}_{rank}.pt')
    dist.destroy_process_group()


if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main(sys.argv[1])
