"""A test-only hook: each rank writes what it saw, to compare across ranks."""
import json
import os.path as osp

import torch
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmseg.registry import HOOKS


def _checksum(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


@HOOKS.register_module()
class RankProbeHook(Hook):
    """Write the rank, world size, DDP wrapping and a parameter checksum."""

    def before_train(self, runner) -> None:
        self.initial = _checksum(runner.model)

    def after_train(self, runner) -> None:
        rank, world_size = get_dist_info()
        info = dict(rank=rank, world_size=world_size,
                    wrapped=is_model_wrapper(runner.model),
                    backend=(torch.distributed.get_backend()
                             if torch.distributed.is_initialized() else None),
                    initial=self.initial, final=_checksum(runner.model),
                    iters=runner.iter)
        with open(osp.join(runner.work_dir, f'rank{rank}.json'), 'w') as f:
            json.dump(info, f)
