"""A Runner that also trains multi-process on CPU."""
from __future__ import annotations

import copy
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.logging import print_log
from mmengine.runner import Runner
from torch import nn

from mmseg.registry import RUNNERS

from ..compat import setup_cpu_distributed
from .cpu_memory import keep_freed_memory


@RUNNERS.register_module()
class CompatRunner(Runner):
    """mmengine's :class:`~mmengine.runner.Runner` plus a CPU ``pytorch`` launcher.

    Select it with ``runner_type = 'CompatRunner'`` (mmseg's ``tools/train.py``
    and ``mim train`` honour the key). Under ``torchrun`` without a GPU it
    starts a gloo process group and wraps the model in DDP without device ids;
    without a GPU it also keeps freed memory in the process
    (:func:`~.cpu_memory.keep_freed_memory`: steps up to twice as fast).
    Under a launcher, a model with no parameter to train (an
    ``EnsembleSegmentor`` that streams its members holds none) is not
    wrapped: PyTorch's DDP refuses such a module, and testing needs no
    gradients to synchronise. Otherwise, on GPUs, it is exactly mmengine's
    Runner.
    """

    @classmethod
    def from_cfg(cls, cfg: Config) -> Runner:
        cfg = copy.deepcopy(cfg)
        setup_cpu_distributed(cfg)
        if not torch.cuda.is_available() and keep_freed_memory():
            print_log('CPU run: freed memory is kept in the process (glibc mallopt), '
                      'so steps do not fault it in again', logger='current')
        return super().from_cfg(cfg)

    def wrap_model(self, model_wrapper_cfg: dict | None, model: nn.Module) -> nn.Module:
        if self.distributed and not any(p.requires_grad for p in model.parameters()):
            print_log(f'{type(model).__name__} has no parameter to train: each '
                      f'process runs it unwrapped (no DistributedDataParallel)',
                      logger='current')
            return model.to(get_device())
        return super().wrap_model(model_wrapper_cfg, model)


def build_runner(cfg: Config) -> Runner:
    """Build the runner a config asks for (``runner_type``), CPU-DDP ready.

    What this package's ``tools/train.py`` and ``tools/test.py`` use; configs
    without ``runner_type`` get mmengine's Runner as in mmseg's tools.
    """
    setup_cpu_distributed(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def load_run_config(path: str, launcher: str = 'none',
                    cfg_options: dict | None = None,
                    work_dir: str | None = None) -> Config:
    """Load a config as the tools do: launcher, ``--cfg-options``, work_dir.

    work_dir priority: the argument, then the config's, then
    ``./work_dirs/<config name>``.
    """
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(path))[0])
    return cfg
